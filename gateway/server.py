"""Gateway bootstrap."""

from __future__ import annotations

import functools
import logging

from scenecast.v1 import render_service_pb2

from gateway.clients import connect
from gateway.config import GatewaySettings
from gateway.ledger import open_ledger
from gateway.music import MusicStore, shared_storage
from gateway.readiness import watch_dependencies
from gateway.registry import RenderRegistry
from gateway.servicer import RenderServicer
from services.common.server import Server, build_service, run
from services.common.state import private_dir

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = render_service_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name


def build(settings: GatewaySettings) -> Server:
    output_dir = private_dir(settings.output_dir, "RENDER_OUTPUT_DIR")
    registry = RenderRegistry.from_settings(settings)
    music = MusicStore(
        output_dir / "music",
        settings.max_music_bytes,
        settings.result_ttl_seconds,
        settings.music_library_dir,
        shared_storage(settings.asset_cache_url.get_secret_value(), settings.music_uploads_max_bytes),
    )
    downstream = connect(settings)
    servicer = RenderServicer(downstream, registry, settings, music, open_ledger(settings))
    tokens = settings.accepted_tokens
    if tokens:
        _LOGGER.info("RenderService calls need a bearer token (%d accepted)", len(tokens))
    _LOGGER.info(
        "calls to the media services %s", "carry the service token" if settings.service_tokens else "carry no token"
    )
    return build_service(
        settings,
        servicer,
        SERVICE_NAME,
        tokens=tokens,
        readiness=functools.partial(watch_dependencies, downstream.channels),
        drain=registry.drain,
    )


def main() -> None:
    settings = GatewaySettings()
    run("gateway", lambda: build(settings), settings)
