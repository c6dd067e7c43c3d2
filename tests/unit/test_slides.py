"""Unit tests for the slides image provider: exact sizes, safe text layout, themes and Unicode text."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.common import fonts
from services.common.providers import NoSettings, Quality
from services.image.providers.base import ImageJob
from services.image.providers.slides import (
    ELLIPSIS,
    MARGIN,
    THEMES,
    SlidesProvider,
    Theme,
    caption_band,
    layout_slide,
    render_slide,
)

SIZES = [(1280, 720), (720, 1280), (720, 720), (256, 144), (3840, 2160)]
PROMPT = (
    "A forklift operator checks the mast, forks and tyres before the shift starts, "
    "then walks the aisle to make sure it is clear of pallets and people."
)
LONG_PROMPT = ("Keep fire exits clear and know where the nearest extinguisher is. " * 50)[:3000]
LONG_WORD = "x" * 200


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _job(
    width: int, height: int, title: str = "Forklift checks", prompt: str = PROMPT, scene_index: int = 0
) -> ImageJob:
    return ImageJob(
        prompt=prompt,
        title=title,
        scene_index=scene_index,
        width=width,
        height=height,
        quality=Quality.STANDARD,
        aspect="16:9" if width > height else "9:16" if width < height else "1:1",
    )


def _relative_luminance(colour: tuple[int, int, int]) -> float:
    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(channel) for channel in colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def _contrast(first: tuple[int, int, int], second: tuple[int, int, int]) -> float:
    lighter, darker = sorted((_relative_luminance(first), _relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_generate_returns_png_of_exact_size(width: int, height: int) -> None:
    result = await SlidesProvider(NoSettings()).generate(_job(width, height))

    image = _decode(result.data)
    assert image.format == "PNG"
    assert image.size == (width, height)
    assert (result.width, result.height, result.mime_type) == (width, height, "image/png")
    assert result.model == "pillow-slide-v1"
    assert result.estimated_cost_usd == 0.0


def test_description_marks_provider_offline() -> None:
    assert SlidesProvider.description.name == "slides"
    assert SlidesProvider.description.offline


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize(
    ("title", "body"),
    [
        ("Fire safety", LONG_PROMPT),
        ("Fire safety", f"Short words then {LONG_WORD} and more"),
        (LONG_WORD, LONG_PROMPT),
        ("", LONG_PROMPT + LONG_WORD),
    ],
    ids=["long-prompt", "long-word", "long-word-title", "no-title"],
)
def test_every_line_stays_inside_the_safe_area(width: int, height: int, title: str, body: str) -> None:
    layout = layout_slide(title, body, width, height)

    left, top, right, bottom = layout.safe_area
    margin = round(min(width, height) * MARGIN)
    assert (left, top, right) == (margin, margin, width - margin)
    assert bottom <= height * (1 - caption_band(width, height))
    assert layout.lines
    for line in layout.lines:
        line_left, line_top, line_right, line_bottom = line.box
        assert left <= line_left and line_right <= right, line
        assert top <= line_top and line_bottom <= bottom, line
    assert top <= layout.accent_bar[1] and layout.accent_bar[3] <= layout.lines[0].box[1]


def test_text_that_cannot_fit_is_truncated_with_an_ellipsis() -> None:
    layout = layout_slide("Fire safety", LONG_PROMPT, 1280, 720)

    assert layout.lines[-1].text.endswith(ELLIPSIS)
    assert sum(line.text.count(ELLIPSIS) for line in layout.lines) == 1


def test_long_word_is_broken_by_characters() -> None:
    layout = layout_slide("Title", LONG_WORD, 1280, 720)

    body = [line.text for line in layout.lines if not line.title]
    assert len(body) > 1
    assert "".join(body) == LONG_WORD


def test_short_text_keeps_the_largest_sizes() -> None:
    short = layout_slide("Hi", "Short body.", 1280, 720)
    long = layout_slide("Hi", LONG_PROMPT, 1280, 720)

    assert short.body_size > long.body_size
    assert short.title_size > short.body_size


def test_scene_index_changes_the_background() -> None:
    corners = {
        _decode(render_slide("Title", PROMPT, 320, 180, index)).convert("RGB").getpixel((0, 0))
        for index in range(len(THEMES))
    }

    assert len(corners) == len(THEMES)


@pytest.mark.parametrize("theme", THEMES)
def test_theme_text_contrast_is_readable(theme: Theme) -> None:
    for text in (theme.title, theme.body):
        for background in (theme.top, theme.bottom):
            assert _contrast(text, background) >= 4.5


def test_empty_title_makes_the_prompt_the_main_text() -> None:
    layout = layout_slide("  ", PROMPT, 1280, 720)

    assert all(line.title for line in layout.lines)
    assert " ".join(line.text for line in layout.lines) == PROMPT
    assert layout.lines[0].size == layout.title_size


async def test_non_latin_text_renders() -> None:
    title = "Sécurité – Überprüfung"
    prompt = "Prüfen Sie die Schutzausrüstung: Gehörschutz, Handschuhe, Sicherheitsschuhe – ça évite les blessures."

    result = await SlidesProvider(NoSettings()).generate(_job(1280, 720, title=title, prompt=prompt, scene_index=3))

    assert _decode(result.data).size == (1280, 720)
    layout = layout_slide(title, prompt, 1280, 720)
    assert [line.text for line in layout.lines if line.title] == [title]
    assert " ".join(line.text for line in layout.lines if not line.title) == prompt


def test_layout_works_with_pillows_built_in_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fonts, "find_font", lambda bold=False: None)

    layout = layout_slide("Fire safety", LONG_PROMPT, 720, 1280)

    assert layout.lines
    assert all(line.box[3] <= layout.safe_area[3] for line in layout.lines)
