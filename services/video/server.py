"""Video service bootstrap."""

from __future__ import annotations

from collections.abc import Iterable

from scenecast.v1 import video_service_pb2

from services.common.providers import ProviderSettings
from services.common.server import Server, build_service, run
from services.video.avatars import PROVIDERS as AVATAR_PROVIDERS
from services.video.avatars import build_avatar_registry
from services.video.config import VideoSettings
from services.video.providers import build_registry
from services.video.servicer import VideoServicer

SERVICE_NAME = video_service_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


def build(settings: VideoSettings, provider_settings: Iterable[ProviderSettings] = ()) -> Server:
    """`provider_settings` replace those the providers would read from the environment (tests pass them); each goes
    to the registry (clips or avatars) whose providers take it."""
    given = tuple(provider_settings)
    avatar_classes = {provider.settings_class for provider in AVATAR_PROVIDERS}
    servicer = VideoServicer(
        build_registry(settings.video_provider, [s for s in given if type(s) not in avatar_classes]),
        build_avatar_registry(settings.avatar_provider, [s for s in given if type(s) in avatar_classes]),
        settings,
    )
    return build_service(settings, servicer, SERVICE_NAME)


def main() -> None:
    settings = VideoSettings()
    run("video", lambda: build(settings), settings)
