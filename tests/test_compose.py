"""docker-compose.yml's wiring, read without a Docker engine.

Each relayq service's environment is the one Compose would give it (YAML
merge keys resolved, ``${VAR:-default}`` interpolated with the defaults) and
is read through :class:`Settings`, as the process in the container would
read it. What a service sees of the shared file store is its volumes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from relayq.config.settings import Settings
from tests.stack import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}``, with every variable unset on the host."""
    return _VARIABLE.sub(lambda match: match.group("default") or "", value)


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _role(service: dict[str, Any]) -> str | None:
    """``api``, ``worker``, ``db``, ``flower``: the relayq command a service runs, if any."""
    command = service.get("command") or []
    return command[1] if len(command) > 1 and command[0] == "relayq" else None


def _relayq_services(role: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in _services().items():
        if _role(service) is not None and role in (None, _role(service)):
            yield name, service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environment as a mapping, so anchors can merge"
    return {key: _interpolate(str(value)) for key, value in environment.items()}


def _settings(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the service's process builds from its container's environment."""
    for key in [key for key in os.environ if key.startswith("RELAYQ_")]:
        monkeypatch.delenv(key)
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, value)
    return Settings()


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → named volume, from the short ``volume:path[:mode]`` syntax."""
    mounts = {}
    for entry in service.get("volumes") or []:
        assert isinstance(entry, str), f"short volume syntax expected, got {entry!r}"
        source, target, *mode = entry.split(":")
        assert mode in ([], ["rw"]), f"{entry}: the file store must be writable"
        mounts[target] = source
    return mounts


def test_the_api_and_every_worker_share_one_volume_for_the_file_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sharing = [*_relayq_services("api"), *_relayq_services("worker")]
    assert {name for name, _ in sharing} >= {"api", "worker-openai", "worker-mock"}
    volumes: set[str] = set()
    for name, service in sharing:
        settings = _settings(service, monkeypatch)
        if name != "api":
            assert settings.worker.batches, f"{name} validates batch input files"
        storage = PurePosixPath(settings.files.storage_dir)
        assert storage.is_absolute(), f"{name}: RELAYQ_FILES__STORAGE_DIR is {storage}"
        mounted = _mounts(service).get(str(storage))
        assert mounted is not None, f"{name} has no volume at its file store {storage}"
        volumes.add(mounted)
    assert len(volumes) == 1, f"the API and the workers mount different volumes: {volumes}"
    assert volumes <= set(_compose().get("volumes") or {}), "a named volume, declared"


def test_the_image_gives_the_file_store_to_the_user_the_services_run_as(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty named volume takes the image's directory, owner included; a
    directory the image lacks is created for root, and relayq's user could not
    write its files there."""
    _, api = next(_relayq_services("api"))
    storage = str(_settings(api, monkeypatch).files.storage_dir)
    dockerfile = DOCKERFILE.read_text()
    user = re.findall(r"^USER (\w+)", dockerfile, re.MULTILINE)[-1]
    creating = re.search(rf"install -d[^\n]*-o {user} [^\n]*{re.escape(storage)}(\s|$)", dockerfile)
    assert creating is not None, f"the Dockerfile does not create {storage} for {user}"


def test_every_relayq_service_gets_the_database_and_redis_the_compose_file_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _services()
    postgres = _environment(services["postgres"])
    for name, service in _relayq_services():
        settings = _settings(service, monkeypatch)
        database = urlsplit(settings.database_url)
        assert database.scheme.startswith("postgresql"), name
        assert (database.hostname, database.port or 5432) == ("postgres", 5432), name
        assert database.username == postgres["POSTGRES_USER"], name
        assert database.password == postgres["POSTGRES_PASSWORD"], name
        assert database.path.lstrip("/") == postgres["POSTGRES_DB"], name
        redis = urlsplit(settings.redis_url)
        assert (redis.scheme, redis.hostname, redis.port or 6379) == ("redis", "redis", 6379)
    # The broker's queued messages outlive a Redis restart.
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]


def test_every_relayq_service_builds_the_image_it_runs() -> None:
    images = set()
    for name, service in _relayq_services():
        assert service.get("build") == ".", f"{name} would pull its image from a registry"
        images.add(_interpolate(service["image"]))
    assert images == {"relayq:local"}


def test_services_start_after_what_they_need() -> None:
    services = _services()
    for name, service in _services().items():
        for needed in service.get("depends_on") or {}:
            assert needed in services, f"{name} depends on unknown service {needed}"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in [*_relayq_services("api"), *_relayq_services("worker")]:
        conditions = {key: value["condition"] for key, value in service["depends_on"].items()}
        assert conditions == {
            "migrate": "service_completed_successfully",
            "redis": "service_healthy",
        }, name


def test_every_provider_has_a_worker_and_each_worker_one_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumed: list[str] = []
    for name, service in _relayq_services("worker"):
        settings = _settings(service, monkeypatch)
        assert settings.worker.providers, f"{name} names its providers"
        consumed.extend(settings.worker.providers)
        assert service["command"][2:] == ["--hostname", f"{name.removeprefix('worker-')}@%h"]
    _, api = next(_relayq_services("api"))
    assert sorted(consumed) == sorted(_settings(api, monkeypatch).providers)


def test_the_api_listens_where_it_is_published_and_checked() -> None:
    api = _services()["api"]
    port = api["command"][api["command"].index("--port") + 1]
    assert api["ports"] == [f"{port}:{port}"]
    assert f"http://127.0.0.1:{port}/readyz" in api["healthcheck"]["test"][-1]


def test_every_worker_is_checked_by_the_worker_probe() -> None:
    for name, service in _relayq_services("worker"):
        check = service.get("healthcheck")
        assert check is not None, f"{name} has no health check"
        assert check["test"] == ["CMD", "relayq", "health", "worker"], name


def test_the_apis_readiness_cannot_hold_up_what_it_waits_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/readyz waits for a worker on every routed provider's queue: no service may wait
    for the API's health, and some worker service must consume each of those queues."""
    for name, service in _services().items():
        api = (service.get("depends_on") or {}).get("api")
        assert api is None or api["condition"] != "service_healthy", name
    consumed: set[str] = set()
    for _, service in _relayq_services("worker"):
        consumed.update(_settings(service, monkeypatch).worker.providers or [])
    _, api_service = next(_relayq_services("api"))
    routes = _settings(api_service, monkeypatch).routes
    routed = {d.provider for route in routes.values() for d in route.deployments}
    assert routed <= consumed, f"no worker service consumes {sorted(routed - consumed)}"


def _bind_mounts(service: dict[str, Any]) -> dict[str, PurePosixPath]:
    """Container path → the repository file or directory bound there (``./…:path:ro``)."""
    mounts = {}
    for entry in service.get("volumes") or []:
        source, target, *_ = entry.split(":")
        if source.startswith("./"):
            mounts[target] = PurePosixPath(source)
    return mounts


def test_prometheus_scrapes_the_api_and_every_worker_where_they_serve_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prometheus = _services()["prometheus"]
    mounts = _bind_mounts(prometheus)
    config_path = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config = yaml.safe_load((ROOT / mounts[config_path.split("=", 1)[1]]).read_text())
    for rule_file in config["rule_files"]:
        assert (ROOT / mounts[rule_file]).is_file(), f"{rule_file} is not mounted"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    _, api = next(_relayq_services("api"))
    api_settings = _settings(api, monkeypatch)
    assert api_settings.api.metrics
    api_port = api["command"][api["command"].index("--port") + 1]
    assert jobs["relayq-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    assert jobs["relayq-api"].get("metrics_path", "/metrics") == "/metrics"
    if api_settings.api.metrics_access != "public":
        assert "authorization" in jobs["relayq-api"], "an admin key for /metrics"

    (workers,) = jobs["relayq-worker"]["dns_sd_configs"]
    names = {name for name, _ in _relayq_services("worker")}
    assert set(workers["names"]) == names, "every worker service is scraped"
    for name, service in _relayq_services("worker"):
        settings = _settings(service, monkeypatch)
        assert settings.worker.metrics_port == workers["port"], name
        assert settings.worker.metrics_host == "0.0.0.0", f"{name}: reachable by Prometheus"
        assert str(workers["port"]) in service.get("expose", []), name


def test_grafana_is_provisioned_with_prometheus_and_the_relayq_dashboard() -> None:
    grafana = _services()["grafana"]
    mounts = _bind_mounts(grafana)
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    prometheus = _services()["prometheus"]
    assert source["url"] == "http://prometheus:9090"
    assert any(port.endswith(":9090") for port in prometheus["ports"])
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "relayq.yml").read_text())[
        "providers"
    ]
    dashboards = ROOT / mounts[provider["options"]["path"]]
    dashboard = yaml.safe_load((dashboards / "relayq.json").read_text())
    sources = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    assert sources == {source["uid"]}, "every panel asks the provisioned data source"
