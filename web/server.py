"""`python -m web`: serves the API with uvicorn; `python -m web openapi` prints the OpenAPI document instead."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from services.common.observability import configure
from services.common.ports import report_ports
from services.common.settings import ServiceSettings
from web.app import create_app, openapi_text
from web.config import WebSettings

# Seconds open requests (a download, an event stream) get after SIGTERM; below Kubernetes' termination grace.
SHUTDOWN_GRACE_SECONDS = 5


def main() -> None:
    settings = WebSettings()
    app = create_app(settings)
    if sys.argv[1:] == ["openapi"]:
        # The document does not depend on the settings; regenerate web/openapi.json with this.
        sys.stdout.write(openapi_text(app))
        return
    # Logging as every service logs (JSON lines, secrets redacted); the web API makes no spans and serves no /metrics
    # yet.
    service_settings = ServiceSettings()
    configure("web", settings.log_format, settings.log_level, metrics_port=0, tracing=service_settings)
    serve(app, settings.host, settings.port, service_settings.port_report_file)


def serve(app: ASGIApp, host: str, port: int, port_report_file: str = "") -> None:
    """Runs an ASGI app with uvicorn until SIGTERM, which drains open requests and exits with status 0; the port it
    got is written to `port_report_file` (when set) before it serves."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    # Bound here rather than by uvicorn, so that the port it got (WEB_PORT=0: a free one) can be reported before
    # serving; connections that arrive meanwhile wait in the backlog.
    listener = config.bind_socket()
    listener.listen()
    report_ports(port_report_file, http=listener.getsockname()[1])
    # uvicorn drains on SIGTERM, then raises the signal again so that its default action ends the process (status
    # -15); a drained shutdown is a clean exit here, as for the gRPC services.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.Server(config).run(sockets=[listener])


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)
