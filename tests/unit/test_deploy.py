"""The deployment files agree with the server they deploy: `deploy/kubernetes/*.yaml` are valid
Kubernetes objects (the API's own JSON schemas, strict, through kubernetes-validate), their probes
are routes of the app, every setting they pass is a real one with a value the server accepts, the
ports line up, and the stop sequence and memory are derived from the settings as their comments
say; the same for `deploy/compose.yaml` and the `Containerfile`. The image itself is built and run
by `make image-test` (devtools/image_test.py), which needs root.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import kubernetes_validate
import pytest
import yaml

from imgproxy.config import Config, load_config
from imgproxy.web import ops
from imgproxy.web.routes import ROUTES, Handler

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
KUBERNETES: Final = DEPLOY / "kubernetes"
MIB: Final = 1024 * 1024
# Names the files may set besides the settings: the allocator's (docs/operations.md).
OTHER_ENV: Final = frozenset({"MALLOC_ARENA_MAX"})
# The memory formula of deployment.yaml's comment: per worker, cache.max_bytes x 1.25 + this.
BASE_MEMORY_BYTES: Final = 256 * MIB
STOP_MARGIN_S: Final = 5.0
SECRET_STAND_IN: Final = "UseDevelopmentStorage=true"  # any value load_config accepts


def setting_names() -> frozenset[str]:
    """Every `IMGPROXY_<SECTION>_<KEY>` the server reads."""
    return frozenset(
        f"IMGPROXY_{section.upper()}_{key.name.upper()}"
        for section, section_type in typing.get_type_hints(Config).items()
        for key in dataclasses.fields(section_type)
    )


def manifests() -> Iterator[dict[str, Any]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                yield document


def only(kind: str) -> dict[str, Any]:
    found = [m for m in manifests() if m["kind"] == kind]
    assert len(found) == 1, f"one {kind} in deploy/kubernetes, found {len(found)}"
    return found[0]


def server_container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = only("Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "imgproxy")


def literal_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment, secrets replaced by a stand-in value."""
    env: dict[str, str] = {}
    for item in container["env"]:
        env[item["name"]] = item.get("value", SECRET_STAND_IN)
    return env


def config_of(env: Mapping[str, str]) -> Config:
    return load_config(None, {k: v for k, v in env.items() if k.startswith("IMGPROXY_")})


def route_path(handler: Handler, config: Config) -> str:
    route = next(r for r in ROUTES if r.handler is handler)
    return (config.server.ops_prefix if route.ops else "") + route.path


def quantity_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity)
    assert match, quantity
    return int(match[1]) * units.get(match[2] or "", 1)


@pytest.mark.parametrize("manifest", list(manifests()), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_each_manifest_is_a_valid_kubernetes_object(manifest: dict[str, Any]) -> None:
    # Strict: an unknown or misspelt field is an error too (kubeconform's -strict).
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_the_manifests_hold_a_deployment_and_its_service() -> None:
    kinds = sorted(m["kind"] for m in manifests())
    assert kinds == ["Deployment", "Service"]


def test_every_variable_of_the_deployment_is_a_setting_the_server_accepts() -> None:
    env = literal_env(server_container())
    unknown = set(env) - setting_names() - OTHER_ENV
    assert not unknown, f"not settings of imgproxy.config: {sorted(unknown)}"
    config = config_of(env)  # raises ConfigError on a value the server would refuse at start-up
    assert config.server.host == "0.0.0.0"
    assert config.transform.max_concurrency > 0, "bounded: the default counts the node's cores"
    assert env["MALLOC_ARENA_MAX"] == "2"


def test_probes_are_the_apps_health_and_readiness_routes_on_the_server_port() -> None:
    container = server_container()
    config = config_of(literal_env(container))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.server.port}
    assert container["readinessProbe"]["httpGet"] == {"path": route_path(ops.readyz, config), "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": route_path(ops.healthz, config), "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": route_path(ops.healthz, config), "port": "http"}
    assert route_path(ops.readyz, config) == "/readyz"
    assert route_path(ops.healthz, config) == "/healthz"


def test_the_service_selects_the_pods_and_targets_the_server_port() -> None:
    deployment, service = only("Deployment"), only("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in server_container()["ports"]}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert "http" in port_names


def test_the_stop_sequence_fits_in_the_grace_period() -> None:
    pod = only("Deployment")["spec"]["template"]["spec"]
    container = server_container()
    server = config_of(literal_env(container)).server
    pre_stop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop_s == server.drain_s, "preStop matches server.drain_s"
    # preStop, then SIGTERM: the server's drain, then in-flight answers; the kubelet kills after the grace.
    needed_s = pre_stop_s + server.drain_s + server.shutdown_timeout_s
    assert pod["terminationGracePeriodSeconds"] >= needed_s + STOP_MARGIN_S


def test_memory_is_derived_from_the_cache_size_as_the_comment_says() -> None:
    container = server_container()
    config = config_of(literal_env(container))
    per_worker = config.cache.max_bytes * 5 // 4 + BASE_MEMORY_BYTES
    resources = container["resources"]
    assert quantity_bytes(resources["limits"]["memory"]) == config.server.workers * per_worker
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert "cpu" not in resources["limits"], "no CPU limit: throttling stalls the event loop"


def test_the_disk_tier_sits_on_a_volume_large_enough_for_it() -> None:
    pod = only("Deployment")["spec"]["template"]["spec"]
    container = server_container()
    disk = config_of(literal_env(container)).disk
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[disk.path])
    assert disk.enabled
    assert quantity_bytes(volume["emptyDir"]["sizeLimit"]) >= disk.max_bytes
    # Writable places on a read-only root: the disk tier and the temporary directory.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in mounts


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return document


def test_compose_runs_the_proxy_with_redis_and_azurite_from_the_containerfile() -> None:
    services = compose()["services"]
    assert {"imgproxy", "redis", "azurite", "seed"} <= set(services)
    proxy = services["imgproxy"]
    assert (
        DEPLOY / proxy["build"]["context"] / proxy["build"]["dockerfile"]
    ).resolve() == ROOT / "Containerfile"
    env = {k: str(v) for k, v in proxy["environment"].items()}
    assert not set(env) - setting_names() - OTHER_ENV
    config = config_of(env)
    assert proxy["ports"] == [f"{config.server.port}:{config.server.port}"]
    # The other services by their compose names and ports.
    assert config.redis.url == "redis://redis:6379/0"
    command = services["azurite"]["command"]
    azurite_port = command[command.index("--blobPort") + 1]
    assert f"BlobEndpoint=http://azurite:{azurite_port}/devstoreaccount1;" in config.origin.connection_string
    assert services["seed"]["environment"] == {
        k: v for k, v in proxy["environment"].items() if k.startswith("IMGPROXY_ORIGIN_")
    }
    assert proxy["depends_on"]["seed"]["condition"] == "service_completed_successfully"


def containerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of each line of the Containerfile, continuations joined."""
    text = (ROOT / "Containerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_containerfile_sets_real_settings_a_non_root_user_and_a_health_check() -> None:
    instructions = containerfile()
    env: dict[str, str] = {}
    for instruction, arguments in instructions:
        if instruction == "ENV":
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                env[name] = value
    assert not {k for k in env if k.startswith("IMGPROXY_")} - setting_names()
    # The origin is the operator's to give at run time (docker run -e / a Secret).
    config = config_of({**env, "IMGPROXY_ORIGIN_CONNECTION_STRING": SECRET_STAND_IN})
    assert config.server.host == "0.0.0.0"
    assert env["MALLOC_ARENA_MAX"] == "2"
    values = {instruction: arguments for instruction, arguments in instructions}
    assert values["EXPOSE"] == str(config.server.port)
    assert values["USER"] == "10001:10001"
    assert values["STOPSIGNAL"] == "SIGTERM"
    assert values["ENTRYPOINT"] == '["imgproxy"]', "exec form: the server is PID 1 and gets SIGTERM"
    assert route_path(ops.healthz, config) + "'" in values["HEALTHCHECK"]
    assert values["FROM"] == "${BASE}"
    assert values["ARG"] == "BASE=python:3.11-slim-bookworm"
