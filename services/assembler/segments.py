"""A cache of encoded scene segments, so a re-render after an edit re-encodes only the scenes that changed.

The key is a SHA-256 of everything the segment's frames follow from: the visual's bytes, the caption files' text
(they hold every cue, word time, line break, font and style), the frame count and rate, fades, framing, the
cross-fade parts asked for, the output format, the encoder, the FFmpeg build and PyAV's, and the source of the
command builder, repeats.py, h264.py and encoding.py.
The narration is not in the key: its part in the picture is the scene's length and captions, both in the key. The
soundtrack is always mixed again (it is one cheap pass over the whole video). Entries live in the same
content-addressed folder cache as generated assets (atomic writes, hash-checked reads, LRU within a byte budget).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import av
from prometheus_client import Counter

from services.assembler.ffmpeg import Encoder, SegmentJob
from services.common.cache import AssetCache, file_sha256, source_digest
from services.common.output import OutputFormat

_LOGGER = logging.getLogger(__name__)

# Bumped when the key's fields change, so old entries are simply never found again.
FORMAT_VERSION = 1

SEGMENT_CACHE = Counter(
    "scenecast_segment_cache",
    "Scene segments looked up in the segment cache, by outcome: hit (joined as cached) or miss (encoded).",
    ["outcome"],
)


def segment_key(job: SegmentJob, output: OutputFormat, encoder: Encoder, exe: str) -> str:
    captions = [job.captions] if job.captions is not None else []
    document = {
        "format": FORMAT_VERSION,
        # The imageio-ffmpeg binary's file name carries its version.
        "ffmpeg": Path(exe).name,
        "code": [source_digest(f"services.assembler.{module}") for module in ("ffmpeg", "repeats", "h264", "encoding")],
        # PyAV (its own FFmpeg libraries) writes the bodies of stills whose repeats are pictures of skips.
        "pyav": av.__version__,
        "encoder": encoder.value,
        "output": {**asdict(output), "quality": str(output.quality)},
        "visual": file_sha256(job.visual),
        "is_clip": job.is_clip,
        "frames": job.plan.frames,
        "captions": [_text_digest(path) for path in captions],
        "runs": [(frames, _text_digest(path) if path else None) for frames, path in job.still_runs],
        "fades": (job.fade_in_frames, job.fade_out_frames),
        "fit": (str(job.fit), job.pad_color),
        "parts": (job.head_frames, job.tail_frames),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _text_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _part_key(key: str, part: str) -> str:
    """Each file of a segment is its own entry; the folder cache takes SHA-256 hex keys."""
    return hashlib.sha256(f"{key}/{part}".encode()).hexdigest()


def _parts(job: SegmentJob) -> dict[str, Path]:
    parts = {"body": job.output_path}
    if job.head_path is not None:
        parts["head"] = job.head_path
    if job.tail_path is not None:
        parts["tail"] = job.tail_path
    return parts


async def restore(cache: AssetCache, key: str, job: SegmentJob) -> bool:
    """Copies a cached segment's files where the job would have encoded them; False when any part is missing.

    Files are copied a block at a time, never held in memory; a part copied before a later one turns out missing is
    simply overwritten by the encode.
    """
    for name, path in _parts(job).items():
        if not await asyncio.to_thread(cache.get_file, _part_key(key, name), path):
            SEGMENT_CACHE.labels("miss").inc()
            return False
    SEGMENT_CACHE.labels("hit").inc()
    return True


async def keep(cache: AssetCache, key: str, job: SegmentJob) -> None:
    """Stores a freshly encoded segment's files (body, and the cross-fade head and tail when there are some).

    A cache that cannot be written (full disk) costs only the reuse, never the render.
    """
    try:
        for name, path in _parts(job).items():
            await asyncio.to_thread(cache.put_file, _part_key(key, name), path, "video/mp4")
    except OSError as error:
        _LOGGER.warning("segment cache: could not store segment %s: %s", key[:12], error)
