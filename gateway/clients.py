"""Channels and stubs of the services the gateway calls, made once and passed in."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from scenecast.v1 import (
    assembler_service_pb2_grpc,
    audio_service_pb2_grpc,
    image_service_pb2_grpc,
    video_service_pb2_grpc,
)

from gateway.config import GatewaySettings
from services.common.server import MAX_MESSAGE_BYTES

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


@dataclass
class Downstream:
    image: image_service_pb2_grpc.ImageServiceStub
    audio: audio_service_pb2_grpc.AudioServiceStub
    video: video_service_pb2_grpc.VideoServiceStub
    assembler: assembler_service_pb2_grpc.AssemblerServiceStub
    channels: tuple[grpc.aio.Channel, ...]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def connect(settings: GatewaySettings) -> Downstream:
    addresses = (
        settings.image_service_address,
        settings.audio_service_address,
        settings.video_service_address,
        settings.assembler_service_address,
    )
    channels = tuple(grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) for address in addresses)
    return Downstream(
        image=image_service_pb2_grpc.ImageServiceStub(channels[0]),
        audio=audio_service_pb2_grpc.AudioServiceStub(channels[1]),
        video=video_service_pb2_grpc.VideoServiceStub(channels[2]),
        assembler=assembler_service_pb2_grpc.AssemblerServiceStub(channels[3]),
        channels=channels,
    )
