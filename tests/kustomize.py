"""A small kustomize, enough to render deploy/kubernetes without kubectl.

It does what ``kubectl kustomize`` does with the features those
kustomizations use, and refuses the rest (:class:`Unsupported`) rather than
guess:

- ``resources``: YAML files (several documents each) and directories holding
  a kustomization.yaml, rendered first;
- ``patches`` given by ``path``: strategic-merge patches of one object,
  found by its apiVersion, kind and name. A mapping merges key by key, ``null``
  deletes a key, ``$patch: delete`` at the top deletes the object; the lists
  of containers, init containers, env and volumes merge by ``name``; any
  other list in a patch is refused (strategic merge would merge some of them
  by keys this module does not know);
- ``namespace``: set on every object but the cluster-scoped kinds listed
  here (kustomize takes an unknown kind, such as KEDA's, as namespaced);
- ``images``: ``name`` → ``newName`` and/or ``newTag``, in every container
  and init container.

Where kubectl is installed, tests/test_kubernetes.py compares its output
with ``kubectl kustomize``'s, object by object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["Unsupported", "object_id", "render"]

Obj = dict[str, Any]

_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
_CLUSTER_SCOPED = {
    "Namespace",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
}
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name"}


class Unsupported(Exception):
    """A kustomization or patch uses something this renderer does not do."""


def object_id(obj: Obj) -> tuple[str, str, str]:
    """kind, namespace and name: what kustomize tells objects apart by."""
    metadata = obj.get("metadata") or {}
    return obj["kind"], metadata.get("namespace", ""), metadata["name"]


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` prints (in no particular order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _FIELDS
    if unknown:
        raise Unsupported(f"{directory}: kustomization fields {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in kustomization.get("resources") or []:
        path = directory / entry
        objects.extend(render(path) if path.is_dir() else _documents(path))
    _check_unique(objects, directory)
    for patch in kustomization.get("patches") or []:
        if set(patch) != {"path"}:
            raise Unsupported(f"{directory}: a patch other than by path: {patch}")
        objects = _patched(objects, _documents(directory / patch["path"]))
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images") or []:
        _set_image(objects, image)
    return objects


def _documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _check_unique(objects: list[Obj], directory: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        if object_id(obj) in seen:
            raise Unsupported(f"{directory}: {object_id(obj)} twice (kustomize refuses it)")
        seen.add(object_id(obj))


def _patched(objects: list[Obj], patches: list[Obj]) -> list[Obj]:
    for patch in patches:
        target = (patch["apiVersion"], patch["kind"], patch["metadata"]["name"])
        found = [
            i
            for i, obj in enumerate(objects)
            if (obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) == target
        ]
        if len(found) != 1:
            raise Unsupported(f"patch {target} matches {len(found)} objects")
        if patch.get("$patch") == "delete":
            del objects[found[0]]
        else:
            objects[found[0]] = _merged(objects[found[0]], patch, where=target[1])
    return objects


def _merged(base: Obj, patch: Obj, *, where: str) -> Obj:
    merged = dict(base)
    for key, value in patch.items():
        if key.startswith("$"):
            raise Unsupported(f"{where}: directive {key}")
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value, where=f"{where}.{key}")
        elif isinstance(value, list):
            merged[key] = _merged_list(merged.get(key), value, key=key, where=f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def _merged_list(base: list[Any] | None, patch: list[Any], *, key: str, where: str) -> list[Any]:
    merge_key = _MERGE_KEYS.get(key)
    if merge_key is None:
        raise Unsupported(f"{where}: a list strategic merge may merge by a key")
    items = list(base or [])
    for item in patch:
        matches = [i for i, old in enumerate(items) if old.get(merge_key) == item[merge_key]]
        if matches:
            items[matches[0]] = _merged(items[matches[0]], item, where=where)
        else:
            items.append(item)
    return items


def _set_image(objects: list[Obj], image: dict[str, str]) -> None:
    unknown = set(image) - {"name", "newName", "newTag"}
    if unknown:
        raise Unsupported(f"images: {sorted(unknown)}")
    for container in _containers(objects):
        name, tag = _split_image(container["image"])
        if name == image["name"]:
            name = image.get("newName", name)
            tag = image.get("newTag", tag)
            container["image"] = f"{name}:{tag}" if tag else name


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        raise Unsupported(f"an image by digest: {image}")
    head, _, last = image.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return f"{head}/{last}" if head else last, tag
    return image, None


def _containers(node: Any) -> list[Obj]:
    """Every container and init container anywhere in ``node``."""
    found: list[Obj] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"containers", "initContainers"} and isinstance(value, list):
                found.extend(value)
            else:
                found.extend(_containers(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_containers(item))
    return found
