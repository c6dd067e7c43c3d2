"""Settings of the web service: where it listens, its caps, and how it reaches the gateway (as the CLI does)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    """Read once at start-up from the environment and `.env`; tests construct it with keywords."""

    # hide_input_in_errors: a start-up error must not print the other settings' values (the token among them).
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True, populate_by_name=True)

    # Address and port the HTTP server listens on. Loopback by default: the API spends money on the user's behalf,
    # so it is offered to the network only when asked (containers set 0.0.0.0). Port 0 picks a free one.
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("WEB_HOST", "host"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=AliasChoices("WEB_PORT", "port"))
    # Comma-separated origins allowed to call the API from a browser page on another origin; empty means no CORS
    # headers at all, so other sites cannot drive the API with a visitor's browser.
    cors_origins: str = Field("", validation_alias=AliasChoices("WEB_CORS_ORIGINS", "cors_origins"))
    # Largest request body (a script), in bytes.
    max_body_bytes: int = Field(
        1024 * 1024, gt=0, validation_alias=AliasChoices("WEB_MAX_BODY_BYTES", "max_body_bytes")
    )
    # Largest music upload, in bytes; the gateway's MAX_MUSIC_BYTES applies too.
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, gt=0, validation_alias=AliasChoices("WEB_MAX_UPLOAD_BYTES", "max_upload_bytes")
    )
    # Seconds a short gateway call (config, estimate, spend, cancel, health) may take.
    call_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("WEB_CALL_TIMEOUT_SECONDS", "call_timeout_seconds")
    )
    # "json" for one JSON object per line, "text" for humans; and the Python logging level (as for every service).
    log_format: Literal["json", "text"] = Field("json", validation_alias=AliasChoices("LOG_FORMAT", "log_format"))
    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))
    # The gateway, reached with the variables the CLI reads, so one `.env` serves both.
    gateway: str = Field("127.0.0.1:50050", validation_alias=AliasChoices("SCENECAST_GATEWAY", "gateway"))
    tls: bool = Field(False, validation_alias=AliasChoices("SCENECAST_TLS", "tls"))
    ca_file: str = Field("", validation_alias=AliasChoices("SCENECAST_CA_FILE", "ca_file"))
    cert_file: str = Field("", validation_alias=AliasChoices("SCENECAST_CERT_FILE", "cert_file"))
    key_file: str = Field("", validation_alias=AliasChoices("SCENECAST_KEY_FILE", "key_file"))
    server_name: str = Field("", validation_alias=AliasChoices("SCENECAST_SERVER_NAME", "server_name"))
    # Bearer token for the gateway (its GATEWAY_AUTH_TOKENS); sent on every call, never logged.
    token: SecretStr = Field(SecretStr(""), validation_alias=AliasChoices("SCENECAST_TOKEN", "token"))

    @property
    def allowed_origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
