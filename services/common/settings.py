"""Settings every service has, read once from the environment (and a .env file) with pydantic-settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Each service subclasses this and sets its own `listen_address` and `shutdown_grace_seconds` defaults."""

    # hide_input_in_errors: a start-up error must not print the other settings' values (tokens among them).
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    # host:port to listen on; port 0 picks a free one.
    listen_address: str = "127.0.0.1:0"
    # Seconds running calls get to finish after SIGTERM (keep it below Kubernetes' termination grace period).
    shutdown_grace_seconds: float = 5.0
    # Port of the Prometheus /metrics HTTP endpoint; 0 turns it off, "auto" picks a free one (see port_report_file).
    metrics_port: int | Literal["auto"] = 0
    # Address the /metrics endpoint listens on. Loopback by default, so metrics (call counts, spend) are not served to
    # the network unless asked: containers set 0.0.0.0 for the scraper.
    metrics_address: str = "127.0.0.1"
    # A file to write the ports the service got to, as JSON ({"grpc": 50123, "metrics": 41234}), once it listens: how
    # `scenecast serve` and `--start-services` learn the ports of services started on port 0. Empty: not written.
    port_report_file: str = ""
    # Whether the server answers gRPC reflection (lists its services and messages). Off where callers are untrusted.
    grpc_reflection: bool = True
    # What a server that takes bearer tokens does when it listens in plaintext on an address other than loopback,
    # where the tokens cross the network readable: "warn" (a warning at start-up), "refuse" (does not start) or
    # "allow" (for networks private by construction, such as a compose network or a cluster under NetworkPolicy).
    plaintext_token_policy: Literal["warn", "refuse", "allow"] = "warn"
    # Comma-separated tokens shared by the gateway and the services it calls: a service takes calls only with one of
    # them (`authorization: Bearer <token>`), and the gateway presents the first. Two at once rotate a token without
    # downtime (add the new one second everywhere, then move it first, then drop the old). Empty: no service auth.
    service_auth_tokens: SecretStr = SecretStr("")
    # A file holding SERVICE_AUTH_TOKENS instead (a mounted secret); read once at start-up.
    service_auth_tokens_file: str = ""
    # "json" for one JSON object per line (with render and trace ids), "text" for humans.
    log_format: Literal["json", "text"] = "json"
    # Python logging level.
    log_level: str = "INFO"
    # The standard OpenTelemetry variables, read here (so a .env file sets them too) and passed to the SDK by
    # observability.configure. Those not listed (OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_EXPORTER_OTLP_TIMEOUT,
    # certificates, compression) the SDK reads from the process environment (not .env) when it is set up, at start-up.
    # Comma-separated exporters: "otlp", "console" (spans printed on stdout), "none". An unknown name warns and is
    # dropped, so an operator's injected value never stops a service. Empty: "otlp" when an OTLP endpoint is set,
    # else "none". The spec's default is "otlp" to localhost; we deviate because a service without a collector would
    # then warn about failed exports all day, while trace context is propagated (and logged) either way.
    otel_traces_exporter: str = ""
    # Base URL of an OTLP collector (http://collector:4318 for http/protobuf, http://collector:4317 for grpc); the
    # http exporter appends /v1/traces.
    otel_exporter_otlp_endpoint: str = ""
    # Full URL for traces, used as given; wins over OTEL_EXPORTER_OTLP_ENDPOINT.
    otel_exporter_otlp_traces_endpoint: str = ""
    # "http/protobuf" (the spec's default) or "grpc".
    otel_exporter_otlp_protocol: str = "http/protobuf"
    # Wins over OTEL_EXPORTER_OTLP_PROTOCOL for traces.
    otel_exporter_otlp_traces_protocol: str = ""
    # Headers sent to the collector, "key=value,key2=value2" with URL-encoded values. Vendors name their key headers
    # in many ways, so every value is treated as a secret (redacted from every log line and status).
    otel_exporter_otlp_headers: SecretStr = SecretStr("")
    # Wins over OTEL_EXPORTER_OTLP_HEADERS for traces.
    otel_exporter_otlp_traces_headers: SecretStr = SecretStr("")
    # service.name of the spans; empty: "scenecast-<service>" (image, audio, video, assembler, gateway).
    otel_service_name: str = ""
    # Extra resource attributes, "key=value,key2=value2" (deployment.environment=prod, k8s.pod.name=...).
    otel_resource_attributes: str = ""
    # PEM certificate chain the server presents. With TLS_KEY_FILE the server listens with TLS; with neither, in
    # plaintext.
    tls_cert_file: str = ""
    # PEM private key of TLS_CERT_FILE.
    tls_key_file: str = ""
    # PEM CA certificates that clients' certificates must chain to. When set, every client must present a certificate
    # (mutual TLS); needs TLS_CERT_FILE and TLS_KEY_FILE.
    tls_client_ca_file: str = ""

    @property
    def service_tokens(self) -> tuple[str, ...]:
        """The service tokens, from SERVICE_AUTH_TOKENS or the file SERVICE_AUTH_TOKENS_FILE names."""
        if self.service_auth_tokens_file:
            try:
                text = Path(self.service_auth_tokens_file).read_text()
            except OSError as error:
                raise ValueError(
                    f"SERVICE_AUTH_TOKENS_FILE={self.service_auth_tokens_file}: cannot read it ({error.strerror})"
                ) from error
        else:
            text = self.service_auth_tokens.get_secret_value()
        return tuple(token.strip() for token in text.split(",") if token.strip())

    @model_validator(mode="after")
    def _check_service_tokens(self) -> Self:
        if self.service_auth_tokens_file and self.service_auth_tokens.get_secret_value():
            raise ValueError("set SERVICE_AUTH_TOKENS or SERVICE_AUTH_TOKENS_FILE, not both")
        check_files(("SERVICE_AUTH_TOKENS_FILE", self.service_auth_tokens_file))
        if self.service_auth_tokens_file and not self.service_tokens:
            raise ValueError(f"SERVICE_AUTH_TOKENS_FILE={self.service_auth_tokens_file} holds no token")
        return self

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
