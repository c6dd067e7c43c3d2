"""The deployment files checked offline: Kubernetes manifests, docker-compose.yml, the Dockerfile, the healthcheck."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose, parse_duration
from compose_spec.compose_spec import PyOptions
from pydantic_settings import BaseSettings

from services.common.auth import write_token_file
from services.common.healthcheck import local_address
from services.common.server import LIVENESS
from services.common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
CLOUD = K8S / "overlays" / "cloud"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Process name -> (module run with `python -m`, module holding its settings class, gRPC port).
SERVICES: dict[str, tuple[str, str, int]] = {
    "gateway": ("gateway", "gateway.config", 50050),
    "image": ("services.image", "services.image.config", 50051),
    "audio": ("services.audio", "services.audio.config", 50052),
    "video": ("services.video", "services.video.config", 50053),
    "assembler": ("services.assembler", "services.assembler.config", 50054),
}
MEDIA = ("image", "audio", "video", "assembler")
# The services that call paid providers, and so the only ones given the keys.
KEYED = ("image", "audio", "video")
# The keys each service's providers need; nothing else gets a key.
SERVICE_KEYS = {
    "image": {"OPENAI_API_KEY", "REPLICATE_API_TOKEN"},
    "audio": {"OPENAI_API_KEY", "REPLICATE_API_TOKEN"},
    "video": {"REPLICATE_API_TOKEN", "SYNTHESIA_API_KEY", "HEYGEN_API_KEY"},
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
}
# The oldest Kubernetes the manifests promise to suit, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


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
        kubernetes_validate.validate(doc, version, strict=True)


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

    drain = _drain_seconds(name, env)
    assert pod["terminationGracePeriodSeconds"] > drain, f"{name}: grace period not above the {drain} s drain"

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_follows_the_deploy_rule(name: str) -> None:
    deployment, _ = _service_file(name)
    _check_deployment(name, deployment)
    env_from = _container(deployment)["envFrom"]
    assert {"configMapRef": {"name": CONFIG_MAP}} in env_from
    secret = {"secretRef": {"name": KEYS_SECRET, "optional": True}}
    assert (secret in env_from) == (name in KEYED), f"{name}: only {KEYED} get the provider keys, optionally"
    _check_service_auth(name, deployment, AUTH_SECRET)
    if name in MEDIA:
        assert "replicas" not in deployment["spec"], f"{name}: its HPA owns the replica count"


def test_gateway_readiness_follows_its_services_and_liveness_does_not() -> None:
    """Readiness asks the whole server (NOT_SERVING while a media service is down); start-up and liveness ask the
    `liveness` name, so an outage downstream never restarts the gateway."""
    container = _container(_service_file("gateway")[0])
    assert "service" not in container["readinessProbe"]["grpc"]
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS
    assert container["startupProbe"]["grpc"]["service"] == LIVENESS
    for name in MEDIA:
        media = _container(_service_file(name)[0])
        assert all("service" not in media[probe]["grpc"] for probe in ("readinessProbe", "livenessProbe"))


@pytest.mark.parametrize("name", SERVICES)
def test_service_exposes_grpc_and_metrics(name: str) -> None:
    deployment, service = _service_file(name)
    ports = {item["name"]: item for item in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == SERVICES[name][2] and ports["grpc"]["targetPort"] == "grpc"
    assert ports["metrics"]["port"] == METRICS_PORT and ports["metrics"]["targetPort"] == "metrics"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # Headless for the media services: DNS answers with every pod, and the gateway's round_robin spreads the calls.
    assert (service["spec"].get("clusterIP") == "None") == (name in MEDIA)


def test_gateway_reaches_every_media_service_through_dns() -> None:
    env = _plain_env(_container(_service_file("gateway")[0]))
    fields = _settings_class("gateway").model_fields
    for name in MEDIA:
        variable = f"{name.upper()}_SERVICE_ADDRESS"
        assert variable.lower() in fields, f"the gateway's settings have no {variable}"
        assert env[variable] == f"dns:///scenecast-{name}:{SERVICES[name][2]}"
        assert ("Service", f"scenecast-{name}") in BASE_OBJECTS


def test_media_services_scale_on_cpu() -> None:
    hpas = {key[1]: doc for key, doc in BASE_OBJECTS.items() if key[0] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {f"scenecast-{name}" for name in MEDIA}
    for name, hpa in hpas.items():
        spec = hpa["spec"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert ("Deployment", name) in BASE_OBJECTS
        assert 1 <= spec["minReplicas"] < spec["maxReplicas"]
        assert [metric["resource"]["name"] for metric in spec["metrics"]] == ["cpu"]


def test_base_config_uses_the_offline_providers() -> None:
    config = _config_env(BASE / "config.env")
    assert (config["IMAGE_PROVIDER"], config["TTS_PROVIDER"], config["VIDEO_PROVIDER"]) == ("slides", "piper", "")
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
    """Default deny; only the gateway reaches the media services, only the front door the gateway, and only the
    monitoring namespace any metrics port. Checked for the pods of every Deployment, so a new one is covered too."""
    policies = [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
    assert any(
        policy["spec"]["podSelector"] == {}
        and policy["spec"]["policyTypes"] == ["Ingress"]
        and not policy["spec"].get("ingress")
        for policy in policies
    ), "no default-deny ingress policy"
    deployments = [doc for doc in docs if doc["kind"] == "Deployment"]
    assert {doc["metadata"]["name"].removeprefix("scenecast-") for doc in deployments} == set(SERVICES)
    for deployment in deployments:
        name = deployment["metadata"]["name"].removeprefix("scenecast-")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        callers = FRONT_DOOR if name == "gateway" else {COMPONENT: "gateway"}
        assert _ingress_sources(policies, labels, "grpc") == [{"podSelector": {"matchLabels": callers}}], name
        assert _ingress_sources(policies, labels, "metrics") == [{"namespaceSelector": {"matchLabels": MONITORING}}]
        ports = {item["name"] for item in _container(deployment)["ports"]}
        assert ports == {"grpc", "metrics"}, f"{name}: a port no policy names would be closed without a word"


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
    """`kubectl kustomize` of the base and the cloud overlay; the overlay in a copy with the example keys filled in."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy)
    keys = copy / "overlays" / "cloud" / "provider-keys.env"
    shutil.copy(keys.with_name("provider-keys.env.example"), keys)
    return {"base": _kustomize(copy / "base"), "cloud": _kustomize(copy / "overlays" / "cloud")}


@pytest.mark.parametrize("variant", ["base", "cloud"])
def test_rendered_variant_is_consistent(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    """What `kubectl apply -k` would send: valid objects, one namespace, every reference resolved (generated names
    carry a hash), and each pod's grace above the drain it ends up with."""
    docs = rendered[variant]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    deployments = {
        doc["metadata"]["name"].removeprefix("scenecast-"): doc for doc in docs if doc["kind"] == "Deployment"
    }
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        _check_deployment(name, deployment)
        for source in _container(deployment)["envFrom"]:
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            elif variant == "cloud":
                assert ("Secret", source["secretRef"]["name"]) in names
        _check_service_auth(name, deployment, AUTH_SECRET)
    _check_network_policies(docs)
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
        [secret] = [doc for doc in docs if doc["kind"] == "Secret"]
        assert set(secret["data"]) == set(KEY_VARIABLES)
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
    assert set(_compose()["services"]) == {*SERVICES, "service-token"}


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


def test_compose_gateway_waits_for_healthy_media_services() -> None:
    gateway = _compose()["services"]["gateway"]
    assert gateway["depends_on"] == {
        **{name: {"condition": "service_healthy"} for name in MEDIA},
        "service-token": {"condition": "service_completed_successfully"},
    }
    assert [port.split(":")[-1] for port in gateway["ports"]] == ["50050"]
    for name in MEDIA:
        assert gateway["environment"][f"{name.upper()}_SERVICE_ADDRESS"] == f"dns:///{name}:{SERVICES[name][2]}"


def test_compose_defaults_are_the_offline_providers() -> None:
    services = _compose()["services"]
    defaults = {
        "IMAGE_PROVIDER": _default(services["image"]["environment"]["IMAGE_PROVIDER"]),
        "TTS_PROVIDER": _default(services["audio"]["environment"]["TTS_PROVIDER"]),
        "VIDEO_PROVIDER": _default(services["video"]["environment"]["VIDEO_PROVIDER"]),
    }
    assert defaults == {"IMAGE_PROVIDER": "slides", "TTS_PROVIDER": "piper", "VIDEO_PROVIDER": ""}
    _check_providers_exist({key: value or "" for key, value in defaults.items()})


def test_compose_passes_on_every_documented_variable() -> None:
    """A variable .env.example documents but no container receives would be silently ignored under compose. Per-process
    settings and host temp folders stay out on purpose."""
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    passed = {key for service in _compose()["services"].values() for key in service.get("environment", {})}
    # SERVICE_AUTH_TOKENS: compose generates the token and passes SERVICE_AUTH_TOKENS_FILE (both at once is an error).
    kept_out = {"LISTEN_ADDRESS", "SHUTDOWN_GRACE_SECONDS", "VIDEO_TMP_DIR", "ASSEMBLER_TMP_DIR", "SERVICE_AUTH_TOKENS"}
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
