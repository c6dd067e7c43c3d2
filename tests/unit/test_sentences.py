"""One sentence splitter for every service, which knows CJK full stops as well as Latin ones."""

from __future__ import annotations

import pytest

from services.assembler.word_timing import spread_sentences
from services.common.text import ends_sentence, split_sentences


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        # Chinese and Japanese put no space after a full stop, question or exclamation mark.
        ("你好。我很好！你呢？", ["你好。", "我很好！", "你呢？"]),
        (
            "今日は晴れです。明日は雨でしょう？「そうですね。」",
            ["今日は晴れです。", "明日は雨でしょう？", "「そうですね。」"],
        ),
        # A closing bracket or quote after the mark stays with its sentence.
        ("他说：“走吧！”我们就走了。", ["他说：“走吧！”", "我们就走了。"]),
        # Mixed: Latin sentences end before a space, or where CJK text starts without one.
        ("I said hello. 我说你好。Then I left! 然后？", ["I said hello.", "我说你好。", "Then I left!", "然后？"]),
        ("It is called Python.很好用。", ["It is called Python.", "很好用。"]),
    ],
)
def test_cjk_and_mixed_text_split_at_each_sentence_end(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_latin_text_splits_as_before() -> None:
    assert split_sentences("One. Two!  Three? (Four.) Five") == ["One.", "Two!", "Three?", "(Four.)", "Five"]
    # A point inside a number or a run of marks does not end a sentence early.
    assert split_sentences("Pi is 3.14, roughly. Really?! Yes... fine.") == [
        "Pi is 3.14, roughly.",
        "Really?!",
        "Yes...",
        "fine.",
    ]
    assert split_sentences("  \n ") == []


def test_a_word_ends_a_sentence_by_the_same_marks() -> None:
    assert [ends_sentence(word) for word in ("好。", "你呢？」", "hello.", "(Four.)", "3.14", "你好", "word")] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_the_assembler_times_cjk_sentences_one_by_one() -> None:
    # Narration without timings is shared between its sentences: two here, a syllable per character (2 and 3).
    spans = spread_sentences("你好。我很好！", 2100)
    assert [(s.text, s.start_ms, s.end_ms) for s in spans] == [("你好。", 0, 840), ("我很好！", 840, 2100)]
