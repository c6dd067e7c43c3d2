"""The deployment files checked offline: Kubernetes manifests, docker-compose.yml, the Dockerfile, the healthcheck."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose, parse_duration
from compose_spec.compose_spec import PyOptions
from prometheus_client.parser import text_string_to_metric_families
from pydantic_settings import BaseSettings
from scenecast.v1 import (
    audio_service_pb2,
    image_service_pb2,
    render_service_pb2,
    script_service_pb2,
    video_service_pb2,
)

from gateway.config import GatewaySettings
from scenecast_cli.stack import LocalStack
from services.common.auth import write_token_file
from services.common.healthcheck import local_address
from services.common.server import LIVENESS
from services.common.settings import ServiceSettings
from services.common.state import UnsafeStateLocation, private_dir
from web.app import create_app
from web.config import WebSettings
from web.server import SHUTDOWN_GRACE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
CLOUD = K8S / "overlays" / "cloud"
DEV = K8S / "overlays" / "dev"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Process name -> (module run with `python -m`, module holding its settings class, gRPC port).
SERVICES: dict[str, tuple[str, str, int]] = {
    "gateway": ("gateway", "gateway.config", 50050),
    "image": ("services.image", "services.image.config", 50051),
    "audio": ("services.audio", "services.audio.config", 50052),
    "video": ("services.video", "services.video.config", 50053),
    "assembler": ("services.assembler", "services.assembler.config", 50054),
    "script": ("services.script", "services.script.config", 50055),
}
MEDIA = ("image", "audio", "video", "assembler")
# Every service the gateway calls: the media services and the script service.
DOWNSTREAM = (*MEDIA, "script")
# The HTTP/JSON API in front of the gateway (python -m web): a Deployment like the services, but HTTP, without metrics.
WEB_PORT = 8080
WEB_PODS = {"app.kubernetes.io/component": "web"}
# The optional Secret with the gateway caller token the web passes on (made by hand, never committed).
WEB_TOKEN_SECRET = "scenecast-web-token"
DEPLOYMENTS = (*SERVICES, "web")
# The services that call paid providers, and so the only ones given the keys.
KEYED = ("image", "audio", "video", "script")
# The keys each service's providers need; nothing else gets a key.
SERVICE_KEYS = {
    "image": {"OPENAI_API_KEY", "REPLICATE_API_TOKEN", "FAL_KEY", "PEXELS_API_KEY", "PIXABAY_API_KEY"},
    "audio": {"OPENAI_API_KEY", "REPLICATE_API_TOKEN", "KOKORO_SERVER_API_KEY"},
    "video": {
        "REPLICATE_API_TOKEN",
        "SYNTHESIA_API_KEY",
        "HEYGEN_API_KEY",
        "KLING_ACCESS_KEY",
        "KLING_SECRET_KEY",
        "RUNPOD_API_KEY",
        "PEXELS_API_KEY",
        "PIXABAY_API_KEY",
    },
    "script": {"OPENAI_API_KEY"},
}
KEY_VARIABLES = tuple(sorted(set().union(*SERVICE_KEYS.values())))
METRICS_PORT = 9464
UID = 10001
NAMESPACE = "scenecast"
CONFIG_MAP = "scenecast-config"
KEYS_SECRET = "scenecast-provider-keys"
# The Secret the operator creates with the service token (never generated or committed here), and where compose's
# one-shot service writes the token it generates.
AUTH_SECRET = "scenecast-service-auth"
AUTH_VARIABLE = "SERVICE_AUTH_TOKENS"
COMPOSE_TOKEN_FILE = "/run/scenecast-auth/service-token"
COMPONENT = "app.kubernetes.io/component"
FRONT_DOOR = {COMPONENT: "frontdoor"}
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
# Provider variables and the registry that must know their value.
PROVIDER_REGISTRIES = {
    "IMAGE_PROVIDER": "services.image.providers",
    "TTS_PROVIDER": "services.audio.providers",
    "VIDEO_PROVIDER": "services.video.providers",
    "SCRIPT_PROVIDER": "services.script.providers",
}
# The oldest Kubernetes the manifests promise to suit, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# KEDA's ScaledObject, which kubernetes-validate does not know: checked against KEDA's own CRD (vendored).
KEDA_CRD = Path(__file__).parent / "schemas" / "keda-scaledobject-crd.yaml"
# The Secret with the shared state's URLs (an overlay provides it), and what reads which of its keys.
STATE_SECRET = "scenecast-state"
STATE_KEYS = {
    "gateway": {"RENDER_STATE_URL", "SPEND_LEDGER_URL", "ASSET_CACHE_URL"},
    "image": {"ASSET_CACHE_URL"},
    "audio": {"ASSET_CACHE_URL"},
    "video": {"ASSET_CACHE_URL"},
}
# The dev overlay's own Secret, with the passwords its Redis and PostgreSQL are started with.
DEV_DEPS_SECRET = "scenecast-dev-deps"
# Each service's own RPCs, which its in-flight query may name.
SERVICE_RPCS = {
    "gateway": render_service_pb2.DESCRIPTOR.services_by_name["RenderService"],
    "image": image_service_pb2.DESCRIPTOR.services_by_name["ImageService"],
    "audio": audio_service_pb2.DESCRIPTOR.services_by_name["AudioService"],
    "video": video_service_pb2.DESCRIPTOR.services_by_name["VideoService"],
    "script": script_service_pb2.DESCRIPTOR.services_by_name["ScriptService"],
}
# The services whose calls wait on cloud providers (I/O), and so scale on calls in flight as well as CPU.
IO_BOUND = ("image", "audio", "video")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _settings_class(name: str) -> type[BaseSettings]:
    module = importlib.import_module(SERVICES[name][1])
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseSettings) and value.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"{module.__name__} should define one settings class, found {classes}"
    return classes[0]


def _drain_seconds(name: str, env: dict[str, str]) -> float:
    """The drain time a process gets: SHUTDOWN_GRACE_SECONDS from its environment, else the settings default."""
    if "SHUTDOWN_GRACE_SECONDS" in env:
        return float(env["SHUTDOWN_GRACE_SECONDS"])
    default = _settings_class(name).model_fields["shutdown_grace_seconds"].default
    assert isinstance(default, (int, float))
    return float(default)


def _quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "2", "512Mi") as a number, to compare requests with limits."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match and match.group(2) in ("", *units), f"unexpected quantity {text!r}"
    return float(match.group(1)) * units.get(match.group(2), 1.0)


# ---------------------------------------------------------------- Kubernetes: kustomize structure and schemas


def _kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def _patch_files() -> set[Path]:
    return {
        (path.parent / patch["path"]).resolve()
        for path in _kustomizations()
        for patch in yaml.safe_load(path.read_text()).get("patches", [])
    }


def _resource_files(kustomization: Path) -> Iterator[Path]:
    """The manifest files a kustomization includes, following directory resources to their own kustomization."""
    for entry in yaml.safe_load(kustomization.read_text()).get("resources", []):
        target = (kustomization.parent / entry).resolve()
        if target.is_dir():
            yield from _resource_files(target / "kustomization.yaml")
        else:
            yield target


def _manifest_files() -> list[Path]:
    """Every YAML file under deploy/k8s that is a complete Kubernetes object (not a kustomization, not a patch)."""
    patches = _patch_files()
    return sorted(
        path for path in K8S.rglob("*.yaml") if path.name != "kustomization.yaml" and path.resolve() not in patches
    )


def _objects(kustomization: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (doc["kind"], doc["metadata"]["name"]): doc for path in _resource_files(kustomization) for doc in _docs(path)
    }


BASE_OBJECTS = _objects(BASE / "kustomization.yaml")


@pytest.mark.parametrize("kustomization", _kustomizations(), ids=lambda p: str(p.parent.relative_to(K8S)))
def test_kustomization_lists_only_what_exists(kustomization: Path) -> None:
    """A file named by a kustomization must exist; a generator's env file may be missing only when it holds secrets,
    is git-ignored beside the kustomization, and has a committed .example to copy."""
    data = yaml.safe_load(kustomization.read_text())
    folder = kustomization.parent
    assert data["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and data["kind"] == "Kustomization"
    assert kustomization.read_text().startswith("#"), "each kustomization starts with a comment saying how to use it"
    for entry in data.get("resources", []):
        target = folder / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{kustomization}: no resource {entry}"
    for patch in data.get("patches", []):
        assert (folder / patch["path"]).is_file(), f"{kustomization}: no patch {patch['path']}"
    for generator in data.get("configMapGenerator", []) + data.get("secretGenerator", []):
        for source in generator.get("envs", []) + generator.get("files", []):
            if (folder / source).is_file():
                continue
            ignored = (folder / ".gitignore").read_text().split() if (folder / ".gitignore").is_file() else []
            assert source in ignored and (folder / f"{source}.example").is_file(), (
                f"{kustomization}: {source} is missing and is not a git-ignored file with a {source}.example"
            )


def test_every_manifest_is_used() -> None:
    """A YAML file that no kustomization lists would be validated here but never deployed."""
    listed = {path for kustomization in _kustomizations() for path in _resource_files(kustomization)}
    unused = [str(path.relative_to(K8S)) for path in _manifest_files() if path.resolve() not in listed]
    assert not unused, f"not listed in any kustomization: {unused}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_matches_the_kubernetes_schema(path: Path, version: str) -> None:
    docs = _docs(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        _validate(doc, version)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI schema of a CRD with unknown fields refused, as `kubectl apply` (strict field validation) does:
    every object with declared properties gets additionalProperties false, unless it keeps unknown fields."""
    schema = copy.deepcopy(schema)
    pending = [schema]
    while pending:
        node = pending.pop()
        if "properties" in node:
            if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            pending.extend(node["properties"].values())
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                pending.append(node[key])
        for key in ("anyOf", "allOf", "oneOf"):
            pending.extend(node.get(key, []))
    return schema


def _keda_schema() -> dict[str, Any]:
    [crd] = _docs(KEDA_CRD)
    [version] = [item for item in crd["spec"]["versions"] if item["served"] and item["storage"]]
    assert f"{crd['spec']['group']}/{version['name']}" == "keda.sh/v1alpha1"
    return _strict(version["schema"]["openAPIV3Schema"])


KEDA_SCHEMA = _keda_schema()


def _validate(doc: dict[str, Any], version: str) -> None:
    """kubernetes-validate for the built-in kinds, KEDA's CRD for its ScaledObject; strict for both."""
    if doc["apiVersion"] == "keda.sh/v1alpha1":
        assert doc["kind"] == "ScaledObject", f"unexpected KEDA kind {doc['kind']}"
        jsonschema.validate(doc, KEDA_SCHEMA)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def test_keda_schema_refuses_a_misspelt_field() -> None:
    """The strict CRD schema catches what KEDA would refuse (so its passing means something)."""
    [scaled] = [doc for doc in _docs(BASE / "autoscaling.yaml") if doc["metadata"]["name"] == "scenecast-gateway"]
    wrong = copy.deepcopy(scaled)
    wrong["spec"]["minReplicas"] = wrong["spec"].pop("minReplicaCount")  # the HPA's name for it
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        _validate(wrong, K8S_VERSIONS[-1])


def test_overlay_patches_target_objects_of_the_base() -> None:
    """A strategic-merge patch whose target or container name is misspelt would add an object or a container
    instead of changing one."""
    for patch_file in sorted(_patch_files()):
        for patch in _docs(patch_file):
            key = (patch["kind"], patch["metadata"]["name"])
            assert key in BASE_OBJECTS, f"{patch_file}: patches {key}, which the base does not have"
            patched = patch.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
            if patched:
                target = BASE_OBJECTS[key]["spec"]["template"]["spec"]["containers"]
                assert {c["name"] for c in patched} <= {c["name"] for c in target}, f"{patch_file}: unknown container"


# ---------------------------------------------------------------- Kubernetes: what each service must have


def _service_file(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = {doc["kind"]: doc for doc in _docs(BASE / f"{name}.yaml")}
    assert set(docs) == {"Deployment", "Service"}, f"{name}.yaml should hold one Deployment and one Service"
    for doc in docs.values():
        assert doc["metadata"]["name"] == f"scenecast-{name}"
    return docs["Deployment"], docs["Service"]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _config_env(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _check_service_auth(name: str, deployment: dict[str, Any], secret: str) -> None:
    """The service token comes from the operator's Secret (required, so a pod never starts open), not a value."""
    env = {item["name"]: item for item in _container(deployment)["env"]}
    assert env[AUTH_VARIABLE] == {
        "name": AUTH_VARIABLE,
        "valueFrom": {"secretKeyRef": {"name": secret, "key": AUTH_VARIABLE}},
    }, f"{name}: {AUTH_VARIABLE} must come from the Secret {secret}, required"


def _check_deployment(name: str, deployment: dict[str, Any]) -> None:
    """The invariants of STYLE's Deploy rule for one Deployment, in its base or rendered form."""
    module, _, port = SERVICES[name]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    env = _plain_env(container)
    assert container["command"] == ["python", "-m", module]
    assert env["LISTEN_ADDRESS"] == f"0.0.0.0:{port}"
    ports = {item["name"]: item["containerPort"] for item in container["ports"]}
    assert ports == {"grpc": port, "metrics": METRICS_PORT}

    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == port, f"{name}: {probe} is not a native gRPC probe on {port}"
    _check_hardening(name, deployment)

    drain = _drain_seconds(name, env)
    assert pod["terminationGracePeriodSeconds"] > drain, f"{name}: grace period not above the {drain} s drain"

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def _check_hardening(name: str, deployment: dict[str, Any]) -> None:
    """What every scenecast pod has: resources within their limits, the restricted security context, /tmp writable."""
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        request, limit = resources["requests"][kind], resources["limits"][kind]
        assert _quantity(request) <= _quantity(limit), f"{name}: {kind} request {request} above limit {limit}"

    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] == UID
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"

    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts.get("/tmp") in empty_dirs, f"{name}: /tmp must be an emptyDir (the root filesystem is read-only)"


def _check_web_deployment(deployment: dict[str, Any]) -> None:
    """The web API's Deployment, in its base or rendered form: `python -m web` on all interfaces of the pod, reaching
    the gateway's Service with the token from the optional Secret and no other secret, probed over HTTP (readiness
    follows the gateway, liveness does not), hardened like the services, and a grace above its drain."""
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert container["command"] == ["python", "-m", "web"]
    env = _plain_env(container)
    gateway_port = SERVICES["gateway"][2]
    assert env == {
        "WEB_HOST": "0.0.0.0",
        "WEB_PORT": str(WEB_PORT),
        "SCENECAST_GATEWAY": f"scenecast-gateway:{gateway_port}",
    }
    aliases = {alias for field in WebSettings.model_fields.values() for alias in field.validation_alias.choices}  # type: ignore[union-attr]
    assert set(env) | set(_secret_refs(container)) <= aliases, "a variable the web's settings do not read"
    assert WebSettings.model_validate(env).gateway == env["SCENECAST_GATEWAY"]
    assert _secret_refs(container) == {
        "SCENECAST_TOKEN": {"name": WEB_TOKEN_SECRET, "key": "SCENECAST_TOKEN", "optional": True}
    }, "the web gets the gateway token (optionally) and no provider key, service token or state URL"
    assert all("secretRef" not in source for source in container.get("envFrom", []))
    ports = {item["name"]: item["containerPort"] for item in container["ports"]}
    assert ports == {"http": WEB_PORT}
    app = create_app(WebSettings())
    probes = {probe: container[probe]["httpGet"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert all(check["port"] == "http" for check in probes.values())
    # Readiness asks the route that follows the gateway; start-up and liveness one the process answers by itself, so
    # a gateway outage never restarts the web.
    assert probes["readinessProbe"]["path"] == app.url_path_for("health")
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == app.url_path_for("openapi")
    _check_hardening("web", deployment)
    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_GRACE_SECONDS
    assert "replicas" not in deployment["spec"], "web: its ScaledObject owns the replica count"


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_follows_the_deploy_rule(name: str) -> None:
    deployment, _ = _service_file(name)
    _check_deployment(name, deployment)
    env_from = _container(deployment)["envFrom"]
    assert {"configMapRef": {"name": CONFIG_MAP}} in env_from
    secret = {"secretRef": {"name": KEYS_SECRET, "optional": True}}
    assert (secret in env_from) == (name in KEYED), f"{name}: only {KEYED} get the provider keys, optionally"
    _check_service_auth(name, deployment, AUTH_SECRET)
    _check_state_secret(name, deployment)
    # A count here would be reset by every apply, under the autoscaler's feet (a reset downwards cuts renders).
    assert "replicas" not in deployment["spec"], f"{name}: its ScaledObject owns the replica count"


def test_web_deployment_reaches_the_gateway_over_http_probes() -> None:
    deployment, service = _service_file("web")
    _check_web_deployment(deployment)
    assert ("Service", "scenecast-gateway") in BASE_OBJECTS
    assert service["spec"]["ports"] == [{"name": "http", "port": WEB_PORT, "targetPort": "http"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items() and pod_labels.items() >= WEB_PODS.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_gateway_readiness_follows_its_services_and_liveness_does_not() -> None:
    """Readiness asks the whole server (NOT_SERVING while a media service is down); start-up and liveness ask the
    `liveness` name, so an outage downstream never restarts the gateway."""
    container = _container(_service_file("gateway")[0])
    assert "service" not in container["readinessProbe"]["grpc"]
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS
    assert container["startupProbe"]["grpc"]["service"] == LIVENESS
    for name in DOWNSTREAM:
        called = _container(_service_file(name)[0])
        assert all("service" not in called[probe]["grpc"] for probe in ("readinessProbe", "livenessProbe"))


@pytest.mark.parametrize("name", SERVICES)
def test_service_exposes_grpc_and_metrics(name: str) -> None:
    deployment, service = _service_file(name)
    ports = {item["name"]: item for item in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == SERVICES[name][2] and ports["grpc"]["targetPort"] == "grpc"
    assert ports["metrics"]["port"] == METRICS_PORT and ports["metrics"]["targetPort"] == "metrics"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # Headless for the services the gateway calls: DNS answers with every pod, and round_robin spreads the calls.
    assert (service["spec"].get("clusterIP") == "None") == (name in DOWNSTREAM)


def test_gateway_reaches_every_service_it_calls_through_dns() -> None:
    env = _plain_env(_container(_service_file("gateway")[0]))
    fields = _settings_class("gateway").model_fields
    for name in DOWNSTREAM:
        variable = f"{name.upper()}_SERVICE_ADDRESS"
        assert variable.lower() in fields, f"the gateway's settings have no {variable}"
        assert env[variable] == f"dns:///scenecast-{name}:{SERVICES[name][2]}"
        assert ("Service", f"scenecast-{name}") in BASE_OBJECTS


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _scaled_objects() -> dict[str, dict[str, Any]]:
    """The base's ScaledObjects by the service they scale."""
    scaled = _by_kind(list(BASE_OBJECTS.values()), "ScaledObject")
    return {name.removeprefix("scenecast-"): doc for name, doc in scaled.items()}


def _prometheus_queries(scaled: dict[str, Any]) -> list[str]:
    return [trigger["metadata"]["query"] for trigger in scaled["spec"]["triggers"] if trigger["type"] == "prometheus"]


# The metadata KEDA's prometheus scaler reads (pkg/scalers/prometheus_scaler.go); a misspelt key is ignored by KEDA.
PROMETHEUS_METADATA = {"serverAddress", "query", "threshold", "activationThreshold", "ignoreNullValues", "unsafeSsl"}


def test_every_deployment_scales_on_work_in_flight_through_keda() -> None:
    """One ScaledObject per Deployment (KEDA owns its HPA; no plain HPA may target it too), two replicas at least;
    the gateway on renders in flight, the I/O-bound media services on their calls in flight and CPU, the assembler on
    CPU. Each Prometheus trigger is complete and divides a sum by a per-replica threshold (AverageValue)."""
    assert not [key for key in BASE_OBJECTS if key[0] == "HorizontalPodAutoscaler"]
    scaled_objects = _scaled_objects()
    assert set(scaled_objects) == set(DEPLOYMENTS)
    for name, scaled in scaled_objects.items():
        spec = scaled["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"scenecast-{name}"}
        assert ("Deployment", f"scenecast-{name}") in BASE_OBJECTS
        assert 2 <= spec["minReplicaCount"] < spec["maxReplicaCount"], f"{name}: losing one pod must leave one"
        kinds = [trigger["type"] for trigger in spec["triggers"]]
        expected = {"gateway": ["prometheus"], "assembler": ["cpu"], "web": ["cpu"]}.get(name, ["prometheus", "cpu"])
        assert kinds == expected, f"{name}: triggers {kinds}"
        for trigger in spec["triggers"]:
            if trigger["type"] == "cpu":
                assert trigger["metricType"] == "Utilization" and 0 < int(trigger["metadata"]["value"]) <= 100
                continue
            metadata = trigger["metadata"]
            assert trigger["metricType"] == "AverageValue"
            assert {"serverAddress", "query", "threshold"} <= set(metadata) <= PROMETHEUS_METADATA, name
            assert metadata["serverAddress"].startswith("http") and float(metadata["threshold"]) > 0
            assert re.fullmatch(r"sum\(scenecast_\w+\{[^}]*\}\)", metadata["query"]), metadata["query"]
            assert 'namespace="scenecast"' in metadata["query"], "the sum must count only this deployment's pods"
        if "prometheus" in kinds:
            # Prometheus down: replicas held, not dropped to the minimum.
            assert spec["fallback"]["replicas"] >= spec["minReplicaCount"]
            assert spec["fallback"]["behavior"] == "currentReplicasIfHigher"


def test_gateway_scale_down_drains_renders_one_replica_at_a_time() -> None:
    """A removed gateway drains for its grace; the next removal waits for that drain, and short dips in load remove
    nothing (stabilization window)."""
    deployment, _ = _service_file("gateway")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = _drain_seconds("gateway", _plain_env(_container(deployment)))
    assert grace > drain >= 60, "a render of a minute or more must be able to finish on a replica being removed"
    scale_down = _scaled_objects()["gateway"]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    scale_down = scale_down["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 600
    [policy] = scale_down["policies"]
    assert (policy["type"], policy["value"]) == ("Pods", 1) and policy["periodSeconds"] >= grace
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.fixture(scope="module")
def exported_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """The metric families each real service process exports on /metrics (the five started as in `make up`)."""
    with LocalStack(log_dir=tmp_path_factory.mktemp("metrics-logs")) as stack:
        families: dict[str, set[str]] = {}
        for name in SERVICES:
            url = f"http://127.0.0.1:{stack.metrics_ports[name]}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            families[name] = {family.name for family in text_string_to_metric_families(text)}
        yield families


def test_autoscalers_read_gauges_the_services_really_export(exported_metrics: dict[str, set[str]]) -> None:
    """Each query names a gauge that its target's process exports, and only RPCs that service has: a misspelt
    metric or method would read as zero in flight, and the autoscaler would never scale up."""
    for name, scaled in _scaled_objects().items():
        for query in _prometheus_queries(scaled):
            [metric_name] = re.findall(r"\b(scenecast_\w+)\{", query)
            assert metric_name in exported_metrics[name], f"{name} does not export {metric_name}"
            methods = re.findall(r'method=~?"([^"]+)"', query)
            for method in (m for pattern in methods for m in pattern.split("|")):
                assert method in SERVICE_RPCS[name].methods_by_name, f"{name} has no RPC {method}"
    assert re.findall(r"scenecast_\w+", _prometheus_queries(_scaled_objects()["gateway"])[0]) == [
        "scenecast_renders_in_flight"
    ]
    for name in (*IO_BOUND, "script"):
        assert "scenecast_rpcs_in_flight{" in _prometheus_queries(_scaled_objects()[name])[0]


def _check_disruption_budgets(docs: list[dict[str, Any]]) -> None:
    """Exactly one budget selects each Deployment's pods, letting one go at a time (never blocking a drain)."""
    budgets = list(_by_kind(docs, "PodDisruptionBudget").values())
    deployments = _by_kind(docs, "Deployment")
    assert deployments
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selecting = [budget for budget in budgets if _selects(budget["spec"]["selector"], labels)]
        assert len(selecting) == 1, f"{name}: {len(selecting)} disruption budgets select its pods"
        spec = selecting[0]["spec"]
        assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert len(budgets) == len(deployments), "a budget that selects no Deployment"


def test_every_deployment_has_a_disruption_budget() -> None:
    _check_disruption_budgets(list(BASE_OBJECTS.values()))


def _secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Environment variables taken from a Secret key, by name."""
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }


def _check_state_secret(name: str, deployment: dict[str, Any], secret: str = STATE_SECRET) -> None:
    """The shared state's URLs (which may hold passwords) come from scenecast-state (`secret` once kustomize has
    given a generated one its hashed name), required, never as values."""
    container = _container(deployment)
    refs = _secret_refs(container)
    expected = STATE_KEYS.get(name, set())
    assert {key for key, ref in refs.items() if ref["name"] == secret} == expected, name
    for key in expected:
        assert refs[key] == {"name": secret, "key": key}, f"{name}: {key} must be required, under its own name"
    urls = {"RENDER_STATE_URL", "SPEND_LEDGER_URL", "ASSET_CACHE_URL"}
    assert not urls & set(_plain_env(container)), f"{name}: a state URL inlined"


def test_gateway_keeps_results_on_a_shared_volume_in_a_folder_of_its_own() -> None:
    """RESULTS_DIR is a subfolder of a ReadWriteMany claim mounted on every replica: the mount point itself is
    root's, which the private-folder check refuses, while a folder the gateway creates inside is its own (fsGroup
    makes the mount group-writable)."""
    deployment, _ = _service_file("gateway")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"]: mount for mount in _container(deployment)["volumeMounts"]}
    [results] = [name for name, volume in volumes.items() if "persistentVolumeClaim" in volume]
    claim_name = volumes[results]["persistentVolumeClaim"]["claimName"]
    claim = BASE_OBJECTS[("PersistentVolumeClaim", claim_name)]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "subPath" not in mounts[results] and not mounts[results].get("readOnly")
    results_dir = Path(_plain_env(_container(deployment))["RESULTS_DIR"])
    mount_path = Path(mounts[results]["mountPath"])
    assert results_dir.parent == mount_path, "RESULTS_DIR must be a folder inside the mount, not the mount point"
    assert (
        pod["securityContext"]["fsGroup"] == UID and pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    )
    assert GatewaySettings(results_dir=str(results_dir)).output_dir == results_dir


def test_results_dir_inside_a_mount_made_by_fs_group_is_accepted() -> None:
    """The volume as fsGroup leaves it: root's, group 10001, group-writable and setgid. The gateway (uid 10001)
    refuses the mount point as another user's and creates RESULTS_DIR inside it as its own private folder. Needs root
    to make that owner and to run the check as uid 10001."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the folder another owner and run the check as uid 10001")
    outer = Path(tempfile.mkdtemp())
    try:
        outer.chmod(0o755)
        mount = outer / "scenecast"
        mount.mkdir()
        os.chown(mount, 0, UID)
        mount.chmod(0o2775)
        refused, made = _as_gateway_user(
            lambda: _private_dir_outcome(mount), lambda: str(private_dir(mount / "renders", "RESULTS_DIR"))
        )
        assert refused.startswith(f"RESULTS_DIR={mount} belongs to uid 0, not to this user"), refused
        renders = mount / "renders"
        assert made == str(renders)
        info = renders.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (UID, 0o700)
    finally:
        shutil.rmtree(outer)


def _private_dir_outcome(path: Path) -> str:
    try:
        private_dir(path, "RESULTS_DIR")
    except UnsafeStateLocation as error:
        return str(error)
    return "accepted"


def _as_gateway_user(*steps: Callable[[], str]) -> list[str]:
    """Runs `steps` in a forked child that has become uid/gid 10001 (the containers' user); returns what they
    returned, or raises with the child's error."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(UID)
            os.setuid(UID)
            answers = [step() for step in steps]
        except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the test
            answers, status = [repr(error)], 1
        with os.fdopen(write_end, "w") as pipe:
            pipe.write("\n".join(answers))
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        output = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output.splitlines()


def _disk_caches(name: str, env: dict[str, str], secret_env: set[str], config: dict[str, str]) -> int:
    """Bytes of cache a service keeps on its /tmp at most: the asset cache unless ASSET_CACHE_URL moves it to Redis,
    the assembler's segment cache."""
    if name == "assembler":
        return int(config["SEGMENT_CACHE_MAX_BYTES"])
    if name in IO_BOUND and "ASSET_CACHE_URL" not in secret_env | set(env):
        return int(config["ASSET_CACHE_MAX_BYTES"])
    return 0


@pytest.mark.parametrize("name", SERVICES)
def test_tmp_holds_the_caches_with_room_to_work(name: str) -> None:
    """/tmp (caches under XDG_CACHE_HOME=/tmp/cache) holds the full disk caches plus one asset of the largest size
    allowed being made beside them; a smaller emptyDir gets the pod evicted when the caches fill."""
    config = _config_env(BASE / "config.env")
    assert config["XDG_CACHE_HOME"].startswith("/tmp/")
    deployment, _ = _service_file(name)
    container = _container(deployment)
    [tmp] = [
        volume["emptyDir"]
        for volume in deployment["spec"]["template"]["spec"]["volumes"]
        if volume["name"] == {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/tmp"]
    ]
    room = int(config["MAX_ASSET_BYTES"]) if name in MEDIA else 0
    needed = _disk_caches(name, _plain_env(container), set(_secret_refs(container)), config) + room
    assert _quantity(tmp["sizeLimit"]) >= needed, f"{name}: /tmp {tmp['sizeLimit']} < {needed} bytes"


def test_disk_cache_sizing_counts_a_cache_left_on_disk() -> None:
    """Without ASSET_CACHE_URL the image service's cache is on its /tmp, which would then be too small."""
    config = _config_env(BASE / "config.env")
    assert _disk_caches("image", {}, set(), config) == int(config["ASSET_CACHE_MAX_BYTES"])
    assert _disk_caches("image", {}, {"ASSET_CACHE_URL"}, config) == 0


# ---------------------------------------------------------------- Kubernetes: the dev overlay's Redis and PostgreSQL


def _dev_files() -> list[dict[str, Any]]:
    return [doc for path in _resource_files(DEV / "kustomization.yaml") if DEV in path.parents for doc in _docs(path)]


def _check_stateful_set(stateful_set: dict[str, Any]) -> None:
    """A dev-grade dependency done properly: pinned Debian-based official image, its own volume, probes, the
    restricted security context, resources, and its password from the dev Secret."""
    pod = stateful_set["spec"]["template"]["spec"]
    container = _container(stateful_set)
    name = stateful_set["metadata"]["name"]
    assert re.fullmatch(r"(redis|postgres):\d+\.\d+(\.\d+)?-bookworm", container["image"]), container["image"]
    assert stateful_set["spec"]["serviceName"] == name and stateful_set["spec"]["replicas"] == 1
    [claim] = stateful_set["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["name"] in {mount["name"] for mount in container["volumeMounts"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "exec" in container[probe], f"{name}: no {probe}"
    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and security["seccompProfile"]["type"] == "RuntimeDefault"
    for kind in ("cpu", "memory"):
        assert _quantity(container["resources"]["requests"][kind]) <= _quantity(container["resources"]["limits"][kind])
    refs = _secret_refs(container)
    assert refs and all(ref["name"] == DEV_DEPS_SECRET and not ref.get("optional") for ref in refs.values())
    assert not any("PASSWORD" in key or "AUTH" in key for key in _plain_env(container)), f"{name}: inline password"
    assert not any("$(" in arg for arg in container.get("args", []) + container.get("command", [])), (
        f"{name}: a Secret expanded into the command line, where every process in the pod can read it"
    )


def test_dev_overlay_runs_redis_and_postgres_as_stateful_sets() -> None:
    docs = _dev_files()
    stateful_sets = _by_kind(docs, "StatefulSet")
    assert set(stateful_sets) == {"scenecast-redis", "scenecast-postgres"}
    for stateful_set in stateful_sets.values():
        _check_stateful_set(stateful_set)
    services = _by_kind(docs, "Service")
    assert services["scenecast-redis"]["spec"]["ports"] == [{"name": "redis", "port": 6379, "targetPort": "redis"}]
    assert services["scenecast-postgres"]["spec"]["ports"] == [
        {"name": "postgres", "port": 5432, "targetPort": "postgres"}
    ]
    assert not _by_kind(docs, "Secret"), "the dev passwords are made by hand, never committed"


def test_dev_redis_holds_the_caches_it_is_given() -> None:
    """maxmemory holds the asset cache's and the uploads' budgets (as this overlay sets them) with room for render
    state, never evicts (render state must stay), and the pod's memory limit is above it."""
    data = yaml.safe_load((DEV / "kustomization.yaml").read_text())
    [generator] = data["configMapGenerator"]
    config = {**_config_env(BASE / "config.env"), **dict(item.split("=", 1) for item in generator["literals"])}
    redis = _by_kind(_dev_files(), "StatefulSet")["scenecast-redis"]
    script = " ".join(_container(redis)["args"])
    maxmemory = re.search(r"--maxmemory (\d+)gb", script)
    assert maxmemory and "--maxmemory-policy noeviction" in script and "--appendonly yes" in script
    budget = int(config["ASSET_CACHE_MAX_BYTES"]) + int(config["MUSIC_UPLOADS_MAX_BYTES"])
    assert int(maxmemory.group(1)) * 2**30 >= budget + 2**28, "no room for render state beside the caches"
    assert _quantity(_container(redis)["resources"]["limits"]["memory"]) > int(maxmemory.group(1)) * 2**30
    GatewaySettings(
        asset_cache_url="redis://redis:6379/0", music_uploads_max_bytes=int(config["MUSIC_UPLOADS_MAX_BYTES"])
    )


def _check_dependency_policies(docs: list[dict[str, Any]]) -> None:
    """Redis only from the gateway and the media services with an asset cache; PostgreSQL only from the gateway."""
    policies = [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
    callers = {"scenecast-redis": ("redis", ["gateway", *IO_BOUND]), "scenecast-postgres": ("postgres", ["gateway"])}
    for name, stateful_set in _by_kind(docs, "StatefulSet").items():
        port, components = callers[name]
        labels = stateful_set["spec"]["template"]["metadata"]["labels"]
        sources = _ingress_sources(policies, labels, port)
        assert len(sources) == 1, f"{name}: {sources}"
        for component in ("gateway", *MEDIA, "web", "frontdoor"):
            assert _selects(sources[0]["podSelector"], {COMPONENT: component}) == (component in components), (
                f"{name} reachable from {component}: {component not in components}"
            )
        assert "namespaceSelector" not in sources[0]


def test_dev_dependencies_are_reached_only_by_their_clients() -> None:
    _check_dependency_policies(list(BASE_OBJECTS.values()) + _dev_files())


def test_cloud_state_example_is_valid_gateway_settings() -> None:
    """The example of the cloud overlay's state URLs passes the gateway's own checks (a wrong scheme would stop it)."""
    example = _config_env(CLOUD / "state.env.example")
    assert set(example) == STATE_KEYS["gateway"]
    GatewaySettings(**{key.lower(): value for key, value in example.items()})


def test_base_config_uses_the_offline_providers() -> None:
    config = _config_env(BASE / "config.env")
    assert (config["IMAGE_PROVIDER"], config["TTS_PROVIDER"], config["VIDEO_PROVIDER"]) == ("slides", "piper", "")
    assert config["SCRIPT_PROVIDER"] == "outline"
    assert config["METRICS_PORT"] == str(METRICS_PORT)
    # Metrics listen on loopback by default; in a pod the scraper comes from outside it.
    assert config["METRICS_ADDRESS"] == "0.0.0.0"
    _check_providers_exist(config)
    _check_values_are_settings(config)


def _check_values_are_settings(config: dict[str, str]) -> None:
    """Every shared setting the ConfigMap sets validates as the services read it (a misspelt policy fails here)."""
    fields = ServiceSettings.model_fields
    shared = {key: value for key, value in config.items() if key.lower() in fields}
    assert {"METRICS_ADDRESS", "PLAINTEXT_TOKEN_POLICY"} <= set(shared)
    ServiceSettings.model_validate({key.lower(): value for key, value in shared.items()})


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels and In/NotIn/Exists expressions) selects `labels`."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator] is False:
            return False
    return True


def _ingress_sources(policies: list[dict[str, Any]], labels: dict[str, str], port: str) -> list[dict[str, Any]]:
    """Every `from` peer that the policies selecting a pod with `labels` let in on the named `port`; a rule with no
    peers (anyone) comes back as {}."""
    sources: list[dict[str, Any]] = []
    for policy in policies:
        spec = policy["spec"]
        if "Ingress" not in spec["policyTypes"] or not _selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("ingress", []):
            if "ports" not in rule or any(item.get("port") == port for item in rule["ports"]):
                sources.extend(rule.get("from", [{}]))
    return sources


def _check_network_policies(docs: list[dict[str, Any]]) -> None:
    """Default deny; only the gateway reaches the media services, only the web API and the front door the gateway,
    only the front door the web API, and only the monitoring namespace any metrics port. Checked for the pods of every
    Deployment, so a new one is covered too."""
    policies = [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
    assert any(
        policy["spec"]["podSelector"] == {}
        and policy["spec"]["policyTypes"] == ["Ingress"]
        and not policy["spec"].get("ingress")
        for policy in policies
    ), "no default-deny ingress policy"
    deployments = [doc for doc in docs if doc["kind"] == "Deployment"]
    assert {doc["metadata"]["name"].removeprefix("scenecast-") for doc in deployments} == set(DEPLOYMENTS)
    scrape = [{"namespaceSelector": {"matchLabels": MONITORING}}]
    for deployment in deployments:
        name = deployment["metadata"]["name"].removeprefix("scenecast-")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        callers = {
            "gateway": {"grpc": [FRONT_DOOR, WEB_PODS], "metrics": scrape},
            "web": {"http": [FRONT_DOOR]},
        }.get(name, {"grpc": [{COMPONENT: "gateway"}], "metrics": scrape})
        for port, sources in callers.items():
            pods = [peer if "namespaceSelector" in peer else {"podSelector": {"matchLabels": peer}} for peer in sources]
            assert _ingress_sources(policies, labels, port) == pods, f"{name} on {port}"
        ports = {item["name"] for item in _container(deployment)["ports"]}
        assert ports == set(callers), f"{name}: a port no policy names would be closed without a word"


def test_network_policies_let_only_the_gateway_reach_the_services() -> None:
    _check_network_policies(list(BASE_OBJECTS.values()))


def test_network_policy_check_catches_an_open_door() -> None:
    """The check above fails for a policy that lets anyone reach the audio service (so its passing means something)."""
    docs = [*BASE_OBJECTS.values()]
    docs.append(
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "too-open"},
            "spec": {"podSelector": {"matchLabels": {COMPONENT: "audio"}}, "policyTypes": ["Ingress"], "ingress": [{}]},
        }
    )
    with pytest.raises(AssertionError, match="audio"):
        _check_network_policies(docs)


def _check_providers_exist(config: dict[str, str]) -> None:
    """A provider name nobody registered would only fail at the first render; building the registry fails now."""
    for variable, module in PROVIDER_REGISTRIES.items():
        if config.get(variable):
            importlib.import_module(module).build_registry(config[variable])


# ---------------------------------------------------------------- Kubernetes: the rendered output


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """`kubectl kustomize` of the base and the overlays; the cloud overlay in a copy with its examples filled in."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy)
    for name in ("provider-keys.env", "state.env"):
        target = copy / "overlays" / "cloud" / name
        shutil.copy(target.with_name(f"{name}.example"), target)
    return {
        "base": _kustomize(copy / "base"),
        "dev": _kustomize(copy / "overlays" / "dev"),
        "cloud": _kustomize(copy / "overlays" / "cloud"),
    }


@pytest.mark.parametrize("variant", ["base", "dev", "cloud"])
def test_rendered_variant_is_consistent(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    """What `kubectl apply -k` would send: valid objects, one namespace, every reference resolved (generated names
    carry a hash), and each pod's grace above the drain it ends up with."""
    docs = rendered[variant]
    for doc in docs:
        _validate(doc, K8S_VERSIONS[-1])
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    generated = {name.rsplit("-", 1)[0]: name for kind, name in names if kind == "Secret"}
    deployments = {
        doc["metadata"]["name"].removeprefix("scenecast-"): doc for doc in docs if doc["kind"] == "Deployment"
    }
    assert set(deployments) == set(DEPLOYMENTS)
    _check_web_deployment(deployments.pop("web"))
    for name, deployment in deployments.items():
        _check_deployment(name, deployment)
        for source in _container(deployment)["envFrom"]:
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            elif variant == "cloud":
                assert ("Secret", source["secretRef"]["name"]) in names
        _check_service_auth(name, deployment, AUTH_SECRET)
        _check_state_secret(name, deployment, generated.get(STATE_SECRET, STATE_SECRET))
        assert "replicas" not in deployment["spec"]
    _check_network_policies(docs)
    _check_disruption_budgets(docs)
    for scaled in _by_kind(docs, "ScaledObject").values():
        assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in names
    # Secrets the pods cannot start without: generated by the cloud overlay, else made by hand (never committed).
    pods = [_container(doc) for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")]
    required = {ref["name"] for pod in pods for ref in _secret_refs(pod).values() if not ref.get("optional")}
    required |= {
        source["secretRef"]["name"]
        for pod in pods
        for source in pod.get("envFrom", [])
        if "secretRef" in source and not source["secretRef"].get("optional")
    }
    by_hand = {"base": {AUTH_SECRET, STATE_SECRET}, "dev": {AUTH_SECRET, STATE_SECRET, DEV_DEPS_SECRET}}
    assert required - set(generated.values()) == by_hand.get(variant, {AUTH_SECRET})
    if variant == "dev":
        assert set(_by_kind(docs, "StatefulSet")) == {"scenecast-redis", "scenecast-postgres"}
        _check_dependency_policies(docs)
    else:
        assert not _by_kind(docs, "StatefulSet"), "dev-grade databases only in overlays/dev"
    # The operator creates the service token's Secret: nothing rendered holds it, inline or generated.
    assert ("Secret", AUTH_SECRET) not in names
    assert all(
        item.get("name") != AUTH_VARIABLE or "value" not in item
        for doc in docs
        if doc["kind"] == "Deployment"
        for item in _container(doc).get("env", [])
    )
    [config] = [doc["data"] for doc in docs if doc["kind"] == "ConfigMap"]
    assert AUTH_VARIABLE not in config and "SERVICE_AUTH_TOKENS_FILE" not in config
    _check_providers_exist(config)
    _check_values_are_settings(config)
    if variant == "cloud":
        assert (config["IMAGE_PROVIDER"], config["TTS_PROVIDER"]) == ("flux", "openai")
        secrets = {doc["metadata"]["name"].rsplit("-", 1)[0]: doc for doc in docs if doc["kind"] == "Secret"}
        assert set(secrets) == set(generated) == {KEYS_SECRET, STATE_SECRET}
        assert set(secrets[KEYS_SECRET]["data"]) == set(KEY_VARIABLES)
        assert set(secrets[STATE_SECRET]["data"]) == STATE_KEYS["gateway"]
        assert config["GRPC_REFLECTION"] == "false"
    else:
        assert "GRPC_REFLECTION" not in config  # on by default: handy while trying the base out


# ---------------------------------------------------------------- docker-compose.yml


def _compose() -> dict[str, Any]:
    compose = PyOptions(apply_merge=True).from_yaml(COMPOSE_FILE.read_text())
    compose.validate()
    PyCompose(compose).to_spec()
    return compose.to_dict()


def _default(value: str | None) -> str | None:
    """The value compose gives `${VAR:-default}` when VAR is unset (no .env), or the literal value."""
    if value is None:
        return None
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_compose_file_matches_the_compose_spec() -> None:
    assert set(_compose()["services"]) == {*SERVICES, "service-token", "web"}


def test_compose_web_is_the_front_door_on_the_hosts_loopback() -> None:
    """The HTTP API runs its module, reaches the gateway by its service name, waits for it to be healthy, holds no
    provider key or service token, and is published on the host's loopback only."""
    web = _compose()["services"]["web"]
    env = web["environment"]
    assert web["command"] == ["python", "-m", "web"]
    assert importlib.util.find_spec("web.__main__") is not None
    assert env["SCENECAST_GATEWAY"] == f"gateway:{SERVICES['gateway'][2]}" and env["WEB_HOST"] == "0.0.0.0"
    assert web["ports"] == [f"127.0.0.1:{env['WEB_PORT']}:{env['WEB_PORT']}"]
    assert f"127.0.0.1:{env['WEB_PORT']}/v1/health" in " ".join(web["healthcheck"]["test"])
    assert web["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert web["read_only"] is True and "/tmp" in web["tmpfs"] and web["user"].split(":")[0] == str(UID)
    assert not {key for key in env if key in KEY_VARIABLES} and "SERVICE_AUTH_TOKENS_FILE" not in env
    assert "volumes" not in web, "the service token stays with the services"


def test_compose_turns_service_auth_on_with_a_generated_token() -> None:
    """A one-shot service writes a random token into a volume before anything starts; every service reads it from
    there (read-only), and no token value is in the file."""
    services = _compose()["services"]
    writer = services["service-token"]
    assert writer["command"] == ["python", "-m", "services.common.auth", COMPOSE_TOKEN_FILE]
    assert writer["user"].split(":")[0] == str(UID) and writer["read_only"] is True
    volume = writer["volumes"][0].split(":")[0]
    assert writer["volumes"] == [f"{volume}:/run/scenecast-auth"] and volume in _compose()["volumes"]
    for name in SERVICES:
        service = services[name]
        assert service["environment"]["SERVICE_AUTH_TOKENS_FILE"] == COMPOSE_TOKEN_FILE
        assert AUTH_VARIABLE not in service["environment"], f"{name}: a token value in the compose file"
        assert f"{volume}:/run/scenecast-auth:ro" in service["volumes"]
        assert service["depends_on"]["service-token"] == {"condition": "service_completed_successfully"}
        assert _default(service["environment"]["PLAINTEXT_TOKEN_POLICY"]) == "allow"
    # The volume takes the image folder's owner and mode: uid 10001 writes the token, nobody else reads it.
    assert "install -d -o 10001 -g 10001 -m 0700 /run/scenecast-auth" in " ".join(_stages()[-1])


def test_compose_token_writer_makes_a_private_token_once(tmp_path: Path) -> None:
    path = tmp_path / "service-token"
    assert write_token_file(str(path)) is True
    token = path.read_text()
    assert len(token) == 64 and (path.stat().st_mode & 0o777) == 0o600
    assert write_token_file(str(path)) is False and path.read_text() == token  # kept across `up` runs
    # A link planted where the token goes is not followed.
    target = tmp_path / "elsewhere"
    (tmp_path / "planted").symlink_to(target)
    with pytest.raises(ValueError, match="is not a regular file"):
        write_token_file(str(tmp_path / "planted"))
    assert not target.exists()


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    """docker-compose 1.29 (Debian's) alongside the spec: both must read the file, and a .env beside it reaches the
    containers with no env_file."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    command = [binary, "-f", "docker-compose.yml", "config"]
    # Only PATH: a provider variable set in the caller's shell would override the .env written below.
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    result = subprocess.run([*command, "-q"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (tmp_path / ".env").write_text("IMAGE_PROVIDER=flux\nREPLICATE_API_TOKEN=r8_test\n")
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["image"]["environment"]["IMAGE_PROVIDER"] == "flux"
    assert services["image"]["environment"]["REPLICATE_API_TOKEN"] == "r8_test"
    assert services["audio"]["environment"]["TTS_PROVIDER"] == "piper"


@pytest.mark.parametrize("name", SERVICES)
def test_compose_service_runs_its_module_safely(name: str) -> None:
    module, _, port = SERVICES[name]
    service = _compose()["services"][name]
    env = service["environment"]
    assert service["command"] == ["python", "-m", module]
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} cannot run with python -m"
    assert env["LISTEN_ADDRESS"] == f"0.0.0.0:{port}" and env["METRICS_PORT"] == str(METRICS_PORT)
    assert env["METRICS_ADDRESS"] == "0.0.0.0"
    assert env["TMPDIR"] == "/tmp" and env["XDG_CACHE_HOME"].startswith("/tmp/")
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert service["user"].split(":")[0] == str(UID)
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "services.common.healthcheck"]
    assert parse_duration(service["stop_grace_period"]) > _drain_seconds(name, {})
    assert "env_file" not in service, "a required env_file fails when .env is missing (see the comment at the top)"
    assert {key for key in env if key in KEY_VARIABLES} == SERVICE_KEYS.get(name, set())


def test_compose_gateway_waits_for_healthy_services() -> None:
    gateway = _compose()["services"]["gateway"]
    assert gateway["depends_on"] == {
        **{name: {"condition": "service_healthy"} for name in DOWNSTREAM},
        "service-token": {"condition": "service_completed_successfully"},
    }
    assert [port.split(":")[-1] for port in gateway["ports"]] == ["50050"]
    for name in DOWNSTREAM:
        assert gateway["environment"][f"{name.upper()}_SERVICE_ADDRESS"] == f"dns:///{name}:{SERVICES[name][2]}"


def test_compose_defaults_are_the_offline_providers() -> None:
    services = _compose()["services"]
    defaults = {
        "IMAGE_PROVIDER": _default(services["image"]["environment"]["IMAGE_PROVIDER"]),
        "TTS_PROVIDER": _default(services["audio"]["environment"]["TTS_PROVIDER"]),
        "VIDEO_PROVIDER": _default(services["video"]["environment"]["VIDEO_PROVIDER"]),
        "SCRIPT_PROVIDER": _default(services["script"]["environment"]["SCRIPT_PROVIDER"]),
    }
    assert defaults == {
        "IMAGE_PROVIDER": "slides",
        "TTS_PROVIDER": "piper",
        "VIDEO_PROVIDER": "",
        "SCRIPT_PROVIDER": "outline",
    }
    _check_providers_exist({key: value or "" for key, value in defaults.items()})


def test_compose_passes_on_every_documented_variable() -> None:
    """A variable .env.example documents but no container receives would be silently ignored under compose. Per-process
    settings and host temp folders stay out on purpose."""
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    passed = {key for service in _compose()["services"].values() for key in service.get("environment", {})}
    # SERVICE_AUTH_TOKENS: compose generates the token and passes SERVICE_AUTH_TOKENS_FILE (both at once is an error).
    # MCP_*: the MCP server runs beside an agent host (stdio), not as a compose service.
    kept_out = {"LISTEN_ADDRESS", "SHUTDOWN_GRACE_SECONDS", "VIDEO_TMP_DIR", "ASSEMBLER_TMP_DIR", "SERVICE_AUTH_TOKENS"}
    kept_out |= {"MCP_VIDEO_DIR", "MCP_PORT"}
    # PORT_REPORT_FILE: per process, set by `scenecast serve` and --start-services.
    kept_out.add("PORT_REPORT_FILE")
    assert documented - kept_out - passed == set()


# ---------------------------------------------------------------- Dockerfile (no engine here to build it)


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, spaces collapsed, comments dropped) per build stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in (" ".join(raw.split()) for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append(line)
    return stages


def test_dockerfile_builds_from_python_slim_in_stages() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"FROM python:3\.11-slim(-bookworm)?( AS \w+)?", stage[0]), stage[0]


def test_dockerfile_generates_the_grpc_code_like_the_makefile() -> None:
    """gen/ is never committed, so the build must make it, with the same protoc flags as `make protos`."""
    build = " ".join(" ".join(stage) for stage in _stages()[:-1])
    makefile = (ROOT / "Makefile").read_text()
    flags = re.search(r"-m grpc_tools\.protoc (.*) \$\(PROTOS\)", makefile)
    assert flags, "the Makefile's protoc rule changed"
    assert f"-m grpc_tools.protoc {flags.group(1)} protos/scenecast/v1/*.proto" in build
    assert "gen/scenecast/__init__.py" in build and "gen/scenecast/v1/__init__.py" in build
    install = [word for word in re.findall(r"pip install[^&;]*", build) if re.search(r"\s\.(\s|$)", word + " ")]
    editable = {"-e", "--editable"}
    assert install and not any(editable & set(shlex.split(command)) for command in install), "install it, not -e"


def test_dockerfile_copies_every_package_and_no_secret() -> None:
    build = _stages()[0]
    copied = {shlex.split(line)[1].rstrip("/") for line in build if line.startswith("COPY ")}
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench"}  # not shipped
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", "gen", ".git", "out", "node_modules"} <= ignored
    assert not copied & ignored


def test_dockerfile_runtime_is_non_root_with_fonts() -> None:
    runtime = " ".join(_stages()[-1])
    user = re.findall(r"USER (\S+)", runtime)
    assert user and user[-1].split(":")[0] == str(UID), "the runtime runs as the uid the manifests expect"
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*fonts-dejavu-core", runtime)
    assert "fontconfig" in runtime and "rm -rf /var/lib/apt/lists/*" in runtime
    for variable in ("TMPDIR=/tmp", "XDG_CACHE_HOME=/tmp/cache", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert variable in runtime
    assert "WORKDIR /app" in runtime


# ---------------------------------------------------------------- the healthcheck module


def test_healthcheck_dials_loopback_for_wildcard_listen_addresses() -> None:
    assert local_address("0.0.0.0:50051") == "127.0.0.1:50051"
    assert local_address("[::]:50052") == "[::1]:50052"
    assert local_address("10.1.2.3:50053") == "10.1.2.3:50053"


def _healthcheck(*args: str, listen_address: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LISTEN_ADDRESS": listen_address}
    command = [sys.executable, "-m", "services.common.healthcheck", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def image_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`python -m services.image` as compose runs it, on a free loopback port; yields the port once it is SERVING."""
    port = _free_port()
    env = {**os.environ, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "METRICS_PORT": "0", "IMAGE_PROVIDER": "slides"}
    # A folder of its own, so a developer's .env is not read.
    process = subprocess.Popen(
        [sys.executable, "-m", "services.image"],
        cwd=tmp_path_factory.mktemp("image-service"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _healthcheck(f"127.0.0.1:{port}").returncode != 0:
            assert process.poll() is None, f"the image service exited: {process.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the image service did not become SERVING within 60 s"
            time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_healthcheck_passes_for_a_serving_server(image_service: int) -> None:
    # No ADDRESS: read from LISTEN_ADDRESS as in a container, the wildcard host dialled on loopback.
    result = _healthcheck(listen_address=f"0.0.0.0:{image_service}")
    assert result.returncode == 0 and result.stdout.strip() == f"127.0.0.1:{image_service}: SERVING"
    result = _healthcheck(f"127.0.0.1:{image_service}", "--service", "scenecast.v1.ImageService")
    assert result.returncode == 0, result.stdout


def test_healthcheck_fails_for_an_unknown_service(image_service: int) -> None:
    result = _healthcheck(f"127.0.0.1:{image_service}", "--service", "scenecast.v1.NoSuchService")
    assert result.returncode == 1 and "NOT_FOUND" in result.stdout


def test_healthcheck_fails_for_a_closed_port() -> None:
    # Bound but not listening: nothing can take the port while the check runs, and connecting is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = _healthcheck(f"127.0.0.1:{port}", "--timeout", "2")
    assert result.returncode == 1 and "UNAVAILABLE" in result.stdout
    assert len(result.stdout.strip().splitlines()) == 1


def test_healthcheck_needs_an_address() -> None:
    result = _healthcheck()
    assert result.returncode == 2 and "LISTEN_ADDRESS" in result.stderr
