"""Pure parts of the fal-flux and kling providers: sizes, prices, settings checked at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.image.providers.fal_images import FalSettings, flux_cost, flux_size
from services.video.providers.kling import USD_PER_5S, KlingSettings, clip_cost


@pytest.mark.parametrize(("aspect", "size"), [("16:9", (1280, 720)), ("9:16", (720, 1280)), ("1:1", (992, 992))])
def test_flux_sizes_keep_the_aspect_in_16_pixel_steps_within_a_megapixel(aspect: str, size: tuple[int, int]) -> None:
    width, height = flux_size(aspect)
    assert (width, height) == size
    assert width % 16 == height % 16 == 0 and width * height <= 1_000_000
    assert flux_cost(width, height) == 0.025


def test_fal_bills_whole_megapixels_rounded_up() -> None:
    assert flux_cost(1024, 1024) == pytest.approx(0.05)  # 1.05 MP is two units, which is why sizes stay under one


def test_kling_prices_follow_model_mode_and_length() -> None:
    assert clip_cost(KlingSettings()) == 0.28  # kling-v1-6, std, 5 s
    assert clip_cost(KlingSettings(kling_mode="pro", kling_duration_seconds=10)) == pytest.approx(0.98)
    assert clip_cost(KlingSettings(kling_model="kling-v2-master", kling_duration_seconds=10)) == pytest.approx(2.8)
    # Every model the setting accepts has a price in both modes.
    models = KlingSettings.model_fields["kling_model"].annotation.__args__  # type: ignore[union-attr]
    assert {(model, mode) for model in models for mode in ("std", "pro")} == set(USD_PER_5S)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"kling_model": "kling-v9"}, "kling_model"), ({"kling_duration_seconds": 7}, "kling_duration_seconds")],
)
def test_kling_settings_refuse_what_kling_does_not_make(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        KlingSettings(**changes)


def test_fal_settings_refuse_a_non_positive_time_limit() -> None:
    with pytest.raises(ValidationError, match="fal_timeout_seconds"):
        FalSettings(fal_timeout_seconds=0)
