"""Word timing: the written words of a narration and when each is spoken, from the voice's timings or by syllables.

Providers time sentences or words, and say some written words differently; captions need every written word with
its time. CJK text, written without spaces, is cut where a line may break, each character a word of its own.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

from services.common.fonts import CJK_CHARACTER
from services.common.text import ends_sentence, split_sentences


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


def spread(start_ms: int, end_ms: int, weights: Sequence[int]) -> list[tuple[int, int]]:
    """Shares a span by weight, in order, rounding so the shares meet exactly and fill the span."""
    total = sum(weights) or 1
    edges = [start_ms + round((end_ms - start_ms) * done / total) for done in accumulate(weights, initial=0)]
    return list(pairwise(edges))


def spread_words(part: SpokenText) -> list[Word]:
    """A sentence's words, timed by sharing the sentence's time by syllables."""
    tokens = _tokens(part.text)
    times = spread(part.start_ms, part.end_ms, [syllables(token) for token, _ in tokens])
    return [Word(token, start, end, glued) for (token, glued), (start, end) in zip(tokens, times, strict=True)]


def spread_sentences(text: str, duration_ms: int) -> list[SpokenText]:
    """Sentence timings for speech that came without any: the duration shared by syllables."""
    sentences = split_sentences(text)
    times = spread(0, duration_ms, [sum(syllables(word) for word in s.split()) for s in sentences])
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
        times[index:gap_end] = spread(start, max(start, end), weights)
        index = gap_end
    return [Word(token, *span, glued) for (token, glued), span in zip(tokens, times, strict=True) if span is not None]


def _spoken_units(word: SpokenText) -> list[SpokenText]:
    pieces = [unit for chunk in word.text.split() for unit in _units(chunk)]
    times = spread(word.start_ms, word.end_ms, [1] * len(pieces))
    return [SpokenText(piece, start, end) for piece, (start, end) in zip(pieces, times, strict=True)]


def fold_untimed(parts: list[SpokenText], narration_ms: int) -> list[SpokenText]:
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


def split_at_sentence_ends(words: list[Word]) -> list[list[Word]]:
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
