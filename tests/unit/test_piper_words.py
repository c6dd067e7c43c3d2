"""Piper's word timings, from its phoneme alignments, checked against the loudness of the audio it speaks."""

from __future__ import annotations

import io
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.assembler.soundtrack import speech_bounds
from services.audio.providers.base import SpeechJob, SpeechResult, Timing
from services.audio.providers.piper import PiperProvider, PiperSettings
from services.common.media import probe
from services.common.providers import Quality

# Three sentences whose words next to a pause start or end with a voiced sound: a stop's closure is silent, so an
# energy measure would put "it." ending up to 100 ms before the word's last phoneme does.
NARRATION = (
    "Look at the ladder before you climb. Always hold the rails with both hands. If a rung is loose, move down slowly."
)
SILENCE_DB = -45.0  # the assembler's threshold for speech (services.assembler.soundtrack.speech_bounds)
WINDOW_MS = 10
TOLERANCE_MS = 50


@pytest.fixture(scope="module")
def piper() -> PiperProvider:
    return PiperProvider(PiperSettings())


async def speak(provider: PiperProvider, text: str) -> SpeechResult:
    return await provider.synthesize(SpeechJob(text=text, voice="", quality=Quality.STANDARD))


def levels_db(result: SpeechResult) -> np.ndarray:
    """RMS level of each 10 ms of the WAV, in dBFS."""
    with wave.open(io.BytesIO(result.data)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), np.int16) / 32768
        window = wav.getframerate() * WINDOW_MS // 1000
    frames = samples[: len(samples) // window * window].reshape(-1, window)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)


def pauses(levels: np.ndarray, min_ms: int = 80) -> Iterator[tuple[int, int]]:
    """Silent runs of at least `min_ms` between the first and last sound, as (start_ms, end_ms)."""
    loud = np.flatnonzero(levels > SILENCE_DB)
    run_start = None
    for index in range(loud[0], loud[-1] + 1):
        if levels[index] <= SILENCE_DB and run_start is None:
            run_start = index
        elif levels[index] > SILENCE_DB and run_start is not None:
            if (index - run_start) * WINDOW_MS >= min_ms:
                yield run_start * WINDOW_MS, index * WINDOW_MS
            run_start = None


def overlap_ms(timing: Timing, span: tuple[int, int]) -> int:
    return max(0, min(timing.end_ms, span[1]) - max(timing.start_ms, span[0]))


async def test_words_start_and_end_with_the_speech_and_leave_its_pauses_silent(
    piper: PiperProvider, tmp_path: Path
) -> None:
    result = await speak(piper, NARRATION)
    words = result.timings
    assert all(word.is_word for word in words)
    assert [word.text for word in words] == [token.strip(".,") for token in NARRATION.split()]
    assert all(word.start_ms < word.end_ms for word in words)
    assert all(word.end_ms <= following.start_ms for word, following in zip(words, words[1:], strict=False))

    path = tmp_path / "narration.wav"
    path.write_bytes(result.data)
    duration_ms = probe(path, "narration").duration_ms
    first_sound_ms, last_sound_ms = speech_bounds(path, SILENCE_DB)
    # Measured over eight runs: the first word within 6 ms of the first sound, the last within 15 ms of the last.
    assert abs(words[0].start_ms - first_sound_ms) <= TOLERANCE_MS
    assert abs(words[-1].end_ms - last_sound_ms) <= TOLERANCE_MS
    assert 0 < words[0].start_ms and words[-1].end_ms < duration_ms

    levels = levels_db(result)
    silent = list(pauses(levels))
    # Two sentence ends and the comma, at least; no word runs into a pause (measured: at most 27 ms).
    assert len(silent) >= 3
    assert max(overlap_ms(word, span) for word in words for span in silent) <= TOLERANCE_MS
    # Each sentence break falls in a pause; each word holds speech.
    for last, first in [(words[6], words[7]), (words[13], words[14])]:
        assert any(overlap_ms(Timing("", last.end_ms, first.start_ms), span) > 0 for span in silent)
    assert all(levels[w.start_ms // WINDOW_MS : w.end_ms // WINDOW_MS].max() > SILENCE_DB + 15 for w in words)


async def test_words_espeak_joins_or_expands_keep_their_written_form(piper: PiperProvider) -> None:
    """espeak says "in the" as one word (ɪnðə), "1999" as three and "Dr." as a sentence of its own."""
    result = await speak(piper, "Dr. Lee paid 12 dollars, in the year 1999.")
    words = {word.text: word for word in result.timings}
    assert list(words) == ["Dr", "Lee", "paid", "12", "dollars", "in", "the", "year", "1999"]
    assert all(word.is_word and word.start_ms < word.end_ms for word in words.values())
    # The joined word is shared at its phoneme boundary: "in" ends where "the" starts.
    assert words["in"].end_ms == words["the"].start_ms
    assert words["1999"].end_ms - words["1999"].start_ms > 2 * (words["year"].end_ms - words["year"].start_ms)
    silent = list(pauses(levels_db(result)))
    # piper speaks "Dr." as its own chunk and pauses at the comma: both pauses lie between the words around them.
    for before, after in [("Dr", "Lee"), ("dollars", "in")]:
        gap = Timing("", words[before].end_ms - TOLERANCE_MS, words[after].start_ms + TOLERANCE_MS)
        assert any(span[0] >= gap.start_ms and span[1] <= gap.end_ms for span in silent)


async def test_without_the_onnx_package_timings_stay_per_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # what `import onnx` meets when the package is not installed
    result = await speak(PiperProvider(PiperSettings()), NARRATION)
    assert [(t.text, t.is_word) for t in result.timings] == [
        ("Look at the ladder before you climb.", False),
        ("Always hold the rails with both hands.", False),
        ("If a rung is loose, move down slowly.", False),
    ]
    assert result.timings[0].start_ms == 0
    assert result.timings[0].end_ms == result.timings[1].start_ms < result.timings[1].end_ms
