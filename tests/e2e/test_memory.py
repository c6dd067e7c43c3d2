"""Memory stays flat: the gateway and the assembler stream the MP4 through disk, never holding it whole."""

from __future__ import annotations

from pathlib import Path

from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def _request(scenes: int) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=[
            types_pb2.Scene(
                id=f"s{i:02d}",
                title=f"Checkpoint {i}",
                visual_prompt="A busy loading dock with forklifts, pallets, pedestrians and marked walkways.",
                narration=f"Checkpoint {i}. Look both ways at every crossing, and make eye contact with the driver.",
            )
            for i in range(scenes)
        ],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=480, fps=24, quality=types_pb2.QUALITY_DRAFT
        ),
    )


def test_peak_memory_does_not_grow_with_the_output(stack: LocalStack, tmp_path: Path) -> None:
    gateway, assembler = stack.processes["gateway"].pid, stack.processes["assembler"].pid
    small = render_to_file(stack.gateway_address, _request(4), tmp_path / "small.mp4", timeout_seconds=300)
    after_small = {"gateway": peak_rss_mb(gateway), "assembler": peak_rss_mb(assembler)}
    large = render_to_file(stack.gateway_address, _request(40), tmp_path / "large.mp4", timeout_seconds=600)
    after_large = {"gateway": peak_rss_mb(gateway), "assembler": peak_rss_mb(assembler)}
    growth_mb = {name: after_large[name] - after_small[name] for name in after_small}
    output_mb = large.size_bytes / 2**20
    print(f"output {small.size_bytes / 2**20:.1f} MiB -> {output_mb:.1f} MiB; peak RSS {after_small} -> {after_large}")
    # Ten times the scenes and the bytes; the peaks stay put (what moves is per-scene buffering, not the video).
    assert large.size_bytes > 8 * small.size_bytes
    for name, growth in growth_mb.items():
        assert growth < 10, f"{name} peak grew {growth:.1f} MiB for a {output_mb:.1f} MiB video"
        assert after_large[name] < 200, f"{name} peak {after_large[name]:.0f} MiB"
