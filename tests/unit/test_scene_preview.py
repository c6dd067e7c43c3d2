"""The preview carried in a scene's image event: a JPEG fitted into 320 pixels and 30000 bytes, whatever the image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gateway.preview import PREVIEW_MAX_BYTES, scene_preview


def _png(pixels: np.ndarray) -> bytes:
    output = io.BytesIO()
    Image.fromarray(pixels).save(output, format="PNG")
    return output.getvalue()


@pytest.mark.parametrize(
    ("size", "fitted"),
    [((1920, 1080), (320, 180)), ((1080, 1920), (180, 320)), ((200, 100), (200, 100))],
)
def test_the_preview_keeps_the_aspect_within_320_pixels(size: tuple[int, int], fitted: tuple[int, int]) -> None:
    width, height = size
    gradient = np.zeros((height, width, 3), dtype=np.uint8)
    gradient[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)
    gradient[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    preview = Image.open(io.BytesIO(scene_preview(_png(gradient))))
    assert (preview.format, preview.size) == ("JPEG", fitted)
    # The picture itself: its corners keep the gradient's colours.
    pixels = np.asarray(preview.convert("RGB"), dtype=np.int16)
    assert np.abs(pixels[0, -1] - [255, 0, 0]).max() < 24 and np.abs(pixels[-1, 0] - [0, 0, 255]).max() < 24


def test_noise_that_no_jpeg_quality_fits_is_scaled_down_under_the_cap() -> None:
    # Already 320 pixels square, so no resampling smooths it: even the lowest quality tried is over the cap.
    noise = np.random.default_rng(7).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    jpeg = scene_preview(_png(noise))
    assert len(jpeg) <= PREVIEW_MAX_BYTES
    assert Image.open(io.BytesIO(jpeg)).size == (160, 160)


def test_bytes_that_are_no_image_give_no_preview_rather_than_an_error() -> None:
    assert scene_preview(b"<svg xmlns='http://www.w3.org/2000/svg'/>") == b""
    assert scene_preview(_png(np.zeros((10, 10, 3), dtype=np.uint8))[:40]) == b""
