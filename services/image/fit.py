"""Brings a provider's image to the exact output size: scaled to cover the frame, centre-cropped, as PNG."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from services.common.errors import ProviderUnavailable

# Decompression-bomb guard: no provider returns more than a few megapixels.
MAX_PIXELS = 40_000_000


def fit_image(data: bytes, width: int, height: int) -> bytes:
    """Returns PNG bytes of exactly width x height; raises ProviderUnavailable when the bytes are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ProviderUnavailable(f"the provider's image is {image.width}x{image.height}, too large to use")
            image.load()
            picture = image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ProviderUnavailable(f"the provider returned bytes that are not a readable image ({error})") from error
    scale = max(width / picture.width, height / picture.height)
    scaled = picture.resize(
        (max(width, round(picture.width * scale)), max(height, round(picture.height * scale))), Image.Resampling.LANCZOS
    )
    left = (scaled.width - width) // 2
    top = (scaled.height - height) // 2
    output = io.BytesIO()
    scaled.crop((left, top, left + width, top + height)).save(output, format="PNG", optimize=False)
    return output.getvalue()
