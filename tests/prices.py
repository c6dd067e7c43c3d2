"""Published prices the tests expect (shared/docs/providers.md), written apart from the provider code that charges them,
so a wrong price in a provider fails a test instead of moving both sides."""

from __future__ import annotations

# USD per image at standard quality, wide or tall (1536x1024 or 1024x1536; dall-e-3: 1792x1024 or 1024x1792).
GPT_IMAGE_1_MINI_STANDARD_WIDE = 0.015
DALL_E_3_STANDARD_WIDE = 0.080


def tts_1(characters: int) -> float:
    """OpenAI tts-1 (draft and standard quality): $15 per 1M characters."""
    return characters * 15 / 1_000_000
