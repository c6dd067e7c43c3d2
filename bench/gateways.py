"""Figure 7: renders per minute with 1, 2 and 3 gateway replicas that share a Redis and a PostgreSQL (issue 14)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from scenecast.v1 import render_service_pb2, types_pb2

from bench.common import Figure, log, output, render, scene, stack_env
from bench.slow_openai import SlowOpenAI
from scenecast_cli.stack import LocalStack
from tests.gateway_replicas import GatewayReplicas
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

LATENCY_SECONDS = 8.0
SCENES_PER_RENDER = 1
# Renders one replica is given at a time. A gateway by itself takes any number of renders at once, and on this
# machine one gateway keeps up with all of them (it mostly waits: see the uncapped figure), so without a per-replica
# cap a second replica would add nothing to measure. With one, a replica's capacity is fixed, as in a deployment
# scaled on work in flight, where each pod is given about this many renders before another pod is added.
PER_REPLICA = 2
RENDERS_PER_REPLICA = 4
REPLICAS = (1, 2, 3)
RUNS = 3
OUTPUT = output(180, 10, types_pb2.QUALITY_DRAFT)


def _requests(count: int, tag: str) -> list[render_service_pb2.RenderRequest]:
    return [
        render_service_pb2.RenderRequest(
            render_id=f"{tag}-{r}",
            scenes=[scene(r * SCENES_PER_RENDER + i) for i in range(SCENES_PER_RENDER)],
            output=OUTPUT,
        )
        for r in range(count)
    ]


def _renders_per_minute(
    addresses: list[str], per_replica: int, requests: list[render_service_pb2.RenderRequest], work: Path
) -> float:
    """Throughput of `per_replica` workers per address, each rendering its share of `requests` one after another.

    The workers start spread over one provider latency, as the renders of independent users arrive at different
    times: started together, every render's assets would arrive at the same instant and all their assemblies would
    compete for the cores at once, a lockstep that no real load has and that grows with the number of replicas. Each
    worker's rate is counted from its own start to its own end, so the spread start costs nothing, and summed.
    """
    workers = [address for address in addresses for _ in range(per_replica)]
    shares = [requests[index :: len(workers)] for index in range(len(workers))]
    rates = [0.0] * len(workers)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            time.sleep(index * LATENCY_SECONDS / len(workers))
            start = time.perf_counter()
            for request in shares[index]:
                render(workers[index], request, work / f"{request.render_id}.mp4")
            rates[index] = len(shares[index]) / (time.perf_counter() - start)
        except BaseException as error:  # noqa: BLE001 - raised below, in the benchmark's own thread
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(rates) * 60


def run(work: Path) -> list[Figure]:
    per_minute: dict[int, list[float]] = {count: [] for count in REPLICAS}
    with (
        SlowOpenAI(LATENCY_SECONDS) as fake,
        RedisServer() as redis_server,
        PostgresServer() as postgres,
    ):
        env = stack_env(
            work,
            {
                "IMAGE_PROVIDER": "gpt-image-1-mini",
                "TTS_PROVIDER": "openai",
                "OPENAI_API_KEY": fake.api_key,
                "OPENAI_BASE_URL": f"{fake.base_url}/v1",
                "ALLOW_PRIVATE_OUTPUT_URLS": "true",
                "RENDER_STATE_URL": redis_server.url,
                "ASSET_CACHE_URL": redis_server.url,
                "SPEND_LEDGER_URL": postgres.database(),
            },
        )
        with LocalStack(env=env, log_dir=work) as stack:
            extra = GatewayReplicas(stack, env, work)
            try:
                addresses = [stack.gateway_address, extra.start("gateway-2"), extra.start("gateway-3")]
                for attempt in range(RUNS):
                    # Paired runs: 1, 2 and 3 replicas one after another, so load on the machine hits all alike.
                    for count in REPLICAS:
                        renders = RENDERS_PER_REPLICA * count
                        requests = _requests(renders, f"gw{count}-{attempt}")
                        rate = _renders_per_minute(addresses[:count], PER_REPLICA, requests, work)
                        per_minute[count].append(rate)
                        log(f"{count} gateway(s), run {attempt + 1}/{RUNS}: {renders} renders, {rate:.1f} per minute")
                renders = RENDERS_PER_REPLICA * REPLICAS[-1]
                uncapped = _renders_per_minute(addresses[:1], renders, _requests(renders, "uncapped"), work)
                log(f"1 gateway given all {renders} renders at once: {uncapped:.1f} per minute")
            finally:
                extra.stop()
    design = (
        f"renders of {SCENES_PER_RENDER} scene(s) (180p10 draft, gpt-image-1-mini and openai speech on a fake that "
        f"answers each call after {LATENCY_SECONDS:.0f} s, any number at once: I/O-bound); {RENDERS_PER_REPLICA} "
        f"renders per replica, each replica given at most {PER_REPLICA} at a time, the workers' starts spread over "
        f"{LATENCY_SECONDS:.0f} s; the gateways share "
        "one Redis (RENDER_STATE_URL, ASSET_CACHE_URL) and one PostgreSQL ledger (SPEND_LEDGER_URL) and one set of "
        "media services. The cap makes a replica's capacity fixed, so the figure measures whether the replicas add "
        "up with everything shared, not a gateway's own limit (see the uncapped figure)"
    )
    ratios = {
        count: [many / one for many, one in zip(per_minute[count], per_minute[1], strict=True)] for count in (2, 3)
    }
    return [
        Figure(
            "gateways-speedup-3",
            "7. throughput with 3 gateway replicas / with 1",
            "x",
            ">= 2.7",
            lambda value: value >= 2.7,
            ratios[3],
            [design],
        ),
        Figure(
            "gateways-speedup-2", "7. throughput with 2 gateway replicas / with 1", "x", "", lambda _: True, ratios[2]
        ),
        *(
            Figure(
                f"gateways-{count}",
                f"7. {count} gateway replica(s), {PER_REPLICA} renders each at a time: renders per minute",
                "/min",
                "",
                lambda _: True,
                per_minute[count],
            )
            for count in REPLICAS
        ),
        Figure(
            "gateways-uncapped",
            f"7. 1 gateway given all {renders} renders at once: renders per minute",
            "/min",
            "",
            lambda _: True,
            [uncapped],
            [
                "one run: it shows why the other figures cap each replica; a gateway alone runs every render at "
                "once and is not what limits throughput on this machine"
            ],
        ),
    ]
