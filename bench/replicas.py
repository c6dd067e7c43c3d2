"""Figure 5: a second replica of a latency-bound service nearly doubles the throughput of concurrent renders."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from scenecast.v1 import render_service_pb2, types_pb2

from bench.common import Figure, log, output, render, scene, stack_env
from bench.slow_openai import SlowOpenAI
from scenecast_cli.stack import LocalStack

RENDERS = 6
SCENES_PER_RENDER = 4
LATENCY_SECONDS = 1.0
RUNS = 3
OUTPUT = output(240, 15, types_pb2.QUALITY_DRAFT)


@dataclass
class _PerReplicaStack(LocalStack):
    """A LocalStack whose audio replicas each talk to their own speech server (`speech_urls`, in replica order)."""

    speech_urls: list[str] = field(default_factory=list)

    def _spawn(self, name: str, module: str, address: str, env: dict[str, str]) -> None:
        if name == "audio" or name.startswith("audio-"):
            replica = 0 if name == "audio" else int(name.split("-")[1]) - 1
            env = {**env, "OPENAI_BASE_URL": f"{self.speech_urls[replica]}/v1"}
        super()._spawn(name, module, address, env)


def _batch(stack: LocalStack, work: Path, attempt: int) -> float:
    requests = [
        render_service_pb2.RenderRequest(
            render_id=f"bench-{attempt}-{r}",
            scenes=[scene(r * SCENES_PER_RENDER + i) for i in range(SCENES_PER_RENDER)],
            output=OUTPUT,
        )
        for r in range(RENDERS)
    ]
    start = time.perf_counter()
    with ThreadPoolExecutor(RENDERS) as pool:
        list(pool.map(lambda rq: render(stack.gateway_address, rq, work / f"{rq.render_id}.mp4"), requests))
    return time.perf_counter() - start


def _walls(replicas: int, work: Path) -> list[float]:
    # A folder per stack: a gateway re-indexes the results it finds at start-up, so the second stack would refuse the
    # first one's render ids (ALREADY_EXISTS) in a shared folder.
    work = work / f"{replicas}-audio-replicas"
    work.mkdir()
    fakes = [SlowOpenAI(LATENCY_SECONDS, concurrency=1) for _ in range(replicas)]
    urls = [fake.start() for fake in fakes]
    try:
        env = stack_env(
            work, {"TTS_PROVIDER": "openai", "OPENAI_API_KEY": fakes[0].api_key, "OPENAI_BASE_URL": f"{urls[0]}/v1"}
        )
        stack = _PerReplicaStack(env=env, log_dir=work, replicas={"audio": replicas}, speech_urls=urls)
        with stack:
            walls = []
            for attempt in range(RUNS):
                walls.append(_batch(stack, work, attempt))
                log(f"{replicas} audio replica(s), batch {attempt + 1}/{RUNS}: {walls[-1]:.1f} s")
            return walls
    finally:
        for fake in fakes:
            fake.stop()


def run(work: Path) -> list[Figure]:
    one = _walls(1, work)
    two = _walls(2, work)
    design = (
        f"{RENDERS} renders of {SCENES_PER_RENDER} scenes submitted at once (240p draft, slides); the audio service "
        f"uses TTS_PROVIDER=openai against a fake that takes {LATENCY_SECONDS} s per request and serves one at a "
        "time, one such server per audio replica (a model server per pod): latency-bound, not CPU-bound"
    )
    return [
        Figure(
            "replica-speedup",
            "5. throughput with 2 audio replicas / with 1",
            "x",
            ">= 1.8",
            lambda value: value >= 1.8,
            [a / b for a, b in zip(one, two, strict=True)],
            [design],
        ),
        Figure(
            "replica-1",
            f"5. {RENDERS} concurrent renders, 1 audio replica: renders per minute",
            "/min",
            "",
            lambda _: True,
            [RENDERS * 60 / wall for wall in one],
        ),
        Figure(
            "replica-2",
            f"5. {RENDERS} concurrent renders, 2 audio replicas: renders per minute",
            "/min",
            "",
            lambda _: True,
            [RENDERS * 60 / wall for wall in two],
        ),
    ]
