"""Piper speaks several sentences at once, of one narration or several, never more than PIPER_CONCURRENCY, each
narration as it would alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from services.audio.providers.base import SpeechJob, SpeechResult
from services.audio.providers.piper import PiperProvider, PiperSettings
from services.common.providers import Quality

SHORT = "Hold the rails."
MEDIUM = "Set the feet on firm, level ground. Never prop a ladder on boxes or pallets. That is the safe angle."
# Many times longer than SHORT to speak: it is still speaking when SHORT, started after it, is done.
LONG = " ".join(
    [
        "Before you climb, look at the ladder from top to bottom, and check the rails and rungs for cracks.",
        "Lean it at one unit out for every four units up, and extend it one metre above the landing.",
        "Face the ladder as you climb, and keep three points of contact with it at all times.",
    ]
    * 4
)
# Waiting for a state the provider reports, not a time limit: only a hung provider reaches it.
_HUNG_SECONDS = 120.0


@pytest.fixture(scope="module")
def piper() -> PiperProvider:
    return PiperProvider(PiperSettings(piper_concurrency=2))


async def speak(provider: PiperProvider, text: str) -> SpeechResult:
    return await provider.synthesize(SpeechJob(text=text, voice="", quality=Quality.STANDARD))


def speaking() -> float:
    value = REGISTRY.get_sample_value("scenecast_piper_sentences_speaking")
    assert value is not None
    return value


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(_HUNG_SECONDS):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_narration_is_spoken_while_another_is_in_progress(piper: PiperProvider) -> None:
    long_call = asyncio.create_task(speak(piper, LONG))
    try:
        await until(lambda: speaking() >= 1)
        short = await speak(piper, SHORT)
        # One narration at a time would have kept SHORT waiting until LONG was spoken.
        assert not long_call.done()
        assert short.data
    finally:
        long_call.cancel()
        await asyncio.gather(long_call, return_exceptions=True)


async def test_a_narration_alone_speaks_its_sentences_on_every_slot(piper: PiperProvider) -> None:
    # Alone: a cancelled narration of an earlier test may still be finishing its sentence on a slot.
    await until(lambda: speaking() == 0)
    call = asyncio.create_task(speak(piper, MEDIUM))
    peak = 0.0
    while not call.done():
        peak = max(peak, speaking())
        await asyncio.sleep(0.005)
    # Three sentences on two slots: one narration at a time per slot would have left one core waiting.
    assert peak == 2
    assert [t.text for t in (await call).timings][:3] == ["Set", "the", "feet"]


async def test_narrations_past_the_setting_wait_for_a_slot(piper: PiperProvider) -> None:
    calls = asyncio.gather(*(speak(piper, MEDIUM) for _ in range(3)))
    peak = 0.0
    while not calls.done():
        peak = max(peak, speaking())
        await asyncio.sleep(0.005)
    assert len(await calls) == 3
    assert peak == 2


async def test_narrations_spoken_together_are_what_each_makes_alone(piper: PiperProvider) -> None:
    # Piper's voice samples its pitch and durations at random (VITS noise), so no two runs of a text give the same
    # bytes, together or not: the words, their order and the format are compared, and the length within a fifth
    # (run to run it varies by about 3%).
    texts = (MEDIUM, SHORT, LONG[:300])
    alone = [await speak(piper, text) for text in texts]
    together = await asyncio.gather(*(speak(piper, text) for text in texts))
    for one, other in zip(alone, together, strict=True):
        assert [t.text for t in other.timings] == [t.text for t in one.timings]
        assert all(t.is_word for t in other.timings)
        assert other.data[8:36] == one.data[8:36]  # the WAV format chunk: rate, channels, sample size
        assert other.timings[-1].end_ms == pytest.approx(one.timings[-1].end_ms, rel=0.2)
