"""Settings every service has, read once from the environment (and a .env file) with pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Each service subclasses this and sets its own `listen_address` and `shutdown_grace_seconds` defaults."""

    # hide_input_in_errors: a start-up error must not print the other settings' values (tokens among them).
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

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
    # PEM certificate chain the server presents. With TLS_KEY_FILE the server listens with TLS; with neither, in
    # plaintext.
    tls_cert_file: str = ""
    # PEM private key of TLS_CERT_FILE.
    tls_key_file: str = ""
    # PEM CA certificates that clients' certificates must chain to. When set, every client must present a certificate
    # (mutual TLS); needs TLS_CERT_FILE and TLS_KEY_FILE.
    tls_client_ca_file: str = ""

    @model_validator(mode="after")
    def _check_tls_files(self) -> Self:
        check_pair("TLS_CERT_FILE", self.tls_cert_file, "TLS_KEY_FILE", self.tls_key_file)
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE: mutual TLS is TLS first")
        check_files(
            ("TLS_CERT_FILE", self.tls_cert_file),
            ("TLS_KEY_FILE", self.tls_key_file),
            ("TLS_CLIENT_CA_FILE", self.tls_client_ca_file),
        )
        return self


def check_pair(cert_variable: str, cert_file: str, key_variable: str, key_file: str) -> None:
    """A certificate is useless without its key and the other way round: both or neither."""
    if bool(cert_file) != bool(key_file):
        given, missing = (cert_variable, key_variable) if cert_file else (key_variable, cert_variable)
        raise ValueError(f"{given} is set but {missing} is not; set both (or neither)")


def check_files(*settings: tuple[str, str]) -> None:
    """Every (variable, path) that is set names a readable file, so a typo fails at start-up, not at the first call."""
    for variable, path in settings:
        if path and not Path(path).is_file():
            raise ValueError(f"{variable}={path}: no such file")
