"""Script service bootstrap."""

from __future__ import annotations

from collections.abc import Iterable

from scenecast.v1 import script_service_pb2

from services.common.providers import ProviderSettings
from services.common.server import Server, build_service, run
from services.script.config import ScriptSettings
from services.script.providers import build_registry
from services.script.servicer import ScriptServicer

SERVICE_NAME = script_service_pb2.DESCRIPTOR.services_by_name["ScriptService"].full_name


def build(settings: ScriptSettings, provider_settings: Iterable[ProviderSettings] = ()) -> Server:
    """`provider_settings` replace those the providers would read from the environment (tests pass them)."""
    servicer = ScriptServicer(build_registry(settings.script_provider, provider_settings), settings.provider_attempts)
    return build_service(settings, servicer, SERVICE_NAME)


def main() -> None:
    settings = ScriptSettings()
    run("script", lambda: build(settings), settings)
