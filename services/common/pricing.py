"""TEMPORARY (issue 15): the prices of the provider modules not yet built from settings (Replicate, self-hosted video,
avatar vendors). Each price moves into its provider module as that module is converted; then this file goes.

Figures marked "assumed" are not published per unit; they are our estimate of GPU seconds and say so in their note.
"""

from __future__ import annotations

import math
import os

from services.common.providers import Price, Quality

# Replicate.
FLUX_DEV_PER_IMAGE = 0.025
L40S_PER_SECOND = 0.000975
T4_PER_SECOND = 0.000225
# Assumed GPU time: SDXL at 1024px takes about 0.25 s per step on an L40S; Kokoro about 1 s per 100 characters on a T4.
SDXL_SECONDS_PER_STEP = 0.25
KOKORO_SECONDS_PER_CHAR = 0.01
SDXL_STEPS = {Quality.DRAFT: 25, Quality.STANDARD: 35, Quality.HD: 50}
# Wan 2.1 on Replicate is billed per second of output video (about $0.09/s in third-party code; unconfirmed).
WAN_PER_OUTPUT_SECOND = 0.09
# HeyGen: Pro is $99 for 100 credits; a video avatar costs 2 credits a minute, billed in 30-second steps.
HEYGEN_USD_PER_CREDIT = 0.99
HEYGEN_CREDITS_PER_MINUTE = 2
# Synthesia publishes no per-minute API price (providers.md); this assumed rate is overridable per deployment.
SYNTHESIA_DEFAULT_USD_PER_MINUTE = 3.0


def _env_float(variable: str, default: float) -> float:
    try:
        return float(os.environ.get(variable) or default)
    except ValueError:
        return default


def selfhosted_usd_per_second() -> float:
    """What a second of self-hosted video costs (your GPU time); SELFHOSTED_VIDEO_USD_PER_SECOND, default free."""
    return _env_float("SELFHOSTED_VIDEO_USD_PER_SECOND", 0.0)


def synthesia_usd_per_minute() -> float:
    return _env_float("SYNTHESIA_USD_PER_MINUTE", SYNTHESIA_DEFAULT_USD_PER_MINUTE)


def wan_cost(output_seconds: float) -> float:
    return WAN_PER_OUTPUT_SECOND * output_seconds


def heygen_cost(seconds: float) -> float:
    """Credits are charged per started 30 seconds."""
    steps = max(1, math.ceil(seconds / 30))
    return steps * HEYGEN_CREDITS_PER_MINUTE / 2 * HEYGEN_USD_PER_CREDIT


def synthesia_cost(seconds: float) -> float:
    return synthesia_usd_per_minute() * seconds / 60


def sdxl_cost(steps: int, gpu_seconds: float | None = None) -> float:
    """Billed by GPU time: the measured predict_time when known, else the assumed time for the step count."""
    return L40S_PER_SECOND * (gpu_seconds if gpu_seconds is not None else steps * SDXL_SECONDS_PER_STEP)


def kokoro_cost(characters: int, gpu_seconds: float | None = None) -> float:
    return T4_PER_SECOND * (gpu_seconds if gpu_seconds is not None else characters * KOKORO_SECONDS_PER_CHAR)


# What GetConfig shows, per provider name.
PRICE_TABLE: dict[str, tuple[Price, ...]] = {
    "flux": (Price("black-forest-labs/flux-dev", "image", FLUX_DEV_PER_IMAGE),),
    "sdxl": (
        Price(
            "stability-ai/sdxl",
            "GPU second",
            L40S_PER_SECOND,
            f"L40S; assumed {SDXL_SECONDS_PER_STEP} s per step, 25-50 steps by quality",
        ),
    ),
    "kokoro": (
        Price(
            "jaaari/kokoro-82m", "GPU second", T4_PER_SECOND, f"T4; assumed {KOKORO_SECONDS_PER_CHAR} s per character"
        ),
    ),
    "wan": (
        Price(
            "wavespeedai/wan-2.1-t2v-480p", "output second", WAN_PER_OUTPUT_SECOND, "unconfirmed rate; ~5 s per clip"
        ),
        Price(
            "wavespeedai/wan-2.1-i2v-480p", "output second", WAN_PER_OUTPUT_SECOND, "unconfirmed rate; ~5 s per clip"
        ),
    ),
    "heygen": (
        Price(
            "heygen video avatar",
            "minute",
            HEYGEN_CREDITS_PER_MINUTE * HEYGEN_USD_PER_CREDIT,
            "2 credits a minute at $0.99 a credit (Pro plan), billed per 30 s",
        ),
    ),
}


# Wan 2.1: 81 frames at 16 fps.
WAN_CLIP_SECONDS = 81 / 16


def price_table() -> dict[str, tuple[Price, ...]]:
    """PRICE_TABLE plus the prices that come from settings, as GetConfig shows them."""
    return {
        **PRICE_TABLE,
        "selfhosted": (
            Price(
                "self-hosted video model",
                "output second",
                selfhosted_usd_per_second(),
                "SELFHOSTED_VIDEO_USD_PER_SECOND",
            ),
        ),
        "synthesia": (
            Price(
                "synthesia avatar",
                "minute",
                synthesia_usd_per_minute(),
                "assumed; set SYNTHESIA_USD_PER_MINUTE to your plan's rate",
            ),
        ),
    }
