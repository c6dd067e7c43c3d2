"""Settings every service has, read once from the environment (and a .env file) with pydantic-settings."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Each service subclasses this and sets its own `listen_address` and `shutdown_grace_seconds` defaults."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # host:port to listen on; port 0 picks a free one.
    listen_address: str = "127.0.0.1:0"
    # Seconds running calls get to finish after SIGTERM (keep it below Kubernetes' termination grace period).
    shutdown_grace_seconds: float = 5.0
    # Port of the Prometheus /metrics HTTP endpoint; 0 turns it off.
    metrics_port: int = 0
    # "json" for one JSON object per line (with render and trace ids), "text" for humans.
    log_format: Literal["json", "text"] = "json"
    # Python logging level.
    log_level: str = "INFO"
    # "console" prints finished trace spans to stderr; "none" only propagates trace context.
    otel_traces_exporter: Literal["none", "console"] = "none"
