"""Output settings: validated once, turned into plain values every service uses the same way."""

from __future__ import annotations

from dataclasses import dataclass

from scenecast.v1 import types_pb2

from services.common.errors import InvalidArgument
from services.common.providers import Quality

MIN_HEIGHT = 144
MAX_HEIGHT = 2160
MAX_FPS = 60
DEFAULT_FPS = 30

# Width over height, as an exact fraction, per aspect ratio.
_RATIOS = {
    types_pb2.ASPECT_RATIO_16_9: (16, 9),
    types_pb2.ASPECT_RATIO_9_16: (9, 16),
    types_pb2.ASPECT_RATIO_1_1: (1, 1),
}
# The ratio as written in scripts and provider APIs.
ASPECT_NAMES = {
    "16:9": types_pb2.ASPECT_RATIO_16_9,
    "9:16": types_pb2.ASPECT_RATIO_9_16,
    "1:1": types_pb2.ASPECT_RATIO_1_1,
}
QUALITIES = {
    types_pb2.QUALITY_DRAFT: Quality.DRAFT,
    types_pb2.QUALITY_STANDARD: Quality.STANDARD,
    types_pb2.QUALITY_HD: Quality.HD,
}

# Unspecified means constant: clients written before the field existed keep the frames every program handles.
FRAME_RATE_MODES = {
    types_pb2.FRAME_RATE_MODE_UNSPECIFIED: False,
    types_pb2.FRAME_RATE_MODE_CONSTANT: False,
    types_pb2.FRAME_RATE_MODE_VARIABLE: True,
}


@dataclass(frozen=True)
class OutputFormat:
    width: int
    height: int
    fps: int
    captions: bool
    quality: Quality
    # The ratio as written in scripts and provider APIs, for example "16:9".
    aspect_name: str
    # Each distinct picture encoded once and held for its real duration (`output.frame_rate_mode: variable`).
    variable_frame_rate: bool = False


def frame_width(height: int, aspect: tuple[int, int]) -> int:
    """Width for a height, rounded to the nearest even number (H.264 with yuv420p needs even sizes)."""
    return max(2, round(height * aspect[0] / aspect[1] / 2) * 2)


def output_format(settings: types_pb2.OutputSettings, field: str = "output") -> OutputFormat:
    """Validates output settings; each error names the field and the accepted values."""
    if settings.aspect_ratio not in _RATIOS:
        raise InvalidArgument(f"{field}.aspect_ratio must be one of 16:9, 9:16, 1:1 (got {settings.aspect_ratio})")
    if not MIN_HEIGHT <= settings.height <= MAX_HEIGHT or settings.height % 2:
        raise InvalidArgument(
            f"{field}.height must be an even number of pixels from {MIN_HEIGHT} to {MAX_HEIGHT} (got {settings.height})"
        )
    if settings.fps > MAX_FPS:
        raise InvalidArgument(f"{field}.fps must be 1 to {MAX_FPS}, or 0 for {DEFAULT_FPS} (got {settings.fps})")
    if settings.quality not in QUALITIES:
        raise InvalidArgument(f"{field}.quality must be draft, standard or hd (got {settings.quality})")
    if settings.frame_rate_mode not in FRAME_RATE_MODES:
        raise InvalidArgument(
            f"{field}.frame_rate_mode must be constant, variable or unspecified (got {settings.frame_rate_mode})"
        )
    return OutputFormat(
        width=frame_width(settings.height, _RATIOS[settings.aspect_ratio]),
        height=settings.height,
        fps=settings.fps or DEFAULT_FPS,
        captions=settings.captions if settings.HasField("captions") else True,
        quality=QUALITIES[settings.quality],
        aspect_name=next(name for name, value in ASPECT_NAMES.items() if value == settings.aspect_ratio),
        variable_frame_rate=FRAME_RATE_MODES[settings.frame_rate_mode],
    )
