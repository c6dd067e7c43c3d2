"""What an image provider takes and returns."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar, Protocol

from PIL import Image, UnidentifiedImageError

from services.common.errors import ProviderUnavailable
from services.common.providers import ProviderDescription, Quality
from services.common.stock import Credit


@dataclass(frozen=True)
class ImageJob:
    """One scene's image request, in plain values."""

    prompt: str
    title: str
    scene_index: int
    width: int
    height: int
    quality: Quality
    # The output's aspect ratio as written in scripts: "16:9", "9:16" or "1:1".
    aspect: str
    render_id: str = ""


@dataclass(frozen=True)
class ImageResult:
    """An encoded image; the service scales and crops it to the job's size when the model made another size."""

    data: bytes
    mime_type: str
    width: int
    height: int
    model: str
    estimated_cost_usd: float = 0.0
    # The author and licence of stock media, whose libraries ask for credit; None for generated images.
    credit: Credit | None = None


class ImageProvider(Protocol):
    description: ClassVar[ProviderDescription]

    async def generate(self, job: ImageJob) -> ImageResult:
        """Makes the image; raises services.common.errors domain errors on failure."""
        ...


def decoded_image(data: bytes, vendor: str, model: str, cost: float) -> ImageResult:
    """Reads the real size and type from a vendor's bytes (the image must decode whole); the service then fits it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a header followed by garbage opens; it fails here, inside the job, not in the service
            width, height, mime_type = image.width, image.height, Image.MIME.get(image.format or "", "")
    except (UnidentifiedImageError, OSError) as error:
        raise ProviderUnavailable(f"{vendor} {model} returned bytes that are not an image ({error})") from error
    return ImageResult(data=data, mime_type=mime_type, width=width, height=height, model=model, estimated_cost_usd=cost)
