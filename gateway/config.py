"""Gateway settings, read once from the environment."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, SecretStr, model_validator

from gateway.ledger import postgres_location
from services.common.limits import DEFAULT_MAX_SCENES
from services.common.settings import ServiceSettings, check_files, check_pair
from services.common.state import state_path

# The user's own state folder ($XDG_STATE_HOME/scenecast/renders, else ~/.local/state/scenecast/renders), fixed at
# start-up: results kept in a fixed folder of the shared temp folder could be read, or replaced by links, by anyone.
DEFAULT_OUTPUT_DIR = state_path("renders")


class GatewaySettings(ServiceSettings):
    listen_address: str = "127.0.0.1:50050"
    # Where the services are: host:port; a comma-separated list of replicas' IP:port; or dns:///name:port, where the
    # name resolves to every replica (a headless Kubernetes Service). Calls are spread over replicas round-robin.
    image_service_address: str = "127.0.0.1:50051"
    audio_service_address: str = "127.0.0.1:50052"
    video_service_address: str = "127.0.0.1:50053"
    assembler_service_address: str = "127.0.0.1:50054"
    # The script service, which drafts scripts (DraftScript); the gateway is ready only while it is, too.
    script_service_address: str = "127.0.0.1:50055"
    # Most scenes one render may have.
    max_scenes: int = DEFAULT_MAX_SCENES
    # Most scenes whose assets are generated at the same time (each scene makes 2-3 provider calls).
    max_concurrent_scenes: int = 4
    # Longest one asset call (image, speech or clip) may take, in seconds; cut short by the render's own deadline.
    asset_timeout_seconds: float = 600.0
    # Longest a render may take when the caller sets no deadline, in seconds.
    render_timeout_seconds: float = 3600.0
    # Attempts of one asset call when a service replica is UNAVAILABLE (each retry may reach another replica).
    scene_call_attempts: int = 3
    # Clips are asked this much longer than the narration, in milliseconds, to cover the scene's lead-in and tail.
    clip_extra_ms: int = 1000
    # Where finished MP4s (and uploaded music) are kept for FetchResult; empty means DEFAULT_OUTPUT_DIR. Made private
    # (0700) at start-up; a folder that is a link or belongs to another user stops the gateway. With several replicas,
    # a folder they all share (a ReadWriteMany volume). RESULTS_DIR is accepted as another name for it, the
    # name the deployment docs use; RENDER_OUTPUT_DIR stays, as existing set-ups use it.
    render_output_dir: str = Field("", validation_alias=AliasChoices("render_output_dir", "results_dir"))
    # Redis URL (redis://, rediss://) holding the render registry that every gateway replica shares, so that any
    # replica answers WatchRender, FetchResult and CancelRender; empty keeps it in this process (one gateway). Its own
    # setting, not ASSET_CACHE_URL: the cache may be dropped or evicted at any time, render state must not be.
    render_state_url: SecretStr = SecretStr("")
    # How long a replica that stopped renewing its renders (killed, cut off) keeps them before any replica ends them
    # UNAVAILABLE, in seconds. Renewed every second.
    render_lease_seconds: float = 10.0
    # How long a finished render's MP4 and summary (and an uploaded music file) stay available, in seconds.
    result_ttl_seconds: float = 3600.0
    # How long a render keeps running with no caller attached (a dropped connection), waiting for WatchRender or
    # FetchResult, before it is cancelled, in seconds.
    orphan_grace_seconds: float = 15.0
    # Default spending cap per render, in US dollars, when the request sets none; 0 means no cap.
    max_render_cost_usd: float = 0.0
    # SQLite file recording every provider asset a render used (GetSpend, `scenecast spend`); empty means
    # `spend-ledger.sqlite3` in the output folder, "off" records nothing. Replicas on one host may share the file.
    spend_ledger_path: str = ""
    # postgresql://user:password@host:port/database of a PostgreSQL database for the spend ledger, shared by every
    # gateway replica on any host; used instead of SPEND_LEDGER_PATH (set one of them). A secret: it may hold a
    # password, so it never shows in a repr or a log line.
    spend_ledger_url: SecretStr = SecretStr("")
    # Most connections one gateway keeps open to SPEND_LEDGER_URL (each replica its own pool).
    spend_ledger_pool_size: int = 4
    # Largest music file UploadMusic accepts, in bytes.
    max_music_bytes: int = 50 * 1024 * 1024
    # redis://host:port/db of the Redis that every gateway replica shares (the media services' ASSET_CACHE_URL may be
    # the same server): uploaded music is kept there, so that a render through any replica can use an upload made
    # through another. Empty keeps uploads in the output folder, for a single gateway. A secret: it may hold a password.
    asset_cache_url: SecretStr = SecretStr("")
    # Most bytes of uploaded music kept in ASSET_CACHE_URL's Redis; when a new upload needs room, the least recently
    # used ones are dropped first. At least MAX_MUSIC_BYTES.
    music_uploads_max_bytes: int = 1024 * 1024 * 1024
    # Folder of music files that renders may name by file name (MusicSource.library_file); empty means none.
    music_library_dir: str = ""
    shutdown_grace_seconds: float = 25.0
    # PEM CA certificates that the media services' certificates must chain to. When set, the gateway dials them with
    # TLS; empty means plaintext.
    downstream_ca_file: str = ""
    # The gateway's own client certificate and key (PEM), presented to media services that require mutual TLS.
    downstream_cert_file: str = ""
    downstream_key_file: str = ""
    # Name checked in the media services' certificates instead of the address's host (for IP addresses, or a
    # certificate issued for one shared name); empty checks the host of each address.
    downstream_server_name: str = ""
    # Comma-separated bearer tokens that RenderService calls must carry; empty means no auth. Health and reflection
    # stay open for probes. Named after its variable (not `auth_tokens` with an alias) so that the keyword and the
    # variable agree; a secret, so it never shows in a repr or a log line.
    gateway_auth_tokens: SecretStr = SecretStr("")

    @property
    def output_dir(self) -> Path:
        """Where results, uploaded music and (by default) the spend ledger live."""
        return Path(self.render_output_dir) if self.render_output_dir else DEFAULT_OUTPUT_DIR

    @property
    def ledger_path(self) -> Path | None:
        """The spend ledger's file, or None when SPEND_LEDGER_PATH is "off"."""
        if self.spend_ledger_path.strip().lower() == "off":
            return None
        return Path(self.spend_ledger_path) if self.spend_ledger_path else self.output_dir / "spend-ledger.sqlite3"

    @property
    def accepted_tokens(self) -> tuple[str, ...]:
        return tuple(token.strip() for token in self.gateway_auth_tokens.get_secret_value().split(",") if token.strip())

    def _service_addresses(self) -> dict[str, str]:
        return {
            "IMAGE_SERVICE_ADDRESS": self.image_service_address,
            "AUDIO_SERVICE_ADDRESS": self.audio_service_address,
            "VIDEO_SERVICE_ADDRESS": self.video_service_address,
            "ASSEMBLER_SERVICE_ADDRESS": self.assembler_service_address,
            "SCRIPT_SERVICE_ADDRESS": self.script_service_address,
        }

    @model_validator(mode="after")
    def _check_files_and_limits(self) -> Self:
        check_pair("DOWNSTREAM_CERT_FILE", self.downstream_cert_file, "DOWNSTREAM_KEY_FILE", self.downstream_key_file)
        if self.downstream_cert_file and not self.downstream_ca_file:
            raise ValueError(
                "DOWNSTREAM_CERT_FILE needs DOWNSTREAM_CA_FILE: the gateway uses TLS to the media services only when "
                "DOWNSTREAM_CA_FILE says which CA signed their certificates"
            )
        if self.downstream_ca_file and not self.downstream_server_name:
            for variable, address in self._service_addresses().items():
                if "," in address:
                    raise ValueError(
                        f"{variable} lists replicas, whose certificates cannot be checked against a list of "
                        "addresses; set DOWNSTREAM_SERVER_NAME to the name their certificates share"
                    )
        if self.music_library_dir and not Path(self.music_library_dir).is_dir():
            raise ValueError(f"MUSIC_LIBRARY_DIR={self.music_library_dir}: no such folder")
        if not math.isfinite(self.max_render_cost_usd) or self.max_render_cost_usd < 0:
            # NaN compares false with every cost, so it would silently turn the cap off.
            raise ValueError("MAX_RENDER_COST_USD must be a finite number of US dollars, 0 or more (0: no cap)")
        if url := self.spend_ledger_url.get_secret_value():
            if self.spend_ledger_path:
                raise ValueError(
                    "SPEND_LEDGER_URL and SPEND_LEDGER_PATH are both set; keep SPEND_LEDGER_URL for a PostgreSQL "
                    "ledger, or SPEND_LEDGER_PATH for a SQLite file (or off)"
                )
            if not url.startswith(("postgresql://", "postgres://")):
                # The value is not echoed: it may hold a password.
                raise ValueError("SPEND_LEDGER_URL must be a postgresql://user:password@host:port/database URL")
            try:
                postgres_location(url)
            except ValueError:
                raise ValueError("SPEND_LEDGER_URL is not a valid postgresql:// URL (the value is not shown)") from None
        if self.spend_ledger_pool_size < 1:
            raise ValueError("SPEND_LEDGER_POOL_SIZE must be at least 1 connection")
        if self.render_lease_seconds < 3:
            raise ValueError("RENDER_LEASE_SECONDS must be at least 3: leases are renewed every second")
        if self.orphan_grace_seconds < 1:
            raise ValueError("ORPHAN_GRACE_SECONDS must be at least 1: callers renew their claim every third of it")
        if self.result_ttl_seconds <= 0:
            raise ValueError("RESULT_TTL_SECONDS must be a positive number of seconds")
        if self.max_music_bytes <= 0:
            raise ValueError("MAX_MUSIC_BYTES must be a positive number of bytes")
        if self.asset_cache_url.get_secret_value() and self.music_uploads_max_bytes < self.max_music_bytes:
            raise ValueError(
                f"MUSIC_UPLOADS_MAX_BYTES ({self.music_uploads_max_bytes}) is below MAX_MUSIC_BYTES "
                f"({self.max_music_bytes}): the largest upload allowed would not fit; raise it"
            )
        check_files(
            ("DOWNSTREAM_CA_FILE", self.downstream_ca_file),
            ("DOWNSTREAM_CERT_FILE", self.downstream_cert_file),
            ("DOWNSTREAM_KEY_FILE", self.downstream_key_file),
        )
        return self
