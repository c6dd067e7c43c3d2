"""Script service settings, read once from the environment."""

from __future__ import annotations

from services.common.settings import ServiceSettings


class ScriptSettings(ServiceSettings):
    listen_address: str = "127.0.0.1:50055"
    # Provider used when a request names none: offline, so drafting from a document works with no key.
    script_provider: str = "outline"
    # Attempts per provider call that was not answered (429); an answered call is never ordered again.
    provider_attempts: int = 4
    shutdown_grace_seconds: float = 5.0
