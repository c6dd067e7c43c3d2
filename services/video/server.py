"""Video service bootstrap."""

from __future__ import annotations

from scenecast.v1 import video_service_pb2

from services.common.server import Server, build_service, run
from services.video.avatars import build_avatar_registry
from services.video.config import VideoSettings
from services.video.providers import build_registry
from services.video.servicer import VideoServicer

SERVICE_NAME = video_service_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


def build(settings: VideoSettings) -> Server:
    servicer = VideoServicer(
        build_registry(settings.video_provider), build_avatar_registry(settings.avatar_provider), settings
    )

    return build_service(settings, servicer, SERVICE_NAME)


def main() -> None:
    settings = VideoSettings()
    run("video", lambda: build(settings), settings)
