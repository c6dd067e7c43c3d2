"""Published prices the tests expect (shared/docs/providers.md), written apart from the provider code that charges them,
so a wrong price in a provider fails a test instead of moving both sides."""

from __future__ import annotations

# USD per image at standard quality, wide or tall (1536x1024 or 1024x1536; dall-e-3: 1792x1024 or 1024x1792).
GPT_IMAGE_1_MINI_STANDARD_WIDE = 0.015
DALL_E_3_STANDARD_WIDE = 0.080


def tts_1(characters: int) -> float:
    """OpenAI tts-1 (draft and standard quality): $15 per 1M characters."""
    return characters * 15 / 1_000_000


def heygen_v3(seconds: float) -> float:
    """HeyGen v3, Avatar IV at 720p/1080p, digital twin or studio avatar: $0.0667 per output second."""
    return seconds * 0.0667


def heygen_v2(seconds: float) -> float:
    """HeyGen v2: 2 credits a minute, per started 30 s, at $0.99 a credit (Pro: $99 for 100 credits)."""
    return -(-seconds // 30) * 0.99


# Synthesia publishes no API price: the provider's assumed default, USD per minute.
SYNTHESIA_ASSUMED_PER_MINUTE = 3.0
# Replicate: FLUX.1 [dev] per image; GPU seconds on an L40S and a T4; Wan 2.1 480p per output second (unconfirmed).
FLUX_DEV_PER_IMAGE = 0.025
L40S_PER_SECOND = 0.000975
T4_PER_SECOND = 0.000225
WAN_PER_OUTPUT_SECOND = 0.09
# Fal: FLUX.1 [dev] per megapixel of output, rounded up (fal-ai/flux/dev model page).
FAL_FLUX_DEV_PER_MEGAPIXEL = 0.025
# Kling kling-v1-6 in std mode, per 5 s clip (a 10 s clip costs twice): 2 units at $0.14.
KLING_V1_6_STD_PER_5S = 0.28
# RunPod serverless: an L40S flex worker per GPU second (docs.runpod.io/serverless/pricing, 2026-08-20).
RUNPOD_L40S_FLEX_PER_SECOND = 0.00053
