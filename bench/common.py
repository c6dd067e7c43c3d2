"""Shared pieces of the benchmarks: the scripts rendered, timing statistics, the machine's description, gRPC calls."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from scenecast.v1 import (
    assembler_service_pb2 as asm_pb,
)
from scenecast.v1 import (
    assembler_service_pb2_grpc,
    audio_service_pb2,
    audio_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    render_service_pb2,
    render_service_pb2_grpc,
    types_pb2,
)

from services.assembler.ffmpeg import nvenc_works
from services.common.chunks import iter_chunks
from services.common.media import ffmpeg_exe
from services.common.server import MAX_MESSAGE_BYTES

_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]

# Twelve scenes of two sentences each: about 60 s of piper narration with the assembler's lead and tail.
NARRATIONS = [
    "Before you climb, look at the ladder from top to bottom. Check the rails and rungs for cracks.",
    "Set the feet on firm, level ground. Never prop a ladder on boxes or pallets.",
    "Lean it at one unit out for every four units up. That is the safe angle.",
    "Extend it one metre above the landing. You need something to hold as you step off.",
    "Face the ladder as you climb. Keep three points of contact at all times.",
    "Carry tools in a belt or hoist them up. Your hands are for the ladder.",
    "Do not lean out past the rails. Climb down and move the ladder instead.",
    "Never stand on the top two rungs. They are there for balance, not footing.",
    "Keep the area around the base clear. Cone it off where people walk past.",
    "Watch for overhead power lines. Metal ladders conduct electricity.",
    "Stop work in strong wind or rain. A wet rung is a slippery rung.",
    "Report any damage at once. Tag the ladder out of service until it is fixed.",
]


def scene(index: int, narration: str | None = None) -> types_pb2.Scene:
    return types_pb2.Scene(
        id=f"s{index:02d}",
        title=f"Ladder safety {index + 1}",
        visual_prompt="A worker checking an aluminium ladder on a building site, clear daylight.",
        narration=narration or NARRATIONS[index % len(NARRATIONS)],
    )


def output(height: int, fps: int, quality: int = types_pb2.QUALITY_STANDARD) -> types_pb2.OutputSettings:
    return types_pb2.OutputSettings(aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=height, fps=fps, quality=quality)


OUTPUT_1080 = output(1080, 30)


def stack_env(work: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The services' environment for a benchmark's LocalStack, `extra` on top.

    The segment cache is off: with it, every Assemble or Render after the first of the same scenes would join cached
    segments, and the figures would time the cache instead of the encoder. Finished renders are written under the
    benchmark's own folder, removed with it, instead of the gateway's default output folder.
    """
    return {"SEGMENT_CACHE_DIR": "off", "RENDER_OUTPUT_DIR": str(work / "renders"), **(extra or {})}


@dataclass
class Figure:
    """One benchmark figure: its samples (seconds or a ratio), the target, and notes for the report."""

    key: str
    title: str
    unit: str
    target: str
    met: Callable[[float], bool]
    samples: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def cells(self) -> tuple[str, str, str, str]:
        """Median, min, max and runs as table cells."""
        if not self.samples:
            return ("n/a", "n/a", "n/a", "0")
        return (_fmt(self.median), _fmt(min(self.samples)), _fmt(max(self.samples)), str(len(self.samples)))

    def verdict(self) -> str:
        if self.error:
            return "not measured"
        if not self.samples:
            return "n/a"
        return "met" if self.met(self.median) else "**missed**"


def _fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    first_line = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=True).stdout
    return {
        "CPUs (`nproc`)": str(os.cpu_count()),
        "CPU model": cpu,
        "memory": f"{mem_kb / 2**20:.1f} GiB",
        "Python": platform.python_version(),
        "FFmpeg": first_line.splitlines()[0].removeprefix("ffmpeg version ").split(" Copyright")[0]
        + " (imageio-ffmpeg)",
        # What the assembler's VIDEO_ENCODER=auto picks here: the same one-frame test encode.
        "H.264 encoder": "h264_nvenc (NVENC)"
        if nvenc_works(ffmpeg_exe())
        else "libx264: NVENC not available (no NVIDIA GPU or driver: FFmpeg's h264_nvenc test encode fails)",
        "OS": platform.platform(),
    }


# --- another tree's stack -------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
# main before issue 20: the "today" of its targets.
BASELINE = "69436f3c3f366d087d8eb9ace035ac9b70b2b0d6"


@contextlib.contextmanager
def baseline_tree(work: Path) -> Iterator[Path]:
    """BASELINE's files, unpacked from this repository's history."""
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    yield tree


# Run in the tree under test by its own interpreter: starts that tree's LocalStack (whatever services it has), prints
# the gateway's address, the services' process ids and addresses, and stops the stack when its standard input closes.
_SERVE = """
import json, sys
from pathlib import Path
from scenecast_cli.stack import LocalStack
stack = LocalStack(env=json.loads(sys.argv[1]), log_dir=Path(sys.argv[2])).start(timeout_seconds=120)
processes = {name: p.pid for name, p in stack.processes.items()}
print(json.dumps([stack.gateway_address, processes, stack.addresses]), flush=True)
sys.stdin.read()
stack.stop()
"""


@dataclass
class TreeStack:
    gateway_address: str
    pids: dict[str, int]
    # Each service's address ("assembler": "127.0.0.1:50054"), as LocalStack names them.
    addresses: dict[str, str]


@contextlib.contextmanager
def tree_stack(work: Path, name: str, tree: Path | None, extra: dict[str, str]) -> Iterator[TreeStack]:
    """The LocalStack of `tree` (`python -c` puts the working folder first on the path), or of this tree's installed
    packages when None, each with its own list of services.

    Both run in a folder without a .env (this tree's could choose other providers for one side only), with the
    offline providers named, whatever the caller's environment says.
    """
    logs = work / f"logs-{name}"
    logs.mkdir()
    folder = tree or work / f"cwd-{name}"
    folder.mkdir(exist_ok=True)
    env = stack_env(work / name, {"IMAGE_PROVIDER": "slides", "TTS_PROVIDER": "piper", "VIDEO_PROVIDER": "", **extra})
    with subprocess.Popen(
        [sys.executable, "-c", _SERVE, json.dumps(env), str(logs)],
        cwd=folder,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as server:
        assert server.stdin is not None and server.stdout is not None
        try:
            line = server.stdout.readline()
            if not line:
                raise RuntimeError(f"the {name} stack did not start; see {logs}")
            address, pids, addresses = json.loads(line)
            yield TreeStack(address, pids, addresses)
        finally:
            server.stdin.close()
            server.wait(timeout=60)


# --- gRPC calls -----------------------------------------------------------------------------------------------------

Asset = tuple[types_pb2.AssetMetadata, bytes]


def _collect(responses: Iterable[object]) -> Asset:
    metadata, data = None, bytearray()
    for response in responses:
        if response.HasField("metadata"):  # type: ignore[attr-defined]
            metadata = response.metadata  # type: ignore[attr-defined]
        else:
            data += response.chunk.data  # type: ignore[attr-defined]
    assert metadata is not None
    return metadata, bytes(data)


def generate_image(address: str, item: types_pb2.Scene, out: types_pb2.OutputSettings, index: int) -> Asset:
    with grpc.insecure_channel(address, options=_OPTIONS) as channel:
        stub = image_service_pb2_grpc.ImageServiceStub(channel)
        request = image_service_pb2.GenerateImageRequest(scene=item, output=out, scene_index=index, no_cache=True)
        return _collect(stub.GenerateImage(request, timeout=300))


def synthesize(address: str, text: str) -> Asset:
    with grpc.insecure_channel(address, options=_OPTIONS) as channel:
        stub = audio_service_pb2_grpc.AudioServiceStub(channel)
        return _collect(
            stub.SynthesizeSpeech(audio_service_pb2.SynthesizeSpeechRequest(text=text, no_cache=True), timeout=300)
        )


def _assemble_messages(
    scenes: list[types_pb2.Scene], images: list[Asset], speech: list[Asset], out: types_pb2.OutputSettings
) -> Iterator[asm_pb.AssembleRequest]:
    yield asm_pb.AssembleRequest(start=asm_pb.AssemblyStart(output=out, scene_count=len(scenes)))
    for index, (item, image, narration) in enumerate(zip(scenes, images, speech, strict=True)):
        start = asm_pb.SceneStart(scene_index=index, scene=item, visual=image[0], narration=narration[0])
        yield asm_pb.AssembleRequest(scene=start)
        for role, (_, data) in ((asm_pb.ASSET_ROLE_VISUAL, image), (asm_pb.ASSET_ROLE_NARRATION, narration)):
            for chunk in iter_chunks(data):
                yield asm_pb.AssembleRequest(chunk=asm_pb.SceneChunk(scene_index=index, role=role, chunk=chunk))


def assemble(
    address: str,
    scenes: list[types_pb2.Scene],
    images: list[Asset],
    speech: list[Asset],
    out: types_pb2.OutputSettings,
    movie: Path,
) -> asm_pb.AssemblySummary:
    """Sends every scene's assets to the assembler and writes the MP4 it streams back."""
    summary = None
    with grpc.insecure_channel(address, options=_OPTIONS) as channel, movie.open("wb") as handle:
        stub = assembler_service_pb2_grpc.AssemblerServiceStub(channel)
        for response in stub.Assemble(_assemble_messages(scenes, images, speech, out), timeout=900):
            kind = response.WhichOneof("payload")
            if kind == "chunk":
                handle.write(response.chunk.data)
            elif kind == "summary":
                summary = response.summary
    assert summary is not None
    return summary


@dataclass
class RenderTiming:
    seconds: float
    first_byte_seconds: float
    size_bytes: int
    duration_ms: int


def render(address: str, original: render_service_pb2.RenderRequest, movie: Path) -> RenderTiming:
    """A whole render through the gateway, timing the first MP4 byte and the summary.

    The asset cache is bypassed: every run must pay for its generation, or repeated runs would time cache hits.
    """
    request = render_service_pb2.RenderRequest()
    request.CopyFrom(original)
    request.no_cache = True
    start = time.perf_counter()
    first_byte = 0.0
    with grpc.insecure_channel(address, options=_OPTIONS) as channel, movie.open("wb") as handle:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        for response in stub.Render(request, timeout=900):
            kind = response.WhichOneof("payload")
            if kind == "chunk":
                if not first_byte:
                    first_byte = time.perf_counter() - start
                handle.write(response.chunk.data)
            elif kind == "summary":
                summary = response.summary
                return RenderTiming(time.perf_counter() - start, first_byte, summary.size_bytes, summary.duration_ms)
    raise RuntimeError("the render stream ended without a summary")
