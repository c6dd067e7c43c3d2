"""Figure 4: peak memory of the gateway and the assembler stays flat while a long MP4 streams through them."""

from __future__ import annotations

from pathlib import Path

from scenecast.v1 import render_service_pb2

from bench.common import NARRATIONS, Figure, log, output, render, scene
from scenecast_cli.stack import LocalStack

SMALL_SCENES = 4
# About 15 s of narration per scene: 40 scenes make a video of about 10 minutes, rendered in 2-3 minutes here.
LARGE_SCENES = 40
OUTPUT = output(720, 30)
LIMIT_MB = 150


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def _request(scenes: int) -> render_service_pb2.RenderRequest:
    long_text = [" ".join(NARRATIONS[(i + k) % len(NARRATIONS)] for k in range(3)) for i in range(scenes)]
    return render_service_pb2.RenderRequest(scenes=[scene(i, long_text[i]) for i in range(scenes)], output=OUTPUT)


def run(work: Path) -> list[Figure]:
    with LocalStack(log_dir=work) as stack:
        pids = {name: stack.processes[name].pid for name in ("gateway", "assembler")}
        small = render(stack.gateway_address, _request(SMALL_SCENES), work / "small.mp4")
        after_small = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        log(f"small render {small.size_bytes / 2**20:.1f} MiB, peaks {after_small}")
        large = render(stack.gateway_address, _request(LARGE_SCENES), work / "large.mp4")
        after_large = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        log(f"large render {large.size_bytes / 2**20:.1f} MiB in {large.seconds:.0f} s, peaks {after_large}")
    figures = []
    for name in pids:
        growth = after_large[name] - after_small[name]
        figures.append(
            Figure(
                f"memory-{name}",
                f"4. {name} peak RSS (VmHWM) after the long render, MiB",
                "MiB",
                f"< {LIMIT_MB} and flat",
                lambda value, growth=growth: value < LIMIT_MB and growth < 10,
                [after_large[name]],
                [
                    f"{name}: {after_small[name]:.0f} MiB after a {small.size_bytes / 2**20:.1f} MiB render "
                    f"({SMALL_SCENES} scenes), {after_large[name]:.0f} MiB after a {large.size_bytes / 2**20:.1f} MiB "
                    f"render ({LARGE_SCENES} scenes, {large.duration_ms / 60000:.1f} min of 720p30, "
                    f"{large.seconds:.0f} s to render): growth {growth:+.1f} MiB (flat means < 10 MiB)"
                ],
            )
        )
    return figures
