"""A whole render with Kling clips mixed with a still, chosen by environment variables alone, against FakeKling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scenecast.v1 import types_pb2

from scenecast_cli.client import get_config
from scenecast_cli.stack import LocalStack
from tests import prices
from tests.e2e.stack_renders import check_narrated_scenes
from tests.e2e.test_tier3_render import _render, _request
from tests.fakes.kling_server import ACCESS_KEY, SECRET_KEY, FakeKling

KEYS = {"KLING_ACCESS_KEY": ACCESS_KEY, "KLING_SECRET_KEY": SECRET_KEY}


@pytest.fixture(scope="module")
def kling_fake() -> Iterator[FakeKling]:
    with FakeKling() as fake:
        yield fake


def test_kling_clips_mixed_with_a_still(kling_fake: FakeKling, tmp_path: Path) -> None:
    kling_fake.polls_to_finish = 2
    env = {**KEYS, "VIDEO_PROVIDER": "kling", "KLING_BASE_URL": kling_fake.base_url, "KLING_POLL_SECONDS": "0.05"}
    summary, estimate, path = _render(env, tmp_path, _request(still_scene=1))
    check_narrated_scenes(path, summary)
    kinds = [(s.visual.provider, s.visual.mime_type) for s in summary.scenes]
    assert kinds == [("kling", "video/mp4"), ("slides", "image/png"), ("kling", "video/mp4")]
    # The scene image was sent along, so Kling animated it (image to video) for both clip scenes.
    creates = kling_fake.creates()
    assert [r.path for r in creates] == ["/v1/videos/image2video"] * 2
    assert [r.json()["duration"] for r in creates] == ["5", "5"]
    # A 5 s clip under a longer narration is looped; the estimate and the render price it alike.
    clip_cost = prices.KLING_V1_6_STD_PER_5S
    assert [e.video_usd for e in estimate.scenes] == [clip_cost, 0.0, clip_cost]
    assert [s.estimated_cost_usd for s in summary.scenes] == [clip_cost, 0.0, clip_cost]


def test_get_config_lists_kling_with_its_price(tmp_path: Path) -> None:
    with LocalStack(env=KEYS, log_dir=tmp_path) as stack:
        config = get_config(stack.gateway_address)
    [videos] = [s for s in config.provider_sets if s.kind == types_pb2.MEDIA_KIND_VIDEO]
    [kling] = [p for p in videos.providers if p.name == "kling"]
    assert (kling.offline, kling.configured) == (False, True)
    assert list(kling.required_env) == ["KLING_ACCESS_KEY", "KLING_SECRET_KEY"]
    [price] = kling.prices
    assert (price.model, price.unit, price.usd_per_unit) == ("kling-v1-6", "5 s of clip", prices.KLING_V1_6_STD_PER_5S)
    assert "std mode" in price.note
