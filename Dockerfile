# syntax=docker/dockerfile:1
# One image for the six scenecast processes. The command picks the process:
#   python -m services.image | services.audio | services.video | services.assembler | services.script
#   | gateway (the default)
# Each reads LISTEN_ADDRESS (set it to 0.0.0.0:<port> in a container) and METRICS_PORT (see docker-compose.yml and
# deploy/k8s/). Runs as uid 10001 with a read-only root filesystem: only /tmp has to be writable.

# ---- build: generate the gRPC code (never committed) and install the project into a venv ----
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# grpcio-tools lives in its own venv: it is needed to generate gen/, not to run the services.
RUN python -m venv /opt/protoc && /opt/protoc/bin/pip install 'grpcio-tools==1.85.*'
COPY protos/ protos/
# Same command as the Makefile's gen/.stamp rule.
RUN mkdir -p gen \
    && /opt/protoc/bin/python -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen \
        protos/scenecast/v1/*.proto \
    && touch gen/scenecast/__init__.py gen/scenecast/v1/__init__.py

# Dependencies first, in their own layer, so a source change does not reinstall them.
RUN python -m venv /opt/venv
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && /opt/venv/bin/pip install -r requirements.txt

# The project itself, non-editable: the hand-written packages and gen/ become ordinary site-packages.
COPY services/ services/
COPY gateway/ gateway/
COPY scenecast_cli/ scenecast_cli/
COPY web/ web/
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -c "import scenecast.v1.render_service_pb2_grpc, services.image.server, gateway.server, web.app"

# ---- runtime ----
FROM python:3.11-slim-bookworm
# DejaVu for slides and burned-in captions; fontconfig for fc-match, which the font lookup uses. /run/scenecast-auth:
# where compose's service-token writes the service token; a new volume mounted there takes this owner and mode.
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core fontconfig \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 scenecast \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin scenecast \
    && install -d -o 10001 -g 10001 -m 0700 /run/scenecast-auth

COPY --from=build /opt/venv /opt/venv

# TMPDIR: every temp file (FFmpeg working folders, downloads) goes to /tmp, the one writable mount.
# XDG_CACHE_HOME: fontconfig's per-user cache and scenecast's caches, under /tmp for the same reason; XDG_STATE_HOME:
# results, the spend ledger and music uploads unless their settings point at a volume. The .pyc files were compiled at
# install time, so Python needs to write none.
ENV PATH=/opt/venv/bin:$PATH \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    XDG_STATE_HOME=/tmp/state \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
# gRPC: gateway 50050, image 50051, audio 50052, video 50053, assembler 50054, script 50055; Prometheus /metrics: 9464.
EXPOSE 50050 50051 50052 50053 50054 50055 9464
CMD ["python", "-m", "gateway"]
