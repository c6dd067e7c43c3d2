"""`make image` and the Kubernetes manifests agree on the image (issue 19): the manifests name it `scenecast`, the
base's kustomize `images:` entry alone sets its tag (the package's version, which `make image` tags), and without a
Docker engine `make image` says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BUILD_IMAGE = ROOT / "tools" / "build-image.sh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _containers(manifest: Path) -> list[dict[str, str]]:
    containers = []
    for doc in yaml.safe_load_all(manifest.read_text()):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        containers += spec.get("containers", []) + spec.get("initContainers", [])
    return containers


def test_the_base_kustomization_alone_sets_the_image_tag_to_the_package_version() -> None:
    kustomizations = {path: yaml.safe_load(path.read_text()) for path in K8S.rglob("kustomization.yaml")}
    base = kustomizations.pop(K8S / "base" / "kustomization.yaml")
    assert base["images"] == [{"name": "scenecast", "newTag": VERSION}]
    for path, kustomization in kustomizations.items():
        for entry in kustomization.get("images", []):
            assert "newTag" not in entry and "digest" not in entry, f"{path} sets the tag again: {entry}"


def test_every_scenecast_container_names_the_image_that_images_rewrites() -> None:
    images = {
        container["image"]
        for manifest in K8S.rglob("*.yaml")
        if manifest.name != "kustomization.yaml"
        for container in _containers(manifest)
        if "image" in container  # a patch (overlays/cloud/drain.yaml) leaves the image as it is
    }
    ours = {image for image in images if image.split("/")[-1].startswith("scenecast")}
    assert ours == {"scenecast"}, ours


def test_make_image_says_when_docker_is_missing(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    (tmp_path / "bin").mkdir()
    for tool in ("sed", "dirname"):
        (tmp_path / "bin" / tool).symlink_to(shutil.which(tool) or tool)
    result = subprocess.run(
        [bash, str(BUILD_IMAGE)], env={"PATH": str(tmp_path / "bin")}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == (
        "make image: the docker command is not installed; install Docker (https://docs.docker.com/engine/install/) "
        "and run make image again\n"
    )


def test_make_image_says_when_no_docker_engine_answers(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker command is not installed (the test above covers that case)")
    nowhere = tmp_path / "no-engine.sock"
    result = subprocess.run(
        [str(BUILD_IMAGE)],
        env={**os.environ, "DOCKER_HOST": f"unix://{nowhere}", "DOCKER_CONTEXT": "default"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "make image: no Docker engine answers (docker info failed); start it (sudo systemctl start docker) or set "
        "DOCKER_HOST to one, then run make image again\n"
    )
