"""Timing of the finished video, worked out before any encoding: scene lengths in frames and caption cues."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from services.common.output import OutputFormat
from services.common.text import split_sentences

# Caption text height relative to the frame's short side; readable on a phone and on a TV.
CAPTION_SIZE_RATIO = 0.055
# Side margins of captions relative to the frame width (inside the title-safe area).
CAPTION_SIDE_MARGIN_RATIO = 0.06
# Average advance of a DejaVu Sans glyph relative to its font size; used to cut cues that fit in two lines.
_AVERAGE_GLYPH_WIDTH = 0.55
CAPTION_MAX_LINES = 2


@dataclass(frozen=True)
class Cue:
    """A caption shown from `start_ms` to `end_ms`, relative to its scene's start."""

    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class SpokenText:
    """A sentence (or word) of narration with its timing relative to the start of the narration audio."""

    text: str
    start_ms: int
    end_ms: int


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


def caption_runs(plan: ScenePlan) -> list[tuple[int, str | None]]:
    """Splits a scene's frames into runs that each show one caption (or none), in order, as (frames, text).

    Over a still, the picture only changes when the caption does: each run's caption is drawn once on the still and
    the result repeated, instead of blending the caption into every frame.
    """

    def frame_of(ms: int) -> int:
        return min(plan.frames, max(0, round(ms * plan.fps / 1000)))

    edges = sorted(
        {0, plan.frames, *(frame_of(c.start_ms) for c in plan.cues), *(frame_of(c.end_ms) for c in plan.cues)}
    )
    runs: list[tuple[int, str | None]] = []
    for start, end in zip(edges, edges[1:], strict=False):
        middle_ms = (start + end) / 2 * 1000 / plan.fps
        text = next((cue.text for cue in plan.cues if cue.start_ms <= middle_ms < cue.end_ms), None)
        if runs and runs[-1][1] == text:
            runs[-1] = (runs[-1][0] + end - start, text)
        else:
            runs.append((end - start, text))
    return runs


def caption_font_size(output: OutputFormat) -> int:
    return max(12, round(min(output.width, output.height) * CAPTION_SIZE_RATIO))


def caption_line_chars(output: OutputFormat) -> int:
    """How many average characters fit on one caption line."""
    usable = output.width * (1 - 2 * CAPTION_SIDE_MARGIN_RATIO)
    return max(8, int(usable / (caption_font_size(output) * _AVERAGE_GLYPH_WIDTH)))


def plan_scene(
    index: int,
    narration_ms: int,
    spoken: list[SpokenText],
    output: OutputFormat,
    lead_ms: int,
    tail_ms: int,
    narration: str = "",
) -> ScenePlan:
    """Lays out one scene: lead-in silence, the narration, a tail, rounded up to whole frames.

    `spoken` holds sentence timings, or word timings when `narration` (the text as written) is given: words are
    then grouped into cues that keep the written punctuation.
    """
    frames = math.ceil((lead_ms + narration_ms + tail_ms) * output.fps / 1000)
    cues: list[Cue] = []
    if output.captions:
        max_chars = caption_line_chars(output) * CAPTION_MAX_LINES
        parts = (
            cues_from_words(narration, spoken, max_chars)
            if narration
            else [cue for part in spoken for cue in split_cue(part, max_chars)]
        )
        parts = _fold_untimed(parts, narration_ms)
        cues = [Cue(part.text, part.start_ms + lead_ms, part.end_ms + lead_ms) for part in parts]
    return ScenePlan(index=index, frames=frames, fps=output.fps, lead_ms=lead_ms, cues=tuple(cues))


def _fold_untimed(parts: list[SpokenText], narration_ms: int) -> list[SpokenText]:
    """Joins parts that take no time to a neighbour, so their words are still shown.

    A voice may say nothing for some text (piper is silent for "{} ..."); its cue would start where it ends, never
    show, and be dropped from the subtitle track by FFmpeg.
    """
    folded: list[SpokenText] = []
    leading = ""  # untimed text before the first timed part
    for part in parts:
        if part.end_ms > part.start_ms:
            text = f"{leading} {part.text}" if leading else part.text
            folded.append(SpokenText(text, part.start_ms, part.end_ms))
            leading = ""
        elif folded:
            last = folded[-1]
            folded[-1] = SpokenText(f"{last.text} {part.text}", last.start_ms, last.end_ms)
        else:
            leading = f"{leading} {part.text}" if leading else part.text
    if leading:
        folded.append(SpokenText(leading, 0, narration_ms))
    return folded


def spread_sentences(text: str, duration_ms: int) -> list[SpokenText]:
    """Sentence timings for speech that came without any: the duration shared by character count."""
    sentences = split_sentences(text)
    total = sum(len(sentence) for sentence in sentences) or 1
    spans, done = [], 0
    for sentence in sentences:
        start = round(duration_ms * done / total)
        done += len(sentence)
        spans.append(SpokenText(sentence, start, round(duration_ms * done / total)))
    return spans


def split_cue(part: SpokenText, max_chars: int) -> list[SpokenText]:
    """Cuts a sentence into cues of at most `max_chars` at word boundaries, sharing its time by character count."""
    words = part.text.split()
    # Aim for equal pieces, so a long sentence does not end with a one-word orphan cue.
    target = len(part.text) / max(1, math.ceil(len(part.text) / max_chars))
    pieces: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if current and (len(candidate) > max_chars or len(current) >= target):
            pieces.append(current)
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    total_chars = sum(len(piece) for piece in pieces) or 1
    span = part.end_ms - part.start_ms
    cues: list[SpokenText] = []
    start = part.start_ms
    done_chars = 0
    for piece in pieces:
        done_chars += len(piece)
        end = part.start_ms + round(span * done_chars / total_chars)
        cues.append(SpokenText(piece, start, end))
        start = end
    return cues


def _alnum(text: str) -> str:
    return "".join(character for character in text.lower() if character.isalnum())


def cues_from_words(text: str, words: list[SpokenText], max_chars: int) -> list[SpokenText]:
    """Groups the written text into cues timed by word timings, breaking at sentence ends and at `max_chars`.

    Providers report words without punctuation and sometimes say them differently ("12" spoken as "twelve"), so
    written tokens are matched to spoken words with difflib; tokens left unmatched share the time between their
    matched neighbours by length.
    """
    tokens = text.split()
    if not tokens or not words:
        return []
    times: list[tuple[int, int] | None] = [None] * len(tokens)
    matcher = difflib.SequenceMatcher(a=[_alnum(t) for t in tokens], b=[_alnum(w.text) for w in words], autojunk=False)
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            word = words[block.b + offset]
            times[block.a + offset] = (word.start_ms, word.end_ms)
    index = 0
    while index < len(tokens):
        if times[index] is not None:
            index += 1
            continue
        gap_end = index
        while gap_end < len(tokens) and times[gap_end] is None:
            gap_end += 1
        previous, following = times[index - 1] if index else None, times[gap_end] if gap_end < len(tokens) else None
        start = previous[1] if previous else words[0].start_ms
        end = following[0] if following else words[-1].end_ms
        weights = [max(1, len(token)) for token in tokens[index:gap_end]]
        position = float(start)
        for offset, weight in enumerate(weights):
            share = (max(end, start) - start) * weight / sum(weights)
            times[index + offset] = (round(position), round(position + share))
            position += share
        index = gap_end
    timed = [(token, *span) for token, span in zip(tokens, times, strict=True) if span is not None]
    cues: list[SpokenText] = []
    current: list[tuple[str, int, int]] = []
    for item in timed:
        if current and len(" ".join(t for t, _, _ in [*current, item])) > max_chars:
            cues.append(_cue(current))
            current = []
        current.append(item)
        if item[0].endswith((".", "!", "?", "…")):
            cues.append(_cue(current))
            current = []
    if current:
        cues.append(_cue(current))
    return cues


def _cue(items: list[tuple[str, int, int]]) -> SpokenText:
    return SpokenText(" ".join(token for token, _, _ in items), items[0][1], items[-1][2])
