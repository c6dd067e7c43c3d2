"""Text helpers shared by speech providers and captions."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

# Longest narration of one scene, in characters (the contract's `Scene.narration`).
MAX_NARRATION_CHARS = 4000

# A sentence ends at . ! ? or …, optionally followed by one closing quote or bracket, before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'”’)\]])\s+")


def split_sentences(text: str) -> list[str]:
    """Splits narration into sentences, keeping their punctuation; never returns empty strings."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


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
