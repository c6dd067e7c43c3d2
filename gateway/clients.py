"""Channels and stubs of the services the gateway calls, made once and passed in."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from scenecast.v1 import (
    assembler_service_pb2_grpc,
    audio_service_pb2_grpc,
    image_service_pb2_grpc,
    script_service_pb2_grpc,
    video_service_pb2_grpc,
)

from gateway.config import GatewaySettings
from services.common.server import MAX_MESSAGE_BYTES
from services.common.tls import aio_client_channel

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Spread calls over every address the target resolves to (each replica), not just the first.
    ("grpc.lb_policy_name", "round_robin"),
    # Ping idle connections so a replica that vanished without closing them is noticed within ~40 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Re-resolve DNS soon after replicas change (a headless Service scaling up or down).
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    # Retry a lost connection at least every 5 s (gRPC's default backs off to 120 s), so a restarted service is back
    # in use (and the gateway ready again) within seconds.
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def channel_target(address: str) -> str:
    """A gRPC target for an address setting: a comma-separated list of IP:port replicas becomes an `ipv4:` (or
    `ipv6:`) target with all of them; anything else (host:port, dns:///name:port) is used as it is."""
    if "," not in address:
        return address
    replicas = [part.strip() for part in address.split(",") if part.strip()]
    scheme = "ipv6" if all(part.startswith("[") for part in replicas) else "ipv4"
    return f"{scheme}:{','.join(replicas)}"


@dataclass
class Downstream:
    image: image_service_pb2_grpc.ImageServiceStub
    audio: audio_service_pb2_grpc.AudioServiceStub
    video: video_service_pb2_grpc.VideoServiceStub
    assembler: assembler_service_pb2_grpc.AssemblerServiceStub
    script: script_service_pb2_grpc.ScriptServiceStub
    # Service name ("image", "audio", "video", "assembler", "script") to its channel.
    channels: dict[str, grpc.aio.Channel]

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


def connect(settings: GatewaySettings) -> Downstream:
    """Channels to the four media services and the script service: TLS when DOWNSTREAM_CA_FILE is set, with the
    gateway's client certificate when DOWNSTREAM_CERT_FILE is (for services that require mutual TLS), and the first
    service token on every call when SERVICE_AUTH_TOKENS is set."""
    addresses = {
        "image": settings.image_service_address,
        "audio": settings.audio_service_address,
        "video": settings.video_service_address,
        "assembler": settings.assembler_service_address,
        "script": settings.script_service_address,
    }
    tokens = settings.service_tokens
    channels = {
        name: aio_client_channel(
            channel_target(address),
            ca_file=settings.downstream_ca_file or None,
            cert_file=settings.downstream_cert_file or None,
            key_file=settings.downstream_key_file or None,
            server_name=settings.downstream_server_name or None,
            token=tokens[0] if tokens else None,
            options=_CHANNEL_OPTIONS,
        )
        for name, address in addresses.items()
    }
    return Downstream(
        image=image_service_pb2_grpc.ImageServiceStub(channels["image"]),
        audio=audio_service_pb2_grpc.AudioServiceStub(channels["audio"]),
        video=video_service_pb2_grpc.VideoServiceStub(channels["video"]),
        assembler=assembler_service_pb2_grpc.AssemblerServiceStub(channels["assembler"]),
        script=script_service_pb2_grpc.ScriptServiceStub(channels["script"]),
        channels=channels,
    )
