"""Video service bootstrap."""

from __future__ import annotations

from collections.abc import Iterable

from scenecast.v1 import video_service_pb2

from services.common import pricing
from services.common.providers import SPOKEN_CHARS_PER_SECOND, ProviderRegistry, ProviderSettings, legacy
from services.common.server import Server, build_service, run
from services.video.avatars.base import AvatarJob, AvatarProvider
from services.video.avatars.heygen import HeyGenProvider
from services.video.avatars.synthesia import SynthesiaProvider
from services.video.config import VideoSettings
from services.video.providers import build_registry
from services.video.servicer import VideoServicer

SERVICE_NAME = video_service_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name


def build(settings: VideoSettings, provider_settings: Iterable[ProviderSettings] = ()) -> Server:
    """`provider_settings` replace those the providers would read from the environment (tests pass them)."""
    servicer = VideoServicer(
        build_registry(settings.video_provider, provider_settings), _avatar_registry(settings.avatar_provider), settings
    )

    return build_service(settings, servicer, SERVICE_NAME)


def _spoken_seconds(job: AvatarJob) -> float:
    return sum(len(scene.narration) for scene in job.scenes) / SPOKEN_CHARS_PER_SECOND


def _avatar_registry(default: str) -> ProviderRegistry[AvatarProvider]:
    """TEMPORARY (issue 15): the avatar vendors in their old shape, until services/video/avatars builds them from
    settings (its build_avatar_registry then replaces this)."""
    return ProviderRegistry(
        (
            legacy(
                HeyGenProvider,
                lambda job: pricing.heygen_cost(_spoken_seconds(job)),
                ("HEYGEN_BASE_URL", "HEYGEN_AVATAR_ID", "HEYGEN_VOICE_ID", "HEYGEN_BACKGROUND", "HEYGEN_TEST"),
            ),
            legacy(
                SynthesiaProvider,
                lambda job: pricing.synthesia_cost(_spoken_seconds(job)),
                ("SYNTHESIA_BASE_URL", "SYNTHESIA_AVATAR", "SYNTHESIA_VOICE", "SYNTHESIA_BACKGROUND", "SYNTHESIA_TEST"),
            ),
        ),
        default,
        "AVATAR_PROVIDER",
    )


def main() -> None:
    settings = VideoSettings()
    run("video", lambda: build(settings), settings)
