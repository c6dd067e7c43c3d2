"""What a video provider takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from services.common.providers import ProviderDescription, Quality
from services.common.stock import Credit


@dataclass(frozen=True)
class ClipJob:
    prompt: str
    title: str
    scene_index: int
    width: int
    height: int
    fps: int
    # Wanted length; providers with a fixed length may ignore it (the assembler loops clips to the narration).
    duration_ms: int
    quality: Quality
    # The scene's still image, when the caller sent one.
    source_image: Path | None
    # A folder the provider may write to; removed when the call ends.
    work_dir: Path
    render_id: str = ""


@dataclass(frozen=True)
class ClipResult:
    # The clip, a file in the job's work_dir: a file rather than bytes, since a long 4K clip runs to gigabytes.
    path: Path
    mime_type: str
    model: str
    estimated_cost_usd: float = 0.0
    # The author and licence of stock footage, whose libraries ask for credit; None for generated clips.
    credit: Credit | None = None


def write_clip(work_dir: Path, data: bytes) -> Path:
    """A downloaded clip, written to the job's folder for its ClipResult; blocking, so called from a worker thread."""
    path = work_dir / "clip"
    path.write_bytes(data)
    return path


class VideoProvider(Protocol):
    description: ClassVar[ProviderDescription]

    async def generate(self, job: ClipJob) -> ClipResult:
        """Makes the clip; raises services.common.errors domain errors on failure."""
        ...
