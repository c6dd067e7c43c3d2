"""The offline outline provider: a document's headings, paragraphs and image alt texts as scenes within the limits."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.limits import MAX_NARRATION_CHARS
from services.common.providers import NoSettings
from services.script.providers.base import Draft, DraftJob
from services.script.providers.outline import SCENE_CHARS, OutlineProvider


async def draft(text: str, document_format: str = "markdown", max_scenes: int = 50) -> Draft:
    job = DraftJob(
        topic="",
        document=text,
        document_format=document_format,  # type: ignore[arg-type]
        audience="",
        target_seconds=0,
        tone="",
        language="",
        max_scenes=max_scenes,
    )
    return await OutlineProvider(NoSettings()).draft(job)


DOCUMENT = """# How tides work

![The Moon rising over a calm sea](moon.png)

The Moon pulls on the oceans. Its gravity raises two bulges of water.

## Spring tides

When the Sun and the Moon line up, their pulls add up and the tides are higher than usual.

- Twice a month
- At new and full moon

```python
print("code is not narrated")
```

<div>HTML is not narrated either</div>

## Neap tides

At the quarter moons the pulls partly cancel, and the tides are at their weakest.
"""


async def test_headings_become_titles_paragraphs_narration_and_alt_text_the_visual() -> None:
    result = await draft(DOCUMENT)
    assert result.title == "How tides work" and result.model == "outline" and result.calls == ()
    assert [(s.id, s.title, s.narration, s.visual) for s in result.scenes] == [
        (
            "scene-1",
            "How tides work",
            "The Moon pulls on the oceans. Its gravity raises two bulges of water.",
            "The Moon rising over a calm sea",
        ),
        (
            "scene-2",
            "Spring tides",
            "When the Sun and the Moon line up, their pulls add up and the tides are higher than usual. "
            "Twice a month. At new and full moon.",
            "Spring tides: When the Sun and the Moon line up, their pulls add up and the tides are higher than usual.",
        ),
        (
            "scene-3",
            "Neap tides",
            "At the quarter moons the pulls partly cancel, and the tides are at their weakest.",
            "Neap tides: At the quarter moons the pulls partly cancel, and the tides are at their weakest.",
        ),
    ]


async def test_links_keep_their_text_and_unspeakable_words_are_dropped() -> None:
    url = "https://example.com/" + "a" * 120
    result = await draft(f"Read [the tide tables](https://tides.example/tables) now, or {url} later.")
    assert result.scenes[0].narration == "Read the tide tables now, or later."


async def test_plain_text_paragraphs_become_narration() -> None:
    text = "First paragraph, line one\nline two.\n\nSecond paragraph.\r\n"
    result = await draft(text, "plain")
    assert [s.narration for s in result.scenes] == ["First paragraph, line one line two. Second paragraph."]
    assert (result.title, result.scenes[0].title) == ("", "")
    assert result.scenes[0].visual == "First paragraph, line one line two."


async def test_a_plain_text_hash_is_not_a_heading() -> None:
    result = await draft("# not a heading in plain text", "plain")
    assert result.scenes[0].narration == "# not a heading in plain text."


async def test_long_sections_are_split_at_paragraphs_and_sentences_within_the_scene_length() -> None:
    sentence = "The tide comes in and goes out twice every day along this coast. "
    paragraphs = [(sentence * 4).strip() for _ in range(6)] + [(sentence * 20).strip()]
    result = await draft("## Coast\n\n" + "\n\n".join(paragraphs))
    assert len(result.scenes) > 1
    assert all(len(s.narration) <= SCENE_CHARS for s in result.scenes)
    assert all(s.title == "Coast" for s in result.scenes)
    assert " ".join(s.narration for s in result.scenes) == " ".join(paragraphs)


async def test_a_tiny_section_joins_the_scene_before_it() -> None:
    result = await draft("## Tides\n\nThe sea rises and falls twice a day, pulled by the Moon.\n\n## End\n\nThanks.")
    assert [(s.title, s.narration) for s in result.scenes] == [
        ("Tides", "The sea rises and falls twice a day, pulled by the Moon. Thanks.")
    ]


async def test_the_scene_count_limit_joins_neighbouring_scenes() -> None:
    sections = "\n\n".join(f"## Part {n}\n\nThis part says one thing about tide number {n}." for n in range(1, 21))
    result = await draft(sections, max_scenes=6)
    assert len(result.scenes) <= 6
    assert result.scenes[0].title == "Part 1"
    assert " ".join(s.narration for s in result.scenes).count("This part says") == 20


async def test_a_document_too_long_for_the_scene_count_is_refused_naming_the_field() -> None:
    paragraph = "The sea rises and falls. " * 100
    with pytest.raises(InvalidArgument, match=r"document.text needs more than 2 scenes .* 4000 characters"):
        await draft("\n\n".join([paragraph.strip()] * 4), "plain", max_scenes=2)
    assert len(paragraph) * 4 > 2 * MAX_NARRATION_CHARS


@pytest.mark.parametrize(
    "text",
    ["", "# Only a heading", "![just an image](a.png)", "```\ncode only\n```", "## A\n\n## B\n\n<p>html</p>"],
)
async def test_a_document_with_nothing_to_narrate_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^document.text has no paragraph to narrate"):
        await draft(text)


async def test_a_topic_is_refused_with_the_provider_that_takes_one() -> None:
    job = DraftJob("tides", "", "", "", 0, "", "", 50)
    with pytest.raises(InvalidArgument, match=r"^topic: the outline provider drafts from a document.*provider: openai"):
        await OutlineProvider(NoSettings()).draft(job)


async def test_a_long_heading_is_cut_to_the_title_limit() -> None:
    result = await draft("# " + "word " * 100 + "\n\nSome text to narrate.")
    assert len(result.scenes[0].title) <= 200 and result.scenes[0].title.endswith("…")
