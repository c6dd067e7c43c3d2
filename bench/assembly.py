"""Figures 1 and 2: the assembler against MoviePy 2.2 and against one bare FFmpeg encode of the same frames."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import OUTPUT_1080, Figure, assemble, generate_image, log, scene, synthesize, timed
from scenecast_cli.stack import LocalStack
from services.assembler.config import AssemblerSettings
from services.common.media import ffmpeg_exe

BENCH = Path(__file__).resolve().parent
MOVIEPY_VENV = BENCH / ".venv-moviepy"
MOVIEPY_PIN = "moviepy==2.2.*"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
SCENECAST_RUNS = 3
LIMIT_RUNS = 3
FPS = 30


def ensure_moviepy() -> Path:
    """MoviePy lives only in the benchmark's own venv (it pins pillow < 12, which the project does not)."""
    python = MOVIEPY_VENV / "bin" / "python"
    if not python.exists() or subprocess.run([python, "-c", "import moviepy"], capture_output=True).returncode:
        log(f"creating {MOVIEPY_VENV} with {MOVIEPY_PIN}")
        subprocess.run(["python3.11", "-m", "venv", str(MOVIEPY_VENV)], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", MOVIEPY_PIN], check=True)
    return python


def run(work: Path) -> list[Figure]:
    moviepy_python = ensure_moviepy()
    settings = AssemblerSettings()
    scenes = [scene(i) for i in range(12)]
    with LocalStack(log_dir=work) as stack:
        log("generating 12 slides and piper narrations once")
        with ThreadPoolExecutor(4) as pool:
            images = list(
                pool.map(lambda i: generate_image(stack.addresses["image"], scenes[i], OUTPUT_1080, i), range(12))
            )
            speech = list(pool.map(lambda s: synthesize(stack.addresses["audio"], s.narration), scenes))
        assembly_s, summary = [], None
        for attempt in range(SCENECAST_RUNS):
            seconds, summary = timed(
                lambda: assemble(stack.addresses["assembler"], scenes, images, speech, OUTPUT_1080, work / "sc.mp4")
            )
            assembly_s.append(seconds)
            log(f"scenecast assembly {attempt + 1}/{SCENECAST_RUNS}: {seconds:.1f} s")
    assert summary is not None
    total_frames = round(summary.duration_ms * FPS / 1000)
    video_s = summary.duration_ms / 1000

    # The same assets as files, for MoviePy and for the bare encode.
    slides, wavs = [], []
    for index, (image, narration) in enumerate(zip(images, speech, strict=True)):
        slides.append(work / f"slide-{index}.png")
        slides[-1].write_bytes(image[1])
        wavs.append(work / f"narration-{index}.wav")
        wavs[-1].write_bytes(narration[1])

    limit_s = []
    for attempt in range(LIMIT_RUNS):
        seconds, _ = timed(lambda: subprocess.run(limit_command(slides[0], wavs, total_frames, work), check=True))
        limit_s.append(seconds)
        log(f"bare FFmpeg encode {attempt + 1}/{LIMIT_RUNS}: {seconds:.1f} s")

    manifest = {
        "width": 1920,
        "height": 1080,
        "fps": FPS,
        "threads": 2,
        "lead_ms": settings.scene_lead_ms,
        "tail_ms": settings.scene_tail_ms,
        "fade_ms": settings.fade_ms,
        "font": FONT,
        "output": str(work / "moviepy.mp4"),
        "scenes": [
            {
                "image": str(slide),
                "audio": str(wav),
                "narration_ms": narration[0].duration_ms,
                "cues": [{"text": t.text, "start_ms": t.start_ms, "end_ms": t.end_ms} for t in narration[0].timings]
                or [{"text": item.narration, "start_ms": 0, "end_ms": narration[0].duration_ms}],
            }
            for slide, wav, narration, item in zip(slides, wavs, speech, scenes, strict=True)
        ],
    }
    manifest_path = work / "moviepy.json"
    manifest_path.write_text(json.dumps(manifest))
    log("MoviePy 2.2 job (one run, about 3 minutes)")
    moviepy_s, _ = timed(
        lambda: subprocess.run([moviepy_python, BENCH / "moviepy_job.py", manifest_path], check=True, cwd=work)
    )
    log(f"MoviePy: {moviepy_s:.1f} s")

    job = f"12 scenes, {video_s:.1f} s, 1920x1080 at 30 fps, stills + piper narration + fades + sentence captions"
    raw = Figure(
        "assembly-seconds",
        "scenecast assembly (Assemble call), seconds",
        "s",
        "",
        lambda _: True,
        assembly_s,
        [job],
    )
    moviepy = Figure("moviepy-seconds", "MoviePy 2.2 equivalent script, seconds", "s", "", lambda _: True, [moviepy_s])
    moviepy.notes.append(
        "one run only: at ~3 min per run several would not fit the 15 min budget of `make bench`; "
        "its speed-up is computed against each scenecast run"
    )
    speedup = Figure(
        "moviepy-speedup",
        "1. MoviePy time / scenecast assembly time",
        "x",
        ">= 10",
        lambda value: value >= 10,
        [moviepy_s / seconds for seconds in assembly_s],
    )
    limit = Figure(
        "limit-seconds",
        f"bare FFmpeg encode of the same {total_frames} frames + AAC, seconds",
        "s",
        "",
        lambda _: True,
        limit_s,
    )
    limit_median = sorted(limit_s)[len(limit_s) // 2]
    ratio = Figure(
        "limit-ratio",
        "2. scenecast assembly / bare encode (median of the bare encode)",
        "x",
        "<= 1.3",
        lambda value: value <= 1.3,
        [seconds / limit_median for seconds in assembly_s],
    )
    return [raw, moviepy, speedup, limit, ratio]


def limit_command(still: Path, wavs: list[Path], frames: int, work: Path) -> list[str]:
    """The least work that yields this video: one still decoded once and repeated, the narrations joined, encoded."""
    audio_inputs = "".join(f"[{i + 1}:a]" for i in range(len(wavs)))
    graph = (
        f"[0:v]scale=1920:1080,format=yuv420p,loop=loop={frames - 1}:size=1:start=0,setpts=N/({FPS}*TB)[v];"
        f"{audio_inputs}concat=n={len(wavs)}:v=0:a=1,aresample=48000,aformat=channel_layouts=stereo[a]"
    )
    inputs = [arg for wav in wavs for arg in ("-i", str(wav))]
    return [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", str(still), *inputs,
        "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
        "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-r", str(FPS), "-c:a", "aac", "-b:a", "192k", str(work / "limit.mp4"),
    ]  # fmt: skip


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-assembly-") as folder:
        started = time.perf_counter()
        for figure in run(Path(folder)):
            print(figure.title, figure.cells(), figure.verdict(), file=sys.stderr)
        print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
