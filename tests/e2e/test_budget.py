"""The spending cap: refused before any spend when the estimate is over it, stopped when recorded spend crosses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import estimate_cost, render_to_file
from scenecast_cli.stack import LocalStack
from tests.fakes.replicate_server import TOKEN, FakeReplicate

SCENES = [
    types_pb2.Scene(id=f"s{i}", title=f"Step {i}", narration=f"Step {i}: keep the exit clear at all times.")
    for i in range(3)
]


@pytest.fixture(scope="module")
def replicate_fake() -> Iterator[FakeReplicate]:
    with FakeReplicate() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(replicate_fake: FakeReplicate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {
        "REPLICATE_API_TOKEN": TOKEN,
        "REPLICATE_BASE_URL": replicate_fake.base_url,
        "REPLICATE_POLL_INTERVAL": "0.05",
    }
    with LocalStack(env=env, log_dir=tmp_path_factory.mktemp("budget-logs")) as local:
        yield local


def _request(cap: float, image: str, speech: str) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=SCENES,
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
        ),
        providers=types_pb2.ProviderOverrides(image=image, speech=speech),
        max_cost_usd=cap,
    )


def test_a_render_estimated_over_the_cap_is_refused_before_any_spend(
    stack: LocalStack, replicate_fake: FakeReplicate, tmp_path: Path
) -> None:
    replicate_fake.reset()
    request = _request(0.05, "flux", "piper")
    estimate = estimate_cost(stack.gateway_address, request).total_usd
    assert estimate == pytest.approx(0.075)
    with pytest.raises(grpc.RpcError) as error:
        render_to_file(stack.gateway_address, request, tmp_path / "x.mp4", timeout_seconds=60)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "$0.0750" in error.value.details() and "max_cost_usd $0.0500" in error.value.details()  # type: ignore[attr-defined]
    assert replicate_fake.requests_to("/v1/", "POST") == []


def test_a_render_whose_recorded_spend_crosses_the_cap_stops(
    stack: LocalStack, replicate_fake: FakeReplicate, tmp_path: Path
) -> None:
    replicate_fake.reset()
    # Kokoro is estimated with an assumed GPU time but billed with the predict_time Replicate reports (1.5 s here),
    # so the estimate passes a cap that the real spend crosses.
    request = _request(0.0006, "", "kokoro")
    assert estimate_cost(stack.gateway_address, request).total_usd < 0.0006
    with pytest.raises(grpc.RpcError) as error:
        render_to_file(stack.gateway_address, request, tmp_path / "x.mp4", timeout_seconds=60)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "above max_cost_usd $0.0006; stopped" in error.value.details()  # type: ignore[attr-defined]
    assert not (tmp_path / "x.mp4").exists()


def test_a_generous_cap_lets_the_render_through(stack: LocalStack, tmp_path: Path) -> None:
    summary = render_to_file(stack.gateway_address, _request(1.0, "flux", "piper"), tmp_path / "ok.mp4", None, 60)
    assert summary.estimated_cost_usd == pytest.approx(0.075)
