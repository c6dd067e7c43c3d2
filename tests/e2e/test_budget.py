"""The spending cap: refused before any spend when the estimate is over it, stopped when recorded spend crosses it.

The gateway runs with an operator cap (MAX_RENDER_COST_USD) that requests may lower but never raise.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
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
OPERATOR_CAP = 0.1


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
        "MAX_RENDER_COST_USD": str(OPERATOR_CAP),
    }
    with LocalStack(env=env, log_dir=tmp_path_factory.mktemp("budget-logs")) as local:
        yield local


def _request(
    cap: float, image: str, speech: str, scenes: list[types_pb2.Scene] = SCENES
) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=scenes,
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


@pytest.mark.parametrize("cap", [math.nan, math.inf, -0.01, -math.inf])
def test_a_cap_that_is_not_a_finite_amount_is_invalid_argument(
    stack: LocalStack, replicate_fake: FakeReplicate, tmp_path: Path, cap: float
) -> None:
    replicate_fake.reset()
    request = _request(cap, "flux", "piper")
    for call in (
        lambda: estimate_cost(stack.gateway_address, request),
        lambda: render_to_file(stack.gateway_address, request, tmp_path / "x.mp4", timeout_seconds=60),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert error.value.details() == (  # type: ignore[attr-defined]
            "max_cost_usd must be a finite number of US dollars, 0 or more (0: the gateway's MAX_RENDER_COST_USD); "
            f"got {cap}"
        )
    assert replicate_fake.requests_to("/v1/", "POST") == []


@pytest.mark.parametrize("cap", [0.0, 0.2, 1e300])
def test_no_request_lifts_the_operators_cap(
    stack: LocalStack, replicate_fake: FakeReplicate, tmp_path: Path, cap: float
) -> None:
    replicate_fake.reset()
    scenes = [types_pb2.Scene(id=f"m{i}", title=f"Step {i}", narration="Keep the exit clear.") for i in range(6)]
    request = _request(cap, "flux", "piper", scenes)
    assert estimate_cost(stack.gateway_address, request).total_usd == pytest.approx(0.15)
    with pytest.raises(grpc.RpcError) as error:
        render_to_file(stack.gateway_address, request, tmp_path / "x.mp4", timeout_seconds=60)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert (
        "over max_cost_usd $0.1000 (the gateway's MAX_RENDER_COST_USD, which a request can only lower)"
        in error.value.details()  # type: ignore[attr-defined]
    )
    assert replicate_fake.requests_to("/v1/", "POST") == []


@pytest.mark.parametrize("predict_time", [math.nan, -1000.0])
def test_a_cost_that_cannot_be_counted_stops_the_render(
    stack: LocalStack, replicate_fake: FakeReplicate, tmp_path: Path, predict_time: float
) -> None:
    replicate_fake.reset()
    # Kokoro is billed by the predict_time Replicate reports: NaN would make the running total NaN (never over any
    # cap), a negative time would pay spend back.
    replicate_fake.predict_time = predict_time
    request = _request(0.05, "", "kokoro")
    request.no_cache = True  # a cached narration would cost nothing
    with pytest.raises(grpc.RpcError) as error:
        render_to_file(stack.gateway_address, request, tmp_path / "x.mp4", timeout_seconds=60)
    assert error.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert "kokoro reported a cost of" in error.value.details()  # type: ignore[attr-defined]
    assert "cannot be counted against the spending cap; stopped" in error.value.details()  # type: ignore[attr-defined]
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_the_operators_cap_must_be_a_finite_amount_at_start_up(value: str) -> None:
    env = {**os.environ, "MAX_RENDER_COST_USD": value, "LISTEN_ADDRESS": "127.0.0.1:0", "LOG_FORMAT": "text"}
    started = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert started.returncode != 0
    assert "MAX_RENDER_COST_USD must be a finite number of US dollars, 0 or more (0: no cap)" in started.stderr
