"""The package layout keeps its promises (docs/architecture.md).

Read from the source with :mod:`ast`, so these hold for every import, the ones
under ``TYPE_CHECKING`` and inside functions included (the routes' own rule is
checked in tests/test_api_layout.py):

- every package of ``relayq`` says what it is in its ``__init__`` docstring;
- no two packages of ``relayq`` import each other, however indirectly;
- no two classes of ``relayq``, ``api`` and ``worker`` share a name;
- docs/architecture.md names every package and every provider adapter, and lists
  the packages in an order their imports keep (each imports only those above it).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from relayq.providers import PROVIDER_TYPES

ROOT = Path(__file__).resolve().parent.parent
OWN = ("relayq", "api", "worker")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in OWN:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(path: Path) -> Iterator[str]:
    """Every name of our own packages that ``path`` imports, ``from x import y`` as ``x.y``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in OWN:
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] in OWN)


def _resolved(name: str, modules: dict[str, Path]) -> str | None:
    while name not in modules:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _package(module: str) -> str:
    """``relayq.store.jobs`` → ``relayq.store``; a top-level module of relayq is its own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "relayq" and len(parts) > 1 else parts[0]


def _package_edges() -> dict[str, dict[str, set[tuple[str, str]]]]:
    """relayq's package → package it imports → the (importer, imported) modules that do."""
    modules = _modules()
    edges: dict[str, dict[str, set[tuple[str, str]]]] = {}
    for module, path in modules.items():
        if not module.startswith("relayq."):
            continue
        for name in _imported(path):
            target = _resolved(name, modules)
            if target is None or not target.startswith("relayq."):
                continue
            source_package, target_package = _package(module), _package(target)
            if source_package != target_package:
                pair = (module, target)
                edges.setdefault(source_package, {}).setdefault(target_package, set()).add(pair)
    return edges


def _cycles(edges: dict[str, dict[str, set[tuple[str, str]]]]) -> list[list[str]]:
    """The strongly connected groups of more than one package (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_every_package_says_what_it_is() -> None:
    bare = [
        str(init.relative_to(ROOT))
        for init in sorted((ROOT / "relayq").rglob("__init__.py"))
        if "migrations" not in init.parts
        and len(ast.get_docstring(ast.parse(init.read_text())) or "") < 40
    ]
    assert bare == [], f"packages without a docstring saying what they hold: {bare}"


def test_no_package_imports_a_package_that_imports_it() -> None:
    edges = _package_edges()
    found = []
    for group in _cycles(edges):
        for source in group:
            for target in group:
                for importer, imported in sorted(edges.get(source, {}).get(target, ())):
                    found.append(f"{importer} imports {imported}")
    assert found == [], "package cycles:\n" + "\n".join(found)


def test_every_class_has_a_name_of_its_own() -> None:
    defined: dict[str, list[str]] = {}
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                defined.setdefault(node.name, []).append(module)
    assert len(defined) > 100
    shared = {name: modules for name, modules in defined.items() if len(modules) > 1}
    assert shared == {}, f"classes that share a name: {shared}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above cannot pass vacuously: a made-up cycle is found."""
    edges = {
        "a": {"b": {("a.x", "b.y")}},
        "b": {"c": {("b.y", "c.z")}},
        "c": {"a": {("c.z", "a.x")}},
    }
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": {("a.x", "b.y")}}}) == []


def test_architecture_names_every_package_and_adapter() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    packages = sorted(
        str(init.parent.relative_to(ROOT)) + "/"
        for init in (ROOT / "relayq").rglob("__init__.py")
        if "migrations" not in init.parts and init.parent != ROOT / "relayq"
    )
    missing = [p for p in packages if f"`{p}`" not in text]
    missing += [f"adapter {name}" for name in PROVIDER_TYPES if f"`{name}`" not in text]
    assert missing == [], f"docs/architecture.md does not name: {missing}"


def test_packages_import_only_those_listed_above_them() -> None:
    """The table of docs/architecture.md is the layering: it stays true."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = ["relayq." + name for name in re.findall(r"^\| `relayq/([a-z_]+)/` \|", text, re.M)]
    assert len(listed) > 10, "docs/architecture.md's table of packages was not found"
    upward = [
        f"{source} (row {listed.index(source) + 1}) imports {target}: {sorted(pairs)[0]}"
        for source, targets in _package_edges().items()
        if source in listed
        for target, pairs in targets.items()
        if target in listed and listed.index(target) > listed.index(source)
    ]
    assert upward == [], "\n".join(upward)
