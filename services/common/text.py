"""Text helpers shared by speech providers and captions."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument
from services.common.fonts import CJK_CHARACTER
from services.common.limits import MAX_NARRATION_CHARS, MAX_WORD_CHARS

# Marks that end a sentence, and closing quotes and brackets after them, which stay with the sentence. The full-width
# marks of Chinese and Japanese end one where they stand, since no space follows them; the others (Latin, the Arabic
# question mark, the Devanagari danda) only before a space, the end, or CJK text, so "3.14" and "U.S.-made" stay whole.
_WIDE_ENDS = "。！？"
_ENDS = f".!?…؟।{_WIDE_ENDS}"
_CLOSERS = "\"'”’)]」』）"
_SENTENCE_END = re.compile(f"[{re.escape(_ENDS)}]+[{re.escape(_CLOSERS)}]*")
_ENDS_SENTENCE = re.compile(f"[{re.escape(_ENDS)}][{re.escape(_CLOSERS)}]*$")


def split_sentences(text: str) -> list[str]:
    """Splits narration into sentences, keeping their punctuation; never returns empty strings.

    The one splitter of the project: speech providers speak by it and the assembler times and captions by it.
    """
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        following = text[end.end() : end.end() + 1]
        if (
            any(mark in _WIDE_ENDS for mark in end.group())
            or not following
            or following.isspace()
            or CJK_CHARACTER.match(following)
        ):
            sentences.append(text[start : end.end()])
            start = end.end()
    sentences.append(text[start:])
    return [sentence.strip() for sentence in sentences if sentence.strip()]


def ends_sentence(word: str) -> bool:
    """Whether a written word (or a CJK character with its punctuation) ends a sentence, by split_sentences' marks."""
    return _ENDS_SENTENCE.search(word) is not None


# Control characters other than tab and newline have no place in narration, prompts or captions: C0, DEL and C1
# (U+0085 is a line break to some readers, U+009B a terminal escape).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def checked_text(value: str, field: str, max_chars: int, required: bool = True) -> str:
    """Returns `value` stripped, or raises InvalidArgument naming `field` and the rule it broke."""
    text = value.strip()
    if required and not text:
        raise InvalidArgument(f"{field} is empty; give the text to use")
    if len(text) > max_chars:
        raise InvalidArgument(
            f"{field} has {len(text)} characters; the limit is {max_chars}, so shorten it or split the scene"
        )
    if match := _CONTROL.search(text):
        raise InvalidArgument(f"{field} contains the control character U+{ord(match.group()):04X}; remove it")
    return text


# Scripts written without spaces between words: each of their characters counts as a word of its own, as line
# breaking treats CJK text (fonts.CJK_CHARACTER), so a Chinese or Thai sentence is never one overlong "word".
_UNSPACED_CHARACTER = re.compile(f"{CJK_CHARACTER.pattern}|[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]")
# How much of an offending word an error message quotes.
_QUOTED_CHARS = 20


def checked_narration(value: str, field: str) -> str:
    """checked_text for spoken narration, which also limits words to MAX_WORD_CHARS characters.

    The one rule for overlong words: the gateway, the audio service and every service that speaks or captions
    narration apply it, so a request the gateway accepts is never refused later for its words.
    """
    text = checked_text(value, field, MAX_NARRATION_CHARS)
    word = max((word for run in _UNSPACED_CHARACTER.split(text) for word in run.split()), key=len, default="")
    if len(word) > MAX_WORD_CHARS:
        raise InvalidArgument(
            f"{field} has a {len(word)}-character word ({word[:_QUOTED_CHARS]!r}...); words are limited to "
            f"{MAX_WORD_CHARS} characters, so add spaces or shorten it"
        )
    return text
