"""Figure 9 (issue 20): how much of the machine an offline render uses, against the code it started from.

The offline demo (`examples/safety-ladder.yaml`, what `make demo` renders) and a 12-scene script (bench.common's
narrations, 1080p30 with captions) are rendered through a LocalStack of this tree and one of BASELINE, the commit
before issue 20 (unpacked with `git archive`; its own LocalStack and services, run with this tree's interpreter and
generated code), runs alternating between the two. The CPU of a render is read from every stack process's
`cpu_times()` before and after it: its own user and system time (piper's onnxruntime threads included) and that of
its exited, reaped children (FFmpeg), with any child still running counted as well. Utilisation is that CPU divided
by (cores x wall time). Then two stacks of this tree, with 2 and with 4 scenes in flight (MAX_CONCURRENT_SCENES),
render the 12 scenes twice each, alternating: more scenes in flight must not cost more CPU for the same work.

While a render runs, a sampler lists each stack process's children every 50 ms (FFmpeg runs, named by their output
file) and the Render stream's progress events are time-stamped: the timeline printed at the end, and the one-line
"where the time goes" notes, show which parts of the render run alone.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from scenecast.v1 import render_service_pb2, types_pb2

from bench.common import NARRATIONS, Figure, TreeStack, baseline_tree, log, scene, tree_stack
from scenecast_cli.client import render_to_file
from scenecast_cli.script import load_script

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "safety-ladder.yaml"
RUNS = 3
SAMPLE_SECONDS = 0.05
# Scenes in flight (the gateway's MAX_CONCURRENT_SCENES) for the two extra runs of this tree.
IN_FLIGHT = (2, 4)


@dataclass
class Measured:
    """One render: wall time, CPU seconds per stack process (children included), and its timeline."""

    wall: float
    cpu: dict[str, float]
    events: list[tuple[float, str]] = field(default_factory=list)
    # Each FFmpeg run ("assembler piece-3.mp4") with when it was first and last seen.
    runs: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def utilisation(self) -> float:
        return sum(self.cpu.values()) / ((os.cpu_count() or 1) * self.wall)


def _cpu(process: psutil.Process) -> float:
    """The process's CPU seconds and those of its children, exited (reaped) or still running."""
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return total


class _Sampler(threading.Thread):
    """Notes when each FFmpeg child of the stack is first and last seen (every SAMPLE_SECONDS)."""

    def __init__(self, processes: dict[str, psutil.Process], started: float) -> None:
        super().__init__(daemon=True)
        self._processes = processes
        self._origin = started
        self._stop_event = threading.Event()
        # (service, pid) -> (label, first seen, last seen), in seconds from the render's start.
        self.children: dict[tuple[str, int], tuple[str, float, float]] = {}

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_SECONDS):
            now = time.perf_counter() - self._origin
            for name, process in self._processes.items():
                with contextlib.suppress(psutil.NoSuchProcess):
                    for child in process.children():
                        key = (name, child.pid)
                        if key in self.children:
                            label, first, _ = self.children[key]
                            self.children[key] = (label, first, now)
                            continue
                        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                            self.children[key] = (f"{name} {_output_name(child.cmdline())}", now, now)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _output_name(argv: list[str]) -> str:
    """What a child (FFmpeg) writes: its last file argument (a scene's segment, the mix, the soundtrack, the movie)."""
    files = [Path(arg).name for arg in argv[1:] if "/" in arg and Path(arg).suffix]
    return files[-1] if files else "?"


_ASSET_KINDS = {types_pb2.MEDIA_KIND_IMAGE: "slide", types_pb2.MEDIA_KIND_SPEECH: "speech"}


def _render(stack: TreeStack, request: render_service_pb2.RenderRequest, movie: Path) -> Measured:
    processes = {name: psutil.Process(pid) for name, pid in stack.pids.items()}
    before = {name: _cpu(process) for name, process in processes.items()}
    events: list[tuple[float, str]] = []
    started = time.perf_counter()

    def on_progress(progress: render_service_pb2.RenderProgress) -> None:
        at = time.perf_counter() - started
        if progress.stage == render_service_pb2.RENDER_STAGE_ASSET_READY:
            events.append((at, f"scene {progress.scene_index} {_ASSET_KINDS.get(progress.media_kind, '?')} ready"))
        elif progress.stage == render_service_pb2.RENDER_STAGE_SCENE_ENCODED:
            events.append((at, f"scene {progress.scene_index} segment encoded"))
        elif progress.stage in (render_service_pb2.RENDER_STAGE_MUXING, render_service_pb2.RENDER_STAGE_STREAMING):
            events.append((at, progress.message))

    sampler = _Sampler(processes, started)
    sampler.start()
    try:
        render_to_file(stack.gateway_address, request, movie, on_progress, timeout_seconds=900)
        wall = time.perf_counter() - started
    finally:
        sampler.stop()
    cpu = {name: _cpu(process) - before[name] for name, process in processes.items()}
    runs = sorted(sampler.children.values(), key=lambda run: run[1])
    for label, first, last in runs:
        events.append((first, f"{label} starts"))
        events.append((last, f"{label} ends (last seen)"))
    events.append((wall, "summary received"))
    movie.unlink()
    return Measured(wall, cpu, sorted(events), runs)


def _twelve_scenes() -> render_service_pb2.RenderRequest:
    output = types_pb2.OutputSettings(
        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=1080, fps=30, captions=True, quality=types_pb2.QUALITY_STANDARD
    )
    return render_service_pb2.RenderRequest(scenes=[scene(i) for i in range(len(NARRATIONS))], output=output)


def _no_cache(request: render_service_pb2.RenderRequest) -> render_service_pb2.RenderRequest:
    """Every run pays for its speech and slides instead of timing the asset cache."""
    copy = render_service_pb2.RenderRequest()
    copy.CopyFrom(request)
    copy.no_cache = True
    return copy


@contextlib.contextmanager
def _stack(work: Path, name: str, tree: Path | None, extra: dict[str, str]) -> Iterator[TreeStack]:
    """`tree_stack` after one short render: lazy start-up work (fonts, first connections) is not the render's."""
    with tree_stack(work, name, tree, extra) as stack:
        warm = render_service_pb2.RenderRequest(scenes=[scene(0)], output=_twelve_scenes().output, no_cache=True)
        render_to_file(stack.gateway_address, warm, work / f"warm-{name}.mp4", timeout_seconds=300)
        yield stack


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def _timeline(measured: Measured) -> str:
    cpu = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in measured.cpu.items())
    lines = [f"wall {measured.wall:.2f} s, CPU {cpu}, utilisation {measured.utilisation:.2f}"]
    lines += [f"  {at:6.2f} s  {what}" for at, what in measured.events]
    return "\n".join(lines)


def _where_the_time_goes(measured: Measured) -> str:
    """The timeline in one line: when each scene's speech arrived, and each FFmpeg run's span."""
    speech = [f"{at:.1f}" for at, what in measured.events if what.endswith("speech ready")]
    runs = ", ".join(f"{label.split()[-1]} {first:.1f}-{last:.1f}" for label, first, last in measured.runs)
    cpu = ", ".join(f"{name} {seconds:.1f}" for name, seconds in measured.cpu.items() if seconds >= 0.05)
    return (
        f"wall {measured.wall:.1f} s; CPU s {cpu}; speech ready at {', '.join(speech)} s; FFmpeg runs (s): {runs}; "
        f"summary at {measured.wall:.1f} s"
    )


def run(work: Path) -> list[Figure]:
    demo, twelve = _no_cache(load_script(DEMO).request), _no_cache(_twelve_scenes())
    jobs = {"demo": demo, "12 scenes": twelve}
    results: dict[tuple[str, str], list[Measured]] = {}
    with contextlib.ExitStack() as stacks:
        tree = stacks.enter_context(baseline_tree(work))
        variants = {
            "today": stacks.enter_context(_stack(work, "today", tree, {})),
            "now": stacks.enter_context(_stack(work, "now", None, {})),
        }
        for attempt in range(RUNS):
            for job, request in jobs.items():
                for variant, stack in variants.items():
                    measured = _render(stack, request, work / "movie.mp4")
                    results.setdefault((variant, job), []).append(measured)
                    log(f"{job} {variant} {attempt + 1}/{RUNS}: {measured.wall:.2f} s, {measured.utilisation:.2f}")
    in_flight: dict[int, list[Measured]] = {scenes: [] for scenes in IN_FLIGHT}
    with contextlib.ExitStack() as stacks:
        limited = {
            scenes: stacks.enter_context(
                _stack(work, f"in-flight-{scenes}", None, {"MAX_CONCURRENT_SCENES": str(scenes)})
            )
            for scenes in IN_FLIGHT
        }
        for _ in range(2):
            for scenes, stack in limited.items():
                in_flight[scenes].append(_render(stack, twelve, work / "movie.mp4"))

    figures = []
    for job in jobs:
        for variant in ("today", "now"):
            figure = Figure(
                f"utilisation-{job}-{variant}".replace(" ", "-"),
                f"9. {job} render, CPU / (cores x wall), {'before issue 20' if variant == 'today' else 'now'}",
                "x",
                ">= 0.8" if variant == "now" else "",
                lambda value: value >= 0.8,
            )
            figure.samples = [m.utilisation for m in results[(variant, job)]]
            figures.append(figure)
    ratio = Figure(
        "utilisation-demo-wall", "9. demo render wall time, now / before issue 20", "x", "<= 0.6", lambda v: v <= 0.6
    )
    ratio.samples = [
        now.wall / today.wall for now, today in zip(results[("now", "demo")], results[("today", "demo")], strict=True)
    ]
    cpu_ratio = Figure(
        "utilisation-cpu",
        "9. 12 scenes, CPU seconds now / before issue 20 (overhead of the concurrency)",
        "x",
        "",
        lambda _: True,
    )
    cpu_ratio.samples = [
        sum(now.cpu.values()) / sum(today.cpu.values())
        for now, today in zip(results[("now", "12 scenes")], results[("today", "12 scenes")], strict=True)
    ]
    figures += [ratio, cpu_ratio]
    for job in jobs:
        walls = {variant: [m.wall for m in results[(variant, job)]] for variant in ("today", "now")}
        figures[0].notes.append(
            f"{job}: wall time before issue 20 {_spread(walls['today'])} s, now {_spread(walls['now'])} s"
        )
    for scenes, measured in in_flight.items():
        figures[0].notes.append(
            f"12 scenes with MAX_CONCURRENT_SCENES={scenes}: wall {_spread([m.wall for m in measured])} s, utilisation "
            f"{_spread([m.utilisation for m in measured])}, CPU {_spread([sum(m.cpu.values()) for m in measured])} s"
        )
    for (variant, job), measured in results.items():
        typical = sorted(measured, key=lambda m: m.wall)[len(measured) // 2]
        log(f"where the time goes, {job}, {variant} (the median run):\n{_timeline(typical)}")
        figures[0].notes.append(f"where the time goes, {job}, {variant} (median run): {_where_the_time_goes(typical)}")
    for note in figures[0].notes:
        log(note)
    return figures
