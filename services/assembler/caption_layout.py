"""Caption layout: words grouped into cues of at most two lines that fit the title-safe width of the frame.

Lines are measured with the font libass will draw them in, so a cue laid out here is drawn as laid out.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from services.assembler.word_timing import Word, join_words, spread
from services.common.errors import InvalidArgument
from services.common.fonts import FontFace, face_for, libass_em_per_size, load_face
from services.common.output import OutputFormat

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
    # Called at every measurement, the unit of work of every layout loop: raises when the plan is no longer wanted.
    check: Callable[[], None]

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
            times = spread(word.start_ms, word.end_ms, [len(piece) for piece in pieces])
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


def highlighted_word(cue: Cue, ms: float) -> int:
    """The index of the word being spoken at `ms`: the last one that has started (it stays lit through a pause)."""
    return max(index for index, word in enumerate(cue.words) if index == 0 or word.start_ms <= ms)


def layout_cues(sentences: list[list[Word]], geometry: CaptionGeometry, check: Callable[[], None]) -> tuple[Cue, ...]:
    """Lays out the scene's sentences as cues in one face: the one that covers all of the scene's text."""
    words = [word for sentence in sentences for word in sentence]
    if not words:
        return ()
    face = face_for(join_words(words), bold=True)
    measure = _Measure(face, geometry.font_size * libass_em_per_size(face), geometry.line_width, check)
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
