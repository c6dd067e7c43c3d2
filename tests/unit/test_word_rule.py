"""The one rule for overlong words in narration, as the gateway applies it at validation time."""

from __future__ import annotations

import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from gateway.validation import validate_render
from services.common.errors import InvalidArgument
from services.common.limits import MAX_WORD_CHARS
from services.common.text import checked_narration


def _request(narration: str) -> render_service_pb2.RenderRequest:
    return render_service_pb2.RenderRequest(
        scenes=[types_pb2.Scene(id="s1", narration=narration, title="Title")],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=480, quality=types_pb2.QUALITY_DRAFT
        ),
    )


def test_the_gateway_refuses_a_4000_letter_word_naming_the_field_and_the_rule() -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_render(_request("x" * 4000), max_scenes=10)
    assert str(error.value) == (
        "scenes[0].narration has a 4000-character word ('xxxxxxxxxxxxxxxxxxxx'...); words are limited to 100 "
        "characters, so add spaces or shorten it"
    )


def test_words_up_to_the_limit_and_text_written_without_spaces_pass() -> None:
    longest = "y" * MAX_WORD_CHARS
    assert checked_narration(f"Say {longest} twice.", "narration") == f"Say {longest} twice."
    chinese = "叉车在装卸区穿行时行人要等待。" * 20  # 300 characters, no spaces: each character is a word
    assert checked_narration(chinese, "narration") == chinese
    with pytest.raises(InvalidArgument):
        checked_narration("z" * (MAX_WORD_CHARS + 1), "narration")
