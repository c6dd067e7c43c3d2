"""Figure 6 (issue 8): a 12-scene render, then the same script with one narration edited; calls and wall times.

The asset cache and the segment cache are on here, each run pair in fresh folders: the first render pays for every
asset and encode, the re-render only for the edited scene. The fake OpenAI answers at once, so the times are the
local work alone (generation latency would widen the gap further).
"""

from __future__ import annotations

import time
from pathlib import Path

from scenecast.v1 import render_service_pb2, types_pb2

from bench.common import Figure, log, output
from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack
from tests.e2e.test_cache_render import segment_counts
from tests.fakes.openai_server import FakeOpenAI

SCENES = 12
EDITED = 6
RUNS = 3
OUTPUT = output(720, 30)
IMAGES, SPEECH = "/v1/images/generations", "/v1/audio/speech"


def _request(narrations: list[str]) -> render_service_pb2.RenderRequest:
    scenes = [
        types_pb2.Scene(id=f"s{index}", narration=text, visual_prompt=f"A ladder, view {index}.")
        for index, text in enumerate(narrations)
    ]
    return render_service_pb2.RenderRequest(scenes=scenes, output=OUTPUT)


def run(work: Path) -> list[Figure]:
    narrations = [f"Step {i}: check the feet, the rungs and the braces before you climb." for i in range(SCENES)]
    edited = [*narrations]
    edited[EDITED] = "Step six, edited: keep three points of contact at all times."
    full = Figure("rerender-full", "6. 12-scene render, empty caches, seconds", "s", "", lambda _: True)
    again = Figure("rerender-edit", "6. the same render after one narration edit, seconds", "s", "", lambda _: True)
    ratio = Figure("rerender-ratio", "6. re-render after one edit / full render", "x", "", lambda _: True)
    for attempt in range(RUNS):
        folder = work / f"run-{attempt}"
        with FakeOpenAI() as fake:
            env = {
                "IMAGE_PROVIDER": "gpt-image-1-mini",
                "TTS_PROVIDER": "openai",
                "OPENAI_API_KEY": fake.api_key,
                "OPENAI_BASE_URL": f"{fake.base_url}/v1",
                "ALLOW_PRIVATE_OUTPUT_URLS": "true",
                "ASSET_CACHE_DIR": str(folder / "assets"),
                "SEGMENT_CACHE_DIR": str(folder / "segments"),
                "RENDER_OUTPUT_DIR": str(folder / "renders"),
            }
            with LocalStack(env=env, log_dir=work) as stack:
                counts = []
                for figure, narration in ((full, narrations), (again, edited)):
                    started = time.perf_counter()
                    movie = folder / "movie.mp4"
                    render_to_file(stack.gateway_address, _request(narration), movie, timeout_seconds=600)
                    figure.samples.append(time.perf_counter() - started)
                    calls = (len(fake.requests_to(IMAGES, "POST")), len(fake.requests_to(SPEECH, "POST")))
                    counts.append((*calls, *segment_counts(stack.metrics_ports["assembler"])))
        ratio.samples.append(again.samples[-1] / full.samples[-1])
        log(f"re-render {attempt + 1}/{RUNS}: {full.samples[-1]:.2f} s then {again.samples[-1]:.2f} s; {counts}")
    (images, speech, _, encoded), (images_after, speech_after, reused, encoded_after) = counts
    full.notes.append(
        f"12 scenes, 720p30 standard, gpt-image-1-mini + openai speech on the fake OpenAI (instant answers): "
        f"{images} image and {speech} speech calls, {encoded} segment encodes"
    )
    again.notes.append(
        f"scene {EDITED}'s narration edited: {images_after - images} more image calls, {speech_after - speech} more "
        f"speech calls, {encoded_after - encoded} segment encoded and {reused} joined from the segment cache"
    )
    return [full, again, ratio]
