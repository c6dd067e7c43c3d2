"""Two image service replicas sharing one Redis pay once for an asset that both are asked for at the same time."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families
from scenecast.v1 import image_service_pb2, image_service_pb2_grpc, types_pb2

from scenecast_cli.stack import free_port, wait_until_serving
from tests.fakes.base import Fault
from tests.fakes.openai_server import FakeOpenAI
from tests.redis_server import RedisServer

IMAGES = "/v1/images/generations"
CALLS = 8
# The fake image API answers the first request this late, so every call arrives while that image is being made.
SLOW_SECONDS = 1.5
OUTPUT = types_pb2.OutputSettings(aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=180, quality=types_pb2.QUALITY_DRAFT)


@contextlib.contextmanager
def _image_replicas(count: int, env: dict[str, str], log_dir: Path) -> Iterator[list[tuple[str, int]]]:
    """Image service processes, each with its own gRPC address and metrics port."""
    replicas: list[tuple[str, int]] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            address, metrics_port = f"127.0.0.1:{free_port()}", free_port()
            variables = {**os.environ, **env, "LISTEN_ADDRESS": address, "METRICS_PORT": str(metrics_port)}
            with (log_dir / f"image-{index}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen([sys.executable, "-m", "services.image"], env=variables, stdout=log, stderr=log)
                )
            replicas.append((address, metrics_port))
        for (address, _), process in zip(replicas, processes, strict=True):
            wait_until_serving(address, 30, process)
        yield replicas
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _generate(address: str, prompt: str) -> tuple[bytes, bool]:
    request = image_service_pb2.GenerateImageRequest(scene=types_pb2.Scene(visual_prompt=prompt), output=OUTPUT)
    with grpc.insecure_channel(address) as channel:
        metadata: types_pb2.AssetMetadata | None = None
        data = bytearray()
        for response in image_service_pb2_grpc.ImageServiceStub(channel).GenerateImage(request, timeout=30):
            if response.HasField("metadata"):
                metadata = response.metadata
            else:
                data += response.chunk.data
    assert metadata is not None and metadata.size_bytes == len(data)
    return bytes(data), metadata.cache_hit


def _waits(metrics_port: int) -> dict[str, float]:
    """The replica's single-flight waits for images, by where the call it waited for ran."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    waits = {"process": 0.0, "shared": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "scenecast_asset_cache_waits_total" and sample.labels["kind"] == "image":
                waits[sample.labels["where"]] += sample.value
    return waits


def test_concurrent_identical_requests_over_two_replicas_reach_the_provider_once(tmp_path: Path) -> None:
    with RedisServer() as redis_server, FakeOpenAI() as fake:
        env = {
            "IMAGE_PROVIDER": "gpt-image-1-mini",
            **fake.service_env(),
            "ASSET_CACHE_URL": redis_server.url,
        }
        with _image_replicas(2, env, tmp_path) as replicas:
            fake.add_fault(Fault(IMAGES, status=0, hang_seconds=SLOW_SECONDS))
            addresses = [replicas[index % 2][0] for index in range(CALLS)]  # spread evenly over both replicas
            with ThreadPoolExecutor(CALLS) as pool:
                first = list(pool.map(_generate, addresses, ["A ladder against a wall."] * CALLS))
            assert len(fake.requests_to(IMAGES, "POST")) == 1, "one replica called the provider; the other waited"
            assert len({data for data, _ in first}) == 1, "every caller got the same bytes"
            assert sorted(hit for _, hit in first) == [False] + [True] * (CALLS - 1), "and only one paid"
            waits = [_waits(port) for _, port in replicas]
            # Per replica, the calls after the first joined it; one replica's call waited for the other's.
            assert sum(w["process"] for w in waits) == CALLS - 2
            assert sorted(w["shared"] for w in waits) == [0, 1]

            with ThreadPoolExecutor(CALLS) as pool:
                other = list(pool.map(_generate, addresses, ["A stool in a workshop."] * CALLS))
            assert len(fake.requests_to(IMAGES, "POST")) == 2, "a different prompt costs exactly one more"
            assert len({data for data, _ in other}) == 1 and sum(not hit for _, hit in other) == 1
