"""Timing of the finished video, worked out before any encoding: scene lengths in frames and caption cues."""

from __future__ import annotations

import difflib
import functools
import math
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

from services.common.errors import InvalidArgument
from services.common.fonts import CJK_CHARACTER, FontFace, face_for, libass_em_per_size, load_face
from services.common.output import OutputFormat
from services.common.text import ends_sentence, split_sentences

# Caption line height (ASS `Fontsize`) relative to the frame's short side; readable on a phone and on a TV.
CAPTION_SIZE_RATIO = 0.055
# Title-safe area: captions stay inside the central 80 % of the width.
SAFE_SIDE_RATIO = 0.10
# Distance of the captions' lowest edge from the bottom of the frame, relative to the height. 10 % is the edge of the
# title-safe area. On 9:16 (Shorts, Reels, TikTok) the apps draw the account name, description and music ticker
# over about the bottom 17-20 % of the frame, so captions sit above that.
_BOTTOM_RATIO = {"9:16": 0.20}
_DEFAULT_BOTTOM_RATIO = 0.10
# Outline, drop shadow and box padding relative to the font size: thick enough for contrast on any picture.
_OUTLINE_RATIO = 0.09
_SHADOW_RATIO = 0.05
_BOX_PADDING_RATIO = 0.15
CAPTION_MAX_LINES = 2
# A sentence is cut into cues of about equal width, each filling at most this share of two lines: a line can only
# break between words, so a cue aimed at exactly two full lines often needs a third.
_CUE_FILL = 0.85
# How many cues' worth of a sentence's end is measured whole when its cues are shared out (see `_Measure.group`).
_MEASURED_CUES = 4
_HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


class PlanningStopped(Exception):
    """The call that wanted the plan was cancelled or ran past its deadline, so planning stopped part way."""


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise PlanningStopped


@dataclass(frozen=True)
class CaptionStyle:
    """Look of the burned-in captions."""

    highlight: bool = False  # colour the word being spoken
    highlight_color: str = "#FFD400"  # "#RRGGBB"
    box: bool = False  # a semi-opaque box behind the text instead of an outline only

    def __post_init__(self) -> None:
        if not _HEX_COLOUR.fullmatch(self.highlight_color):
            raise InvalidArgument(f"highlight_color must be written #RRGGBB (got {self.highlight_color!r})")


@dataclass(frozen=True)
class SpokenText:
    """A sentence (or word) of narration with its timing relative to the start of the narration audio."""

    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Word:
    """A written word, or one CJK character (with its punctuation), and when it is spoken."""

    text: str
    start_ms: int
    end_ms: int
    # Written right after the previous word, with no space: CJK characters, pieces of a word too long for a line.
    glued: bool = False


def join_words(words: Sequence[Word]) -> str:
    """The words as written: a space before each one that is not glued to the one before."""
    return "".join(word.text if index == 0 or word.glued else f" {word.text}" for index, word in enumerate(words))


@dataclass(frozen=True)
class Cue:
    """A caption of one or two lines, shown from its first word's start to its last word's end.

    (More lines only where text spoken in no time at all had to join a cue, see `_fold_unshown`.)

    Times are relative to the scene's start (the lead included). `face` is the font the lines were measured with,
    and so the one they must be drawn with.
    """

    lines: tuple[tuple[Word, ...], ...]
    face: FontFace

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(word for line in self.lines for word in line)

    @property
    def text(self) -> str:
        """The whole cue on one line, as written."""
        return join_words(self.words)

    @property
    def start_ms(self) -> int:
        return self.lines[0][0].start_ms

    @property
    def end_ms(self) -> int:
        return self.lines[-1][-1].end_ms


@dataclass(frozen=True)
class CaptionFrame:
    """What one still frame shows: a cue, with the word at index `highlight` (over the whole cue) coloured."""

    cue: Cue
    highlight: int | None


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


@dataclass(frozen=True)
class CaptionGeometry:
    """Size and place of captions in one output frame, in output pixels (ASS files use the frame as script size)."""

    font_size: int  # ASS `Fontsize`: the height of one line
    outline: float
    shadow: float
    box_padding: float
    side_margin: int
    # ASS `MarginV`: from the bottom of the frame to the bottom of the last line's text.
    bottom_margin: int
    # The widest a line's text may be so that its outline, shadow or box stays inside the title-safe area.
    line_width: float


def caption_font_size(output: OutputFormat) -> int:
    return max(12, round(min(output.width, output.height) * CAPTION_SIZE_RATIO))


def caption_geometry(output: OutputFormat) -> CaptionGeometry:
    size = caption_font_size(output)
    outline, shadow = max(1.0, size * _OUTLINE_RATIO), max(1.0, size * _SHADOW_RATIO)
    box_padding = size * _BOX_PADDING_RATIO
    # How far outline and shadow, or the box, reach beyond the text on each side.
    reach = max(outline + shadow, box_padding)
    side_margin = math.ceil(output.width * SAFE_SIDE_RATIO)
    bottom_ratio = _BOTTOM_RATIO.get(output.aspect_name, _DEFAULT_BOTTOM_RATIO)
    return CaptionGeometry(
        font_size=size,
        outline=outline,
        shadow=shadow,
        box_padding=box_padding,
        side_margin=side_margin,
        bottom_margin=math.ceil(output.height * bottom_ratio + reach),
        line_width=output.width - 2 * side_margin - 2 * reach,
    )


@functools.lru_cache(maxsize=65536)
def text_width(face: FontFace, em: float, text: str) -> float:
    """Pixels a line of `text` takes when libass draws it centred: its advance, widened by any ink overhanging it.

    Pillow lays the text out with raqm (FriBiDi and HarfBuzz, as libass does), so Arabic is measured shaped.
    """
    font = load_face(face, em)
    left, _, right, _ = font.getbbox(text)
    return max(font.getlength(text), right) - min(0, left)


@dataclass(frozen=True)
class _Measure:
    """Lays words out in lines no wider than the caption line width, measured with the font libass will draw."""

    face: FontFace
    em: float
    limit: float
    # Set when the plan is no longer wanted: checked at every measurement, the unit of work of every layout loop.
    stop: threading.Event | None = None

    def check(self) -> None:
        _check(self.stop)

    def width(self, words: Sequence[Word]) -> float:
        self.check()
        return text_width(self.face, self.em, join_words(words))

    def fits(self, words: Sequence[Word]) -> bool:
        return self.width(words) <= self.limit

    def lines(self, words: Sequence[Word]) -> tuple[tuple[Word, ...], ...] | None:
        """One line if it fits, else the most even two, or None when no two lines hold the words.

        The most even break (the one whose wider line is narrowest) never leaves one short word alone on a line
        when the words could share the lines more evenly. A single word too wide for a line (one wide character) has
        nowhere to break and is returned as it is.
        """
        if len(words) == 1 or self.fits(words):
            return (tuple(words),)
        # As the break moves right the first line widens and the second narrows: the most even break is where they
        # cross, found by bisection (measuring is the costly part).
        low, high = 1, len(words) - 1
        while low < high:
            middle = (low + high) // 2
            if self.width(words[:middle]) < self.width(words[middle:]):
                low = middle + 1
            else:
                high = middle
        widest, index = min((max(self.width(words[:i]), self.width(words[i:])), i) for i in {max(1, low - 1), low})
        return (tuple(words[:index]), tuple(words[index:])) if widest <= self.limit else None

    def wrap(self, words: Sequence[Word]) -> tuple[tuple[Word, ...], ...]:
        """Like `lines`, but any number of lines: for a cue that had to take in text spoken in no time at all."""
        balanced = self.lines(words)
        if balanced is not None:
            return balanced
        lines: list[tuple[Word, ...]] = []
        current: list[Word] = []
        for word in words:
            if current and not self.fits([*current, word]):
                lines.append(tuple(current))
                current = []
            current.append(word)
        return (*lines, tuple(current))

    def breakable(self, words: Sequence[Word]) -> list[Word]:
        """Cuts each word wider than a line into pieces that fill a line each, sharing its time by length.

        Characters stay whole with their combining marks. Each piece is the longest that fits.
        """
        out: list[Word] = []
        for word in words:
            if self.fits([word]):
                out.append(word)
                continue
            clusters: list[str] = []
            for character in word.text:
                if clusters and (unicodedata.category(character).startswith("M") or character == "\u200d"):
                    clusters[-1] += character
                else:
                    clusters.append(character)
            pieces: list[str] = []
            done = 0
            while done < len(clusters):
                count = self._longest_fitting(clusters, done)
                pieces.append("".join(clusters[done : done + count]))
                done += count
            times = _spread(word.start_ms, word.end_ms, [len(piece) for piece in pieces])
            out.extend(
                Word(piece, start, end, glued=word.glued if index == 0 else True)
                for index, (piece, (start, end)) in enumerate(zip(pieces, times, strict=True))
            )
        return out

    def _longest_fitting(self, clusters: Sequence[str], start: int) -> int:
        """How many clusters from `start` on fit in a line (at least one).

        The count doubles while it fits, then bisection finds the end: only about a line's worth of text is measured
        per piece, so a 4000-letter word costs as many measurements as its pieces (measuring the whole rest of the
        word each time made it quadratic: 100,000 letters took minutes).
        """
        rest = len(clusters) - start

        def fits(count: int) -> bool:
            self.check()
            return text_width(self.face, self.em, "".join(clusters[start : start + count])) <= self.limit

        fitting, too_many = 1, 2
        while too_many <= rest and fits(too_many):
            fitting, too_many = too_many, too_many * 2
        too_many = min(too_many, rest + 1)
        while too_many - fitting > 1:
            middle = (fitting + too_many) // 2
            if fits(middle):
                fitting = middle
            else:
                too_many = middle
        return fitting

    def group(self, sentence: Sequence[Word]) -> list[list[Word]]:
        """Cuts a sentence into cues that each fit in two lines, as equal in width as the words allow.

        Each cue aims at an equal share of what is left, so a long sentence does not end with a one-word cue.
        What is left is measured whole only when it is within a few cues: further from the end, the sum of its
        words' widths decides the target as well, and measuring the whole rest for every cue made a sentence of
        100,000 letters take minutes.
        """
        cue_width = CAPTION_MAX_LINES * self.limit * _CUE_FILL
        space = text_width(self.face, self.em, " ")
        widths_after = list(accumulate((self.width([word]) + space for word in reversed(sentence)), initial=0.0))
        cues: list[list[Word]] = []
        rest = list(sentence)
        while rest:
            rough = widths_after[len(rest)]
            total = self.width(rest) if rough <= _MEASURED_CUES * cue_width else rough
            target = total / max(1, math.ceil(total / cue_width))
            current = rest[:1]
            for word in rest[1:]:
                candidate = [*current, word]
                # Stop where the cue comes nearest its target, or where one more word would need a third line.
                if self.width(candidate) - target > target - self.width(current) or self.lines(candidate) is None:
                    break
                current = candidate
            cues.append(current)
            rest = rest[len(current) :]
        return cues


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


def highlighted_word(cue: Cue, ms: float) -> int:
    """The index of the word being spoken at `ms`: the last one that has started (it stays lit through a pause)."""
    return max(index for index, word in enumerate(cue.words) if index == 0 or word.start_ms <= ms)


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
            sentences = _sentences(_timed_or_spread(narration, spoken, narration_ms, stop))
        else:
            sentences = [s for part in _fold_untimed(spoken, narration_ms) for s in _sentences(spread_words(part))]
        shifted = [[_shift(word, lead_ms) for word in sentence] for sentence in sentences]
        _check(stop)
        cues = _cues(shifted, caption_geometry(output), stop)
    return ScenePlan(index=index, frames=frames, fps=output.fps, lead_ms=lead_ms, cues=cues)


def _shift(word: Word, ms: int) -> Word:
    return Word(word.text, word.start_ms + ms, word.end_ms + ms, word.glued)


def _cues(sentences: list[list[Word]], geometry: CaptionGeometry, stop: threading.Event | None) -> tuple[Cue, ...]:
    """Lays out the scene's sentences as cues in one face: the one that covers all of the scene's text."""
    words = [word for sentence in sentences for word in sentence]
    if not words:
        return ()
    face = face_for(join_words(words), bold=True)
    measure = _Measure(face, geometry.font_size * libass_em_per_size(face), geometry.line_width, stop)
    groups = [group for sentence in sentences for group in measure.group(measure.breakable(sentence))]
    return tuple(Cue(measure.wrap(group), face) for group in _fold_unshown(groups))


def _fold_unshown(groups: list[list[Word]]) -> list[list[Word]]:
    """Joins word groups that take no time to the next one (the last to the previous), so their words are shown.

    A voice may say nothing for some text, or a provider report words at one instant: such a cue would start where
    it ends, never show, and be dropped from the subtitle track by FFmpeg. Shown briefly in a longer cue (which may
    then need more than two lines) beats never shown.
    """
    folded: list[list[Word]] = []
    pending: list[Word] = []
    for group in groups:
        pending += group
        if pending[-1].end_ms > pending[0].start_ms:
            folded.append(pending)
            pending = []
    if pending and folded:
        folded[-1] += pending
    elif pending:
        folded.append(pending)
    return folded


def _fold_untimed(parts: list[SpokenText], narration_ms: int) -> list[SpokenText]:
    """Joins sentences that take no time to a neighbour, whose time their words then share.

    A voice may say nothing for some text (piper is silent for "{} ..."); its words would get no time at all.
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


# Characters that may not start a line (closing punctuation, small kana, iteration and length marks) or end one
# (opening brackets): they stay attached to their neighbour, as CJK typesetting (kinsoku) requires.
_NO_LINE_START = set(
    "、。，．・：；！？」』）】〉》〕］｝’”…‥ーゝゞ々ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ!%),.:;?]}"
)
_NO_LINE_END = set("「『（【〈《〔［｛‘“([{")


def _units(chunk: str) -> list[str]:
    """Splits text written without spaces where a line may break: between CJK characters, never inside other runs.

    Combining marks stay with the character they mark.
    """
    units: list[str] = []
    for character in chunk:
        previous = units[-1][-1] if units else ""
        if previous and (
            character in _NO_LINE_START
            or previous in _NO_LINE_END
            or unicodedata.category(character).startswith("M")
            or not (CJK_CHARACTER.match(character) or CJK_CHARACTER.match(previous))
        ):
            units[-1] += character
        else:
            units.append(character)
    return units


def _tokens(text: str) -> list[tuple[str, bool]]:
    """The written words of `text` as (word, glued to the previous one), each CJK character a word of its own."""
    return [(unit, index > 0) for chunk in text.split() for index, unit in enumerate(_units(chunk))]


_VOWEL_GROUPS = re.compile(r"[aeiouyæøåœαεηιουωаеёиоуыэюяіїє]+")


def syllables(word: str) -> int:
    """Rough spoken length of a written word: vowel groups, plus one per CJK character or digit; at least one.

    Scripts that leave most vowels unwritten (Arabic, Hebrew) count one syllable per two letters.
    """
    # Accents off (é is a vowel), on a copy only: decomposed, a Korean syllable would become two or three letters.
    base = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if not unicodedata.combining(c))
    count = len(_VOWEL_GROUPS.findall(base)) + sum(
        1 for c in word if c.isdigit() or (c.isalnum() and CJK_CHARACTER.match(c))
    )
    return max(1, count or sum(c.isalpha() for c in word) // 2)


def _spread(start_ms: int, end_ms: int, weights: Sequence[int]) -> list[tuple[int, int]]:
    """Shares a span by weight, in order, rounding so the shares meet exactly and fill the span."""
    total = sum(weights) or 1
    edges = [start_ms + round((end_ms - start_ms) * done / total) for done in accumulate(weights, initial=0)]
    return list(pairwise(edges))


def spread_words(part: SpokenText) -> list[Word]:
    """A sentence's words, timed by sharing the sentence's time by syllables."""
    tokens = _tokens(part.text)
    times = _spread(part.start_ms, part.end_ms, [syllables(token) for token, _ in tokens])
    return [Word(token, start, end, glued) for (token, glued), (start, end) in zip(tokens, times, strict=True)]


def spread_sentences(text: str, duration_ms: int) -> list[SpokenText]:
    """Sentence timings for speech that came without any: the duration shared by syllables."""
    sentences = split_sentences(text)
    times = _spread(0, duration_ms, [sum(syllables(word) for word in s.split()) for s in sentences])
    return [SpokenText(sentence, start, end) for sentence, (start, end) in zip(sentences, times, strict=True)]


def _alnum(text: str) -> str:
    return "".join(character for character in text.lower() if character.isalnum())


def time_words(text: str, spoken: list[SpokenText]) -> list[Word]:
    """The written words of `text`, timed by a provider's word timings (relative to the narration).

    Providers report words without punctuation, sometimes say them differently ("12" spoken as "twelve") and time
    CJK text by multi-character words, so both sides are cut into the same units (a CJK word's time shared by its
    characters) and matched with difflib; written words left unmatched share the time between their matched
    neighbours by length.
    """
    tokens = _tokens(text)
    units = [unit for word in spoken for unit in _spoken_units(word)]
    if not tokens or not units:
        return []
    times: list[tuple[int, int] | None] = [None] * len(tokens)
    matcher = difflib.SequenceMatcher(
        a=[_alnum(t) for t, _ in tokens], b=[_alnum(u.text) for u in units], autojunk=False
    )
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            unit = units[block.b + offset]
            times[block.a + offset] = (unit.start_ms, unit.end_ms)
    index = 0
    while index < len(tokens):
        if times[index] is not None:
            index += 1
            continue
        gap_end = index
        while gap_end < len(tokens) and times[gap_end] is None:
            gap_end += 1
        previous, following = times[index - 1] if index else None, times[gap_end] if gap_end < len(tokens) else None
        start = previous[1] if previous else units[0].start_ms
        end = following[0] if following else units[-1].end_ms
        weights = [max(1, len(token)) for token, _ in tokens[index:gap_end]]
        times[index:gap_end] = _spread(start, max(start, end), weights)
        index = gap_end
    return [Word(token, *span, glued) for (token, glued), span in zip(tokens, times, strict=True) if span is not None]


def _spoken_units(word: SpokenText) -> list[SpokenText]:
    pieces = [unit for chunk in word.text.split() for unit in _units(chunk)]
    times = _spread(word.start_ms, word.end_ms, [1] * len(pieces))
    return [SpokenText(piece, start, end) for piece, (start, end) in zip(pieces, times, strict=True)]


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


def _sentences(words: list[Word]) -> list[list[Word]]:
    """Cuts timed words after each word that ends a sentence, so no cue runs across a sentence end."""
    sentences: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        current.append(word)
        if ends_sentence(word.text):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences
