"""A scene's still as the small JPEG carried in its image's progress event (`RenderProgress.preview_jpeg`)."""

from __future__ import annotations

import io
import logging

from PIL import Image, UnidentifiedImageError

_LOGGER = logging.getLogger(__name__)

# Longest side of a preview, in pixels: a thumbnail beside the scene's progress, sharp at twice its CSS size.
PREVIEW_SIDE = 320
# Most bytes a preview may have. Every watcher is replayed every event, and the log lives in Redis with several
# replicas, so each preview is bounded (a 50-scene render's previews stay under 1.5 MB).
PREVIEW_MAX_BYTES = 30_000
# JPEG qualities tried in turn until the preview fits; a still this small is under the cap long before the last.
_QUALITIES = (80, 65, 50, 35)


def scene_preview(image: bytes) -> bytes:
    """The image fitted into PREVIEW_SIDE (aspect kept) as a JPEG of at most PREVIEW_MAX_BYTES; empty bytes when
    it cannot be read. A preview is a convenience: a failure is logged and never fails the render it belongs to."""
    try:
        # The image service sends the frame's exact size; Pillow's own guard refuses a decompression bomb.
        with Image.open(io.BytesIO(image)) as opened:
            # Shrunk in place (a JPEG is even decoded at a fraction of its size): a 2160p frame is held once, never
            # copied at full size, while up to MAX_CONCURRENT_SCENES scenes make theirs at the same time.
            opened.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
            picture = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        _LOGGER.warning("no preview for an image that cannot be read: %s", error)
        return b""
    while True:
        for quality in _QUALITIES:
            output = io.BytesIO()
            picture.save(output, format="JPEG", quality=quality, optimize=True)
            if output.tell() <= PREVIEW_MAX_BYTES:
                return output.getvalue()
        # Only noise this dense is still too large: halve the picture until it fits.
        picture = picture.resize((max(1, picture.width // 2), max(1, picture.height // 2)), Image.Resampling.LANCZOS)
