"""deploy/kubernetes, rendered and checked offline: no cluster, no kubectl, no network.

Each kustomization is rendered by tests/kustomize.py (compared with
``kubectl kustomize`` where kubectl is installed), every object is validated
against the Kubernetes JSON schemas of a pinned release (kubernetes-validate,
strict: unknown fields are errors), and KEDA's objects, which those schemas
do not cover, against KEDA's documented fields. Then what the schemas cannot
see: each reference resolves, each container runs a relayq command that
exists, as the image's user, and reads settings relayq accepts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer
import yaml

from relayq.cli.main import app as cli_app
from relayq.config.settings import Settings
from relayq.queueing.broker import create_celery
from tests.kustomize import object_id, render
from tests.stack import ROOT

KUBERNETES_VERSION = "1.31.0"
"""The release whose schemas every object must satisfy: the manifests use nothing newer."""

DEPLOY = ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
PRODUCTION = DEPLOY / "overlays" / "production"
KEDA = DEPLOY / "examples" / "keda"
KUSTOMIZATIONS = {"base": BASE, "production": PRODUCTION, "keda": KEDA}
IMAGES = {
    "base": "relayq:local",
    "production": "registry.example.com/relayq:0.1.0",
    "keda": "registry.example.com/relayq:0.1.0",
}
SECRET = "relayq-secrets"
"""The Secret every relayq pod reads; the base holds placeholders, production leaves it out."""
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}

Obj = dict[str, Any]


def _objects(name: str) -> list[Obj]:
    return render(KUSTOMIZATIONS[name])


def _of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def _pod_specs(objects: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for obj in objects:
        if obj["kind"] in {"Deployment", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def _containers(objects: list[Obj]) -> Iterator[tuple[str, Obj, Obj]]:
    """Each container: its workload's name, its pod spec, the container."""
    for name, pod in _pod_specs(objects):
        for container in pod["containers"]:
            yield name, pod, container


def _base_secret() -> dict[str, str]:
    secret: dict[str, str] = _of_kind(_objects("base"), "Secret")[SECRET]["stringData"]
    return secret


def _environment(objects: list[Obj], container: Obj) -> dict[str, str]:
    """What the container's process sees of its ConfigMap, Secret and env (the
    base's placeholder Secret standing in for the one production creates)."""
    config_maps = _of_kind(objects, "ConfigMap")
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(config_maps[source["configMapRef"]["name"]]["data"])
        else:
            assert source["secretRef"]["name"] == SECRET
            environment.update(_base_secret())
    environment.update({item["name"]: item["value"] for item in container.get("env", [])})
    return environment


def _settings(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process builds from ``environment`` and nothing else."""
    for key in [key for key in os.environ if key.startswith("RELAYQ_") or key.endswith("_KEY")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_is_valid_for_the_pinned_kubernetes(name: str) -> None:
    objects = _objects(name)

    kinds = {obj["kind"] for obj in objects}
    assert kinds >= {"ConfigMap", "PersistentVolumeClaim", "Job", "Deployment", "Service"}
    assert "PodDisruptionBudget" in kinds
    for obj in objects:
        if obj["kind"] in KEDA_KINDS:
            continue  # a CRD: test_keda_scales_a_worker_deployment_on_the_lists_it_consumes
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.absolute_path)
            pytest.fail(f"{name}: {object_id(obj)} at {path}: {exc.message}")


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_FACTORS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(value: str) -> float:
    match = _QUANTITY.match(str(value))
    assert match is not None, f"{value!r} is not a quantity"
    return float(match.group(1)) * _FACTORS[match.group(2)]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_container_has_requests_within_its_limits(name: str) -> None:
    """The schemas take any string as a quantity; the API server would not."""
    for workload, _, container in _containers(_objects(name)):
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
        for resource, request in resources["requests"].items():
            limit = resources["limits"][resource]
            assert _quantity(request) <= _quantity(limit), f"{workload}: {resource}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_reference_resolves(name: str) -> None:
    """ConfigMaps, Secrets, claims, selectors and named ports: each names something
    rendered, but for the Secrets production leaves to the operator."""
    objects = _objects(name)
    existing = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    referenced: set[tuple[str, str]] = set()
    for _, pod, container in _containers(objects):
        for source in container.get("envFrom", []):
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            referenced.add((kind, source.get("configMapRef", source.get("secretRef"))["name"]))
        ports = {port["name"] for port in container.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if "httpGet" in container.get(probe, {}):
                assert container[probe]["httpGet"]["port"] in ports
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                referenced.add(
                    ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
                )
    for auth in _of_kind(objects, "TriggerAuthentication").values():
        referenced |= {("Secret", ref["name"]) for ref in auth["spec"]["secretTargetRef"]}
    missing = referenced - existing
    expected = {
        "base": set(),
        "production": {("Secret", SECRET)},
        "keda": {("Secret", SECRET), ("Secret", "relayq-keda-redis")},
    }
    assert missing == expected[name], "docs/kubernetes.md says to create these"

    pod_labels = []
    for deployment in _of_kind(objects, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        pod_labels.append(labels)
    for obj in objects:
        if obj["kind"] in {"Service", "PodDisruptionBudget"}:
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            chosen = [labels for labels in pod_labels if selector.items() <= labels.items()]
            assert len(chosen) == 1, f"{object_id(obj)} selects {len(chosen)} Deployments"


def test_api_and_worker_deployments_each_have_a_disruption_budget() -> None:
    objects = _objects("production")
    budgets = _of_kind(objects, "PodDisruptionBudget")
    for name, deployment in _of_kind(objects, "Deployment").items():
        if name == "relayq-flower":
            continue
        assert name in budgets, f"{name} has no PodDisruptionBudget"
        assert budgets[name]["spec"] == {
            "maxUnavailable": 1,
            "selector": deployment["spec"]["selector"],
        }, "one pod at a time, and never a budget that blocks a drain for good"


def _command_exists(argv: list[str]) -> bool:
    """Whether ``relayq <argv...>`` names a command of relayq's CLI (options aside)."""
    command = typer.main.get_command(cli_app)
    for word in argv[1:]:
        if word.startswith("-") or not hasattr(command, "commands"):
            break
        if word not in command.commands:
            return False
        command = command.commands[word]
    return not hasattr(command, "commands")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_container_runs_a_relayq_command_from_the_image(name: str) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.findall(r"useradd [^\n]*--uid (\d+)", dockerfile)[-1])
    images = set()
    for workload, pod, container in _containers(_objects(name)):
        images.add(container["image"])
        for argv in [container["command"]] + [
            container[probe]["exec"]["command"]
            for probe in ("livenessProbe", "startupProbe")
            if "exec" in container.get(probe, {})
        ]:
            assert argv[0] == "relayq", f"{workload}: {argv}"
            assert _command_exists(argv), f"{workload}: relayq has no command {argv}"
        user = pod["securityContext"]
        assert (user["runAsUser"], user["runAsNonRoot"]) == (uid, True), f"{workload}: {uid}"
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, workload
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert "/tmp" in mounts, f"{workload}: the root filesystem is read-only"
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
    assert images == {IMAGES[name]}


def test_the_api_serves_its_probes_on_the_port_it_listens_on() -> None:
    from api.routes.health import router

    served = {route.path for route in router.routes if hasattr(route, "path")}
    deployment = _of_kind(_objects("production"), "Deployment")["relayq-api"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    port = int(command[command.index("--port") + 1])

    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert f"EXPOSE {port}" in (ROOT / "Dockerfile").read_text()
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    # Traffic follows the database, not the workers: /readyz turns every API pod
    # unready when one provider's workers are gone (docs/production.md).
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/livez", "/readyz", "/healthz"} <= served
    service = _of_kind(_objects("production"), "Service")["relayq-api"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_settings_each_process_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through Settings, as the process in the pod reads them: the file store is
    the shared volume, keys come from the Secret, every provider has workers."""
    objects = _objects("production")
    claims = _of_kind(objects, "PersistentVolumeClaim")
    consumed: list[str] = []
    for workload, pod, container in _containers(objects):
        settings = _settings(_environment(objects, container), monkeypatch)
        assert settings.database_url == _base_secret()["RELAYQ_DATABASE_URL"]
        assert settings.redis_url == _base_secret()["RELAYQ_REDIS_URL"]
        key = settings.providers["openai"].api_key
        assert key is not None
        assert key.get_secret_value() == _base_secret()["OPENAI_API_KEY"]
        if workload.startswith("relayq-worker-"):
            assert settings.worker.providers, f"{workload} names its provider group"
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            assert ports["metrics"] == settings.worker.metrics_port, "what Prometheus scrapes"
            assert settings.worker.metrics_host == "0.0.0.0"
            consumed.extend(settings.worker.providers)
            assert container["command"][2:] == [
                "--hostname",
                f"{workload.removeprefix('relayq-worker-')}@%h",
            ]
        if workload == "relayq-api" or workload.startswith("relayq-worker-"):
            storage = str(settings.files.storage_dir)
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == storage]
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            claim = claims[volume["persistentVolumeClaim"]["claimName"]]
            assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "shared by every pod"
    assert sorted(consumed) == sorted(settings.providers)
    assert "/var/lib/relayq/files" in (ROOT / "Dockerfile").read_text()


def test_workers_get_the_time_to_finish_their_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM is Celery's warm shutdown; a worker killed sooner costs its jobs a rerun."""
    settings = _settings({}, monkeypatch)
    closing = 15  # seconds to close clients after the last call (docs/production.md)
    deployments = _of_kind(_objects("production"), "Deployment")
    workers = [d for name, d in deployments.items() if name.startswith("relayq-worker-")]
    assert len(workers) == 2
    for deployment in workers:
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= settings.chat.timeout_seconds + closing
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def _broker_lists(queue: str, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The Redis lists Celery keeps ``queue`` in: one per priority step (kombu's naming)."""
    celery = create_celery(_settings(_base_secret(), monkeypatch))
    options = celery.conf.broker_transport_options
    celery.close()
    sep = options["sep"]
    return {f"{queue}{sep}{step}" if step else queue for step in options["priority_steps"]}


def test_keda_scales_a_worker_deployment_on_the_lists_it_consumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KEDA's ScaledObject spec (keda.sh/docs, reference/scaledobject-spec) and its
    redis scaler (scalers/redis-lists): the fields they require, and what they name."""
    objects = _objects("keda")
    (scaled,) = _of_kind(objects, "ScaledObject").values()
    auths = _of_kind(objects, "TriggerAuthentication")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = _of_kind(objects, "Deployment")[spec["scaleTargetRef"]["name"]]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert "replicas" not in target["spec"], "KEDA's autoscaler owns the count"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]

    (container,) = target["spec"]["template"]["spec"]["containers"]
    settings = _settings(_environment(objects, container), monkeypatch)
    assert settings.worker.providers is not None
    lists: set[str] = set()
    for provider in settings.worker.providers:
        lists |= _broker_lists(settings.queue_for(provider), monkeypatch)
    database = settings.redis_url.rsplit("/", 1)[1]

    triggers = spec["triggers"]
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert trigger["type"] == "redis"
        assert trigger["name"].isidentifier(), "a name the formula can use"
        assert all(isinstance(value, str) for value in metadata.values()), "strings only"
        assert int(metadata["listLength"]) > 0
        assert metadata["databaseIndex"] == database
        auth = auths[trigger["authenticationRef"]["name"]]
        parameters = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
        assert "address" in parameters or "address" in metadata
    assert {trigger["metadata"]["listName"] for trigger in triggers} == lists
    modifiers = spec["advanced"]["scalingModifiers"]
    assert float(modifiers["target"]) > 0
    summed = {name.strip() for name in modifiers["formula"].split("+")}
    assert summed == {trigger["name"] for trigger in triggers}, "every list counts, once"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    printed = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    theirs = {object_id(obj): obj for obj in yaml.safe_load_all(printed) if obj}
    assert {object_id(obj): obj for obj in _objects(name)} == theirs
