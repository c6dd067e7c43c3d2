"""Figure 3: a 12-scene render whose providers each take a fixed latency costs about one scene's latency, not twelve."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scenecast.v1 import render_service_pb2

from bench.common import Figure, assemble, generate_image, log, output, render, scene, stack_env, synthesize, timed
from bench.slow_openai import SlowOpenAI
from scenecast_cli.stack import LocalStack

LATENCY_SECONDS = 1.5
SCENES = 12
RUNS = 3
OUTPUT = output(720, 30)


def run(work: Path) -> list[Figure]:
    scenes = [scene(i) for i in range(SCENES)]
    request = render_service_pb2.RenderRequest(scenes=scenes, output=OUTPUT)
    with SlowOpenAI(LATENCY_SECONDS) as fake:
        env = stack_env(
            work,
            {
                "IMAGE_PROVIDER": "gpt-image-1-mini",
                "TTS_PROVIDER": "openai",
                "OPENAI_API_KEY": fake.api_key,
                "OPENAI_BASE_URL": f"{fake.base_url}/v1",
                "ALLOW_PRIVATE_OUTPUT_URLS": "true",
                "MAX_CONCURRENT_SCENES": str(SCENES),
            },
        )
        with LocalStack(env=env, log_dir=work) as stack:
            # The parts measured apart: each scene's image and speech (at the same time, as the gateway asks for
            # them), one scene after another so they do not compete; then assembly of those very assets.
            per_scene, images, speech = [], [], []
            with ThreadPoolExecutor(2) as pool:
                for index, item in enumerate(scenes):
                    start = time.perf_counter()
                    image = pool.submit(generate_image, stack.addresses["image"], item, OUTPUT, index)
                    narration = pool.submit(synthesize, stack.addresses["audio"], item.narration)
                    images.append(image.result())
                    speech.append(narration.result())
                    per_scene.append(time.perf_counter() - start)
            slowest = max(per_scene)
            assembly_s, _ = timed(
                lambda: assemble(stack.addresses["assembler"], scenes, images, speech, OUTPUT, work / "parts.mp4")
            )
            log(f"fan-out parts: slowest scene {slowest:.2f} s, assembly {assembly_s:.1f} s")
            walls, first_bytes = [], []
            for attempt in range(RUNS):
                timing = render(stack.gateway_address, request, work / "fanout.mp4")
                walls.append(timing.seconds)
                first_bytes.append(timing.first_byte_seconds)
                log(f"fan-out {attempt + 1}/{RUNS}: {timing.seconds:.1f} s, 1st byte {timing.first_byte_seconds:.1f} s")
    bound = slowest + assembly_s
    ratio = Figure(
        "fanout-ratio",
        "3. 12-scene render wall time / (slowest scene's generation + assembly)",
        "x",
        "<= 1.15",
        lambda value: value <= 1.15,
        [wall / bound for wall in walls],
        [
            f"fake OpenAI image and speech at {LATENCY_SECONDS} s per request, MAX_CONCURRENT_SCENES={SCENES}, "
            f"720p30 standard; slowest scene {slowest:.2f} s + assembly {assembly_s:.1f} s = {bound:.1f} s "
            f"(serial generation would add {sum(per_scene) - slowest:.1f} s)"
        ],
    )
    wall = Figure("fanout-wall", "3. 12-scene render wall time, seconds", "s", "", lambda _: True, walls)
    first = Figure("fanout-first-byte", "3. time to first MP4 byte, seconds", "s", "", lambda _: True, first_bytes)
    return [ratio, wall, first]
