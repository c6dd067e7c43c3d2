"""The cost table: published prices (shared/docs/providers.md) and the estimates built on them, in one place.

Providers price the assets they make with these functions, the gateway prices whole scripts with the same ones
(EstimateCost), and GetConfig shows the table. Figures marked "assumed" are not published per unit; they are our
estimate of GPU seconds and say so in their note.
"""

from __future__ import annotations

import math
import os

from services.common.providers import Price, Quality

# OpenAI Images, USD per image: (square 1024x1024, wide or tall) by quality.
DALL_E_3 = {Quality.STANDARD: (0.040, 0.080), Quality.HD: (0.080, 0.120)}
GPT_IMAGE_1_MINI = {Quality.DRAFT: (0.005, 0.006), Quality.STANDARD: (0.011, 0.015), Quality.HD: (0.036, 0.052)}
# Replicate.
FLUX_DEV_PER_IMAGE = 0.025
L40S_PER_SECOND = 0.000975
T4_PER_SECOND = 0.000225
# Assumed GPU time: SDXL at 1024px takes about 0.25 s per step on an L40S; Kokoro about 1 s per 100 characters on a T4.
SDXL_SECONDS_PER_STEP = 0.25
KOKORO_SECONDS_PER_CHAR = 0.01
# OpenAI Speech, USD per character.
TTS_1_PER_CHAR = 15 / 1_000_000
TTS_1_HD_PER_CHAR = 30 / 1_000_000

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


def dall_e_3_cost(quality: Quality, square: bool) -> float:
    square_price, wide_price = DALL_E_3[Quality.HD if quality == Quality.HD else Quality.STANDARD]
    return square_price if square else wide_price


def gpt_image_1_mini_cost(quality: Quality, square: bool) -> float:
    square_price, wide_price = GPT_IMAGE_1_MINI[quality]
    return square_price if square else wide_price


def sdxl_cost(steps: int, gpu_seconds: float | None = None) -> float:
    """Billed by GPU time: the measured predict_time when known, else the assumed time for the step count."""
    return L40S_PER_SECOND * (gpu_seconds if gpu_seconds is not None else steps * SDXL_SECONDS_PER_STEP)


def openai_tts_cost(quality: Quality, characters: int) -> float:
    return characters * (TTS_1_HD_PER_CHAR if quality == Quality.HD else TTS_1_PER_CHAR)


def kokoro_cost(characters: int, gpu_seconds: float | None = None) -> float:
    return T4_PER_SECOND * (gpu_seconds if gpu_seconds is not None else characters * KOKORO_SECONDS_PER_CHAR)


# What GetConfig shows, per provider name.
PRICE_TABLE: dict[str, tuple[Price, ...]] = {
    "dall-e-3": (
        Price("dall-e-3", "image", 0.040, "standard, 1024x1024"),
        Price("dall-e-3", "image", 0.080, "standard, 1792x1024 or 1024x1792"),
        Price("dall-e-3", "image", 0.080, "hd, 1024x1024"),
        Price("dall-e-3", "image", 0.120, "hd, 1792x1024 or 1024x1792"),
    ),
    "gpt-image-1-mini": tuple(
        Price("gpt-image-1-mini", "image", price, f"{level}, {size}")
        for quality, level in ((Quality.DRAFT, "low"), (Quality.STANDARD, "medium"), (Quality.HD, "high"))
        for price, size in zip(GPT_IMAGE_1_MINI[quality], ("1024x1024", "1536x1024 or 1024x1536"), strict=True)
    ),
    "flux": (Price("black-forest-labs/flux-dev", "image", FLUX_DEV_PER_IMAGE),),
    "sdxl": (
        Price(
            "stability-ai/sdxl",
            "GPU second",
            L40S_PER_SECOND,
            f"L40S; assumed {SDXL_SECONDS_PER_STEP} s per step, 25-50 steps by quality",
        ),
    ),
    "openai": (
        Price("tts-1", "character", TTS_1_PER_CHAR, "$15 per 1M characters"),
        Price("tts-1-hd", "character", TTS_1_HD_PER_CHAR, "$30 per 1M characters"),
    ),
    "kokoro": (
        Price(
            "jaaari/kokoro-82m", "GPU second", T4_PER_SECOND, f"T4; assumed {KOKORO_SECONDS_PER_CHAR} s per character"
        ),
    ),
    "edge": (Price("edge-tts", "character", 0.0, "free service, not for commercial use"),),
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


def estimate_image(provider: str, quality: Quality, aspect: str) -> float:
    """What one image from `provider` is expected to cost before it is made; offline providers are free."""
    square = aspect == "1:1"
    if provider == "dall-e-3":
        return dall_e_3_cost(quality, square)
    if provider == "gpt-image-1-mini":
        return gpt_image_1_mini_cost(quality, square)
    if provider == "flux":
        return FLUX_DEV_PER_IMAGE
    if provider == "sdxl":
        return sdxl_cost(SDXL_STEPS[quality])
    return 0.0


def estimate_speech(provider: str, quality: Quality, characters: int) -> float:
    """What speaking `characters` characters with `provider` is expected to cost."""
    if provider == "openai":
        return openai_tts_cost(quality, characters)
    if provider == "kokoro":
        return kokoro_cost(characters)
    return 0.0


# Wan 2.1: 81 frames at 16 fps.
WAN_CLIP_SECONDS = 81 / 16
# Typical narration pace, used to guess clip lengths before the speech exists.
SPOKEN_CHARS_PER_SECOND = 15.0


def estimate_clip(provider: str, seconds: float) -> float:
    """What one clip of `seconds` from `provider` is expected to cost (offline motion is free)."""
    if provider == "wan":
        return wan_cost(WAN_CLIP_SECONDS)  # Wan makes a fixed-length clip that the assembler loops
    if provider == "selfhosted":
        return selfhosted_usd_per_second() * seconds
    return 0.0


def estimate_avatar(provider: str, seconds: float) -> float:
    """What an avatar video of `seconds` from `provider` is expected to cost."""
    if provider == "heygen":
        return heygen_cost(seconds)
    if provider == "synthesia":
        return synthesia_cost(seconds)
    return 0.0


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
