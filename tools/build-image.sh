#!/usr/bin/env bash
# `make image`: builds the container image from the Dockerfile, tagged scenecast:<version> (the tag the Kubernetes
# manifests' `images:` entry in deploy/k8s/base/kustomization.yaml names) and scenecast:local (docker-compose.yml's).
# Without a Docker engine it says so and fails, so that `make image && docker push ...` stops there.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
if ! command -v docker >/dev/null 2>&1; then
    echo "make image: the docker command is not installed; install Docker (https://docs.docker.com/engine/install/)" \
        "and run make image again" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "make image: no Docker engine answers (docker info failed); start it (sudo systemctl start docker) or set" \
        "DOCKER_HOST to one, then run make image again" >&2
    exit 1
fi
docker build --tag "scenecast:${version}" --tag scenecast:local .
echo "built scenecast:${version} (also tagged scenecast:local)"
