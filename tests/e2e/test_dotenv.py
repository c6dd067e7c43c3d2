"""A .env in a service's working folder configures its providers, as .env.example promises: the image service,
started in that folder with a clean environment, makes its images with the provider, key and base URL that .env names.
(Issue 15: IMAGE_PROVIDER from .env took effect, but the providers read OPENAI_API_KEY from the environment only.)"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import grpc
from PIL import Image
from scenecast.v1 import image_service_pb2, image_service_pb2_grpc, types_pb2

from scenecast_cli.stack import free_port, wait_until_serving
from tests.fakes.openai_server import COLOUR, FakeOpenAI

KEY = "sk-dotenv-0123456789"


def test_dotenv_in_the_working_folder_chooses_the_provider_and_gives_its_key(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with FakeOpenAI(api_key=KEY) as fake:
        (tmp_path / ".env").write_text(
            f"IMAGE_PROVIDER=gpt-image-1-mini\nOPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={fake.base_url}/v1\n"
            f"LISTEN_ADDRESS={address}\nASSET_CACHE_DIR=off\n"
        )
        # Nothing of the test's environment but where programs are and a home of its own.
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
        with (tmp_path / "image.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.image"], cwd=tmp_path, env=env, stdout=log, stderr=log
            )
        try:
            wait_until_serving(address, 60.0, process)
            with grpc.insecure_channel(address) as channel:
                stub = image_service_pb2_grpc.ImageServiceStub(channel)
                request = image_service_pb2.GenerateImageRequest(
                    scene=types_pb2.Scene(id="s1", narration="A ladder.", visual_prompt="A ladder against a wall."),
                    output=types_pb2.OutputSettings(
                        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=360, quality=types_pb2.QUALITY_STANDARD
                    ),
                )
                responses = list(stub.GenerateImage(request, timeout=60.0))
                [estimate] = stub.EstimateImageCost(
                    image_service_pb2.EstimateImageCostRequest(requests=[request]), timeout=10.0
                ).estimates
        finally:
            process.terminate()
            process.wait(timeout=30)
        [sent] = fake.requests_to("/v1/images/generations")
    metadata = responses[0].metadata
    assert (metadata.provider, metadata.model) == ("gpt-image-1-mini", "gpt-image-1-mini")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    image = Image.open(io.BytesIO(b"".join(r.chunk.data for r in responses[1:])))
    assert (image.size, image.convert("RGB").getpixel((320, 180))) == ((640, 360), COLOUR)
    # The estimate names the same provider and matches what the image was charged at.
    assert (estimate.provider, estimate.usd) == ("gpt-image-1-mini", metadata.estimated_cost_usd)
    assert estimate.usd == 0.015
