"""Figure 4: peak memory of the gateway and the assembler stays flat while a large MP4 (over 1 GiB) streams through."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from scenecast.v1 import render_service_pb2, types_pb2

from bench.common import NARRATIONS, Figure, RenderTiming, log, output, render, scene, stack_env
from bench.noise_video import NoiseCog
from scenecast_cli.stack import LocalStack

# Two scenes of about 5 s: 0.15 GiB. Six of about 14 s: 1.15 GiB, rendered in about a minute here.
SMALL_SCENES = 2
LARGE_SCENES = 6
OUTPUT = output(1080, 30, types_pb2.QUALITY_DRAFT)
LARGE_BYTES = 2**30
LIMIT_MB = 150
FLAT_MB = 10


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def _request(scenes: int, long: bool) -> render_service_pb2.RenderRequest:
    """Scenes of one narration each (about 5 s), or of three (about 14 s)."""
    texts = [" ".join(NARRATIONS[(i + k) % len(NARRATIONS)] for k in range(3 if long else 1)) for i in range(scenes)]
    return render_service_pb2.RenderRequest(
        scenes=[scene(i, text) for i, text in enumerate(texts)],
        output=OUTPUT,
        providers=types_pb2.ProviderOverrides(video="selfhosted"),
    )


@dataclass
class _Peaks:
    """What one stack measured: the two renders and each process's peak after each."""

    small: RenderTiming
    large: RenderTiming
    after_small: dict[str, float]
    after_large: dict[str, float]

    def figure(self, name: str, key: str, title: str) -> Figure:
        growth = self.after_large[name] - self.after_small[name]
        size = f"{self.large.size_bytes / 2**30:.2f} GiB"
        if self.large.size_bytes < LARGE_BYTES:
            size += " (short of the 1 GiB asked for)"
        return Figure(
            key,
            title,
            "MiB",
            f"< {LIMIT_MB} and flat",
            lambda value: value < LIMIT_MB and growth < FLAT_MB,
            [self.after_large[name]],
            [
                f"{name}: {self.after_small[name]:.0f} MiB after a {self.small.size_bytes / 2**20:.0f} MiB render "
                f"({SMALL_SCENES} short scenes), {self.after_large[name]:.0f} MiB after a {size} render "
                f"({LARGE_SCENES} scenes, {self.large.duration_ms / 1000:.0f} s of 1080p30 noise clips at draft "
                f"quality, {self.large.seconds:.0f} s to render): growth {growth:+.1f} MiB (flat means < {FLAT_MB} MiB)"
            ],
        )


def _measure(work: Path, cog: NoiseCog, segment_cache: str) -> _Peaks:
    env = stack_env(
        work,
        {
            "SELFHOSTED_VIDEO_URL": cog.base_url,
            # 9 frames at the output's rate, looped by the assembler: a small clip, and no repeated frames.
            "SELFHOSTED_VIDEO_HEIGHT": "480",
            "SELFHOSTED_VIDEO_FPS": "30",
            "SELFHOSTED_VIDEO_MAX_FRAMES": "9",
            "SEGMENT_CACHE_DIR": segment_cache,
        },
    )
    with LocalStack(env=env, log_dir=work) as stack:
        pids = {name: stack.processes[name].pid for name in ("gateway", "assembler")}
        movie = work / "movie.mp4"
        small = render(stack.gateway_address, _request(SMALL_SCENES, long=False), movie)
        after_small = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        log(f"small render {small.size_bytes / 2**20:.0f} MiB, peaks {after_small}")
        large = render(stack.gateway_address, _request(LARGE_SCENES, long=True), movie)
        after_large = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        log(f"large render {large.size_bytes / 2**20:.0f} MiB in {large.seconds:.0f} s, peaks {after_large}")
        movie.unlink()
    return _Peaks(small, large, after_small, after_large)


def run(work: Path) -> list[Figure]:
    with NoiseCog() as cog:
        log("segment cache on (the default), starting empty")
        default = _measure(work, cog, str(work / "segment-cache"))
        shutil.rmtree(work / "segment-cache", ignore_errors=True)
        log("segment cache off")
        uncached = _measure(work, cog, "off")
    return [
        default.figure("gateway", "memory-gateway", "4. gateway peak RSS (VmHWM) after the long render, MiB"),
        default.figure("assembler", "memory-assembler", "4. assembler peak RSS (VmHWM) after the long render, MiB"),
        uncached.figure(
            "assembler",
            "memory-assembler-uncached",
            "4. assembler peak RSS (VmHWM) after the long render, segment cache off, MiB",
        ),
    ]
