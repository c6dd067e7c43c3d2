"""Finds and loads a scalable font for drawing Latin text, preferring DejaVu Sans."""

from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path

from PIL import ImageFont

_LOGGER = logging.getLogger(__name__)

# Where Debian/Ubuntu, Fedora and Arch install DejaVu, for machines without fontconfig.
_KNOWN_PATHS: dict[bool, tuple[str, ...]] = {
    False: (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ),
    True: (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
    ),
}
# fc-match always answers with its closest match, which may be a bitmap font FreeType cannot scale.
_SCALABLE_SUFFIXES = (".ttf", ".otf")


def _fc_match(pattern: str) -> Path | None:
    try:
        result = subprocess.run(
            ["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        _LOGGER.debug("fc-match unavailable: %s", error)
        return None
    matched = result.stdout.strip()
    return Path(matched) if result.returncode == 0 and matched else None


@functools.cache
def find_font(bold: bool = False) -> Path | None:
    """Returns a DejaVu Sans (or fontconfig's closest) TrueType file, or None when the machine has none."""
    matched = _fc_match("DejaVu Sans:bold" if bold else "DejaVu Sans")
    candidates = ([matched] if matched else []) + [Path(path) for path in _KNOWN_PATHS[bold]]
    for candidate in candidates:
        if candidate.suffix.lower() in _SCALABLE_SUFFIXES and candidate.is_file():
            return candidate
    _LOGGER.warning("no TrueType font found (install fonts-dejavu-core); using Pillow's built-in font")
    return None


def load_font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """Loads the font at a pixel size; without a font file, Pillow's built-in scalable font (never bold) stands in."""
    path = find_font(bold)
    if path is not None:
        return ImageFont.truetype(path, size)
    font = ImageFont.load_default(size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow was built without FreeType, so it cannot draw scalable text")
    return font
