"""Gateway bootstrap."""

from __future__ import annotations

import logging

from scenecast.v1 import render_service_pb2

from gateway.auth import BearerTokenInterceptor
from gateway.clients import connect
from gateway.config import GatewaySettings
from gateway.ledger import SpendLedger
from gateway.music import MusicStore
from gateway.registry import RenderRegistry
from gateway.servicer import RenderServicer
from services.common.server import Server, build_server, run
from services.common.tls import ServerTls

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = render_service_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name


def build(settings: GatewaySettings) -> Server:
    output_dir = settings.output_dir
    registry = RenderRegistry.from_settings(settings)
    music = MusicStore(
        output_dir / "music", settings.max_music_bytes, settings.result_ttl_seconds, settings.music_library_dir
    )
    ledger_path = settings.ledger_path
    ledger = SpendLedger(ledger_path) if ledger_path is not None else None
    _LOGGER.info("spend ledger: %s", ledger_path or "off")
    servicer = RenderServicer(connect(settings), registry, settings, music, ledger)
    tokens = settings.accepted_tokens
    if tokens:
        _LOGGER.info("RenderService calls need a bearer token (%d accepted)", len(tokens))
    return build_server(
        settings.listen_address,
        servicer,
        SERVICE_NAME,
        tls=ServerTls.from_settings(settings),
        interceptors=[BearerTokenInterceptor(tokens, SERVICE_NAME)] if tokens else [],
    )


def main() -> None:
    settings = GatewaySettings()
    run("gateway", lambda: build(settings), settings)
