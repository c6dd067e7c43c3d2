"""Timing of the finished video, worked out before any encoding: scene lengths in frames and caption cues."""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from services.assembler.caption_layout import (
    CaptionFrame,
    CaptionStyle,
    Cue,
    caption_geometry,
    highlighted_word,
    layout_cues,
)
from services.assembler.word_timing import (
    SpokenText,
    Word,
    fold_untimed,
    split_at_sentence_ends,
    spread_words,
    time_words,
)
from services.common.output import OutputFormat


class PlanningStopped(Exception):
    """The call that wanted the plan was cancelled or ran past its deadline, so planning stopped part way."""


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise PlanningStopped


@dataclass(frozen=True)
class ScenePlan:
    index: int
    frames: int
    fps: int
    lead_ms: int
    cues: tuple[Cue, ...]

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    @property
    def duration_ms(self) -> int:
        return round(self.frames * 1000 / self.fps)


def plan_scene(
    index: int,
    narration_ms: int,
    spoken: list[SpokenText],
    output: OutputFormat,
    lead_ms: int,
    tail_ms: int,
    narration: str = "",
    stop: threading.Event | None = None,
) -> ScenePlan:
    """Lays out one scene: lead-in silence, the narration, a tail, rounded up to whole frames.

    `spoken` holds sentence timings, or word timings when `narration` (the text as written) is given: the written
    words then take the spoken words' times. Without word timings, each sentence's time is shared by its words'
    syllables. Words are grouped into cues of at most two lines that fit the title-safe width, never across a
    sentence end; each cue starts at its first word and ends with its last.

    Planning runs in a worker thread, which the call's cancellation cannot interrupt: once `stop` is set it raises
    PlanningStopped at its next step. Measured at the limits on one core: 4000 characters as one word 0.1 s, in
    CJK 0.1 s, as 2000 equal words against 8000 word timings (difflib's worst case, a single step) 3.6 s; an avatar's
    whole script of 800,000 characters 3.3 s.
    """
    frames = math.ceil((lead_ms + narration_ms + tail_ms) * output.fps / 1000)
    cues: tuple[Cue, ...] = ()
    if output.captions:
        if narration:
            sentences = split_at_sentence_ends(_timed_or_spread(narration, spoken, narration_ms, stop))
        else:
            sentences = [
                s for part in fold_untimed(spoken, narration_ms) for s in split_at_sentence_ends(spread_words(part))
            ]
        shifted = [[_shift(word, lead_ms) for word in sentence] for sentence in sentences]
        _check(stop)
        cues = layout_cues(shifted, caption_geometry(output), functools.partial(_check, stop))
    return ScenePlan(index=index, frames=frames, fps=output.fps, lead_ms=lead_ms, cues=cues)


def _shift(word: Word, ms: int) -> Word:
    return Word(word.text, word.start_ms + ms, word.end_ms + ms, word.glued)


def _timed_or_spread(
    text: str, spoken: list[SpokenText], narration_ms: int, stop: threading.Event | None
) -> list[Word]:
    """The written words timed by the spoken words, or by syllables over the narration if those take no time."""
    _check(stop)
    words = time_words(text, spoken)
    _check(stop)
    if words and words[-1].end_ms > words[0].start_ms:
        return words
    return spread_words(SpokenText(text, 0, narration_ms))


def caption_runs(plan: ScenePlan, style: CaptionStyle) -> list[tuple[int, CaptionFrame | None]]:
    """Splits a scene's frames into runs that each show one caption frame (or none), in order, as (frames, frame).

    Over a still, the picture only changes when the caption does: each run's caption is drawn once on the still and
    the result repeated, instead of blending the caption into every frame. With the highlight on, the caption
    changes at every word's start.
    """

    def frame_of(ms: int) -> int:
        return min(plan.frames, max(0, round(ms * plan.fps / 1000)))

    edges = {0, plan.frames}
    for cue in plan.cues:
        edges |= {frame_of(cue.start_ms), frame_of(cue.end_ms)}
        if style.highlight:
            edges |= {frame_of(word.start_ms) for word in cue.words}
    runs: list[tuple[int, CaptionFrame | None]] = []
    for start, end in pairwise(sorted(edges)):
        shown = _frame_at(plan.cues, (start + end) / 2 * 1000 / plan.fps, style)
        if runs and runs[-1][1] == shown:
            runs[-1] = (runs[-1][0] + end - start, shown)
        else:
            runs.append((end - start, shown))
    return runs


def _frame_at(cues: Sequence[Cue], ms: float, style: CaptionStyle) -> CaptionFrame | None:
    cue = next((cue for cue in cues if cue.start_ms <= ms < cue.end_ms), None)
    if cue is None:
        return None
    return CaptionFrame(cue, highlighted_word(cue, ms) if style.highlight else None)
