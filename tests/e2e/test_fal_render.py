"""A whole render with Fal's FLUX.1 [dev] images, chosen by environment variables alone, against FakeFal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scenecast.v1 import types_pb2

from scenecast_cli.client import get_config
from scenecast_cli.stack import LocalStack
from tests import prices
from tests.e2e.test_cloud_render import _render
from tests.e2e.test_render import SCENES
from tests.fakes.fal_server import KEY, FakeFal


@pytest.fixture(scope="module")
def fal_fake() -> Iterator[FakeFal]:
    with FakeFal() as fake:
        yield fake


def test_fal_flux_images(fal_fake: FakeFal, tmp_path: Path) -> None:
    fal_fake.polls_to_finish = 2
    env = {"IMAGE_PROVIDER": "fal-flux", "FAL_KEY": KEY, "FAL_QUEUE_URL": fal_fake.base_url, "FAL_POLL_SECONDS": "0.05"}
    estimate, summary = _render(env, tmp_path)
    assert {s.visual.provider for s in summary.scenes} == {"fal-flux"}
    assert summary.scenes[0].visual.model == "fal-ai/flux/dev"
    submits = fal_fake.submits()
    assert len(submits) == len(fal_fake.jobs) == len(SCENES)
    assert all(r.json()["image_size"] == {"width": 1280, "height": 720} for r in submits)
    price = prices.FAL_FLUX_DEV_PER_MEGAPIXEL  # 1280x720 is under one megapixel
    assert [e.image_usd for e in estimate.scenes] == [price] * len(SCENES)
    assert [s.visual.estimated_cost_usd for s in summary.scenes] == [price] * len(SCENES)


def test_get_config_lists_fal_flux_with_its_price(tmp_path: Path) -> None:
    with LocalStack(env={"FAL_KEY": KEY}, log_dir=tmp_path) as stack:
        config = get_config(stack.gateway_address)
    [images] = [s for s in config.provider_sets if s.kind == types_pb2.MEDIA_KIND_IMAGE]
    [fal] = [p for p in images.providers if p.name == "fal-flux"]
    assert (fal.offline, fal.configured, list(fal.required_env)) == (False, True, ["FAL_KEY"])
    [price] = fal.prices
    assert (price.model, price.unit, price.usd_per_unit) == ("fal-ai/flux/dev", "megapixel", 0.025)
    assert "1 unit per image" in price.note
