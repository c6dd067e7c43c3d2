"""The offline default image provider: each scene becomes a clean text slide drawn with Pillow."""

from __future__ import annotations

import asyncio
import bisect
import io
import math
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, ImageFont

from services.common.fonts import load_font
from services.common.providers import NoSettings, Price, Provider, ProviderDescription
from services.image.providers.base import ImageJob, ImageResult

MODEL = "pillow-slide-v1"
CAPTION_BAND = 0.22
"""Fraction of the frame's height, at the bottom, kept free of text because captions are burned in there later."""
PORTRAIT_CAPTION_BAND = 0.30
"""The same for portrait frames, whose captions sit higher (clear of phone UI) and reach about 27% of the height."""


def caption_band(width: int, height: int) -> float:
    return PORTRAIT_CAPTION_BAND if height > width else CAPTION_BAND


MARGIN = 0.07
"""Margin around the text, as a fraction of the frame's short side, so 16:9 and 9:16 frames share one look."""
ELLIPSIS = "…"

# Font sizes as (start, minimum) fractions of the short side; text shrinks from start towards minimum to fit.
_TITLE_SIZE = (0.10, 0.045)
_BODY_SIZE = (0.055, 0.028)
_MIN_PIXELS = 8  # below this even a 144-pixel frame becomes unreadable
_SHRINK = 0.9
# Line pitch as a multiple of the font size; the body gets more air because it runs longer.
_TITLE_LEADING = 1.15
_BODY_LEADING = 1.35

Box = tuple[int, int, int, int]
"""Left, top, right, bottom in pixels."""
Colour = tuple[int, int, int]
Fonts = dict[bool, ImageFont.FreeTypeFont]
"""The title font under True, the body font under False."""


@dataclass(frozen=True)
class Theme:
    top: Colour
    bottom: Colour
    accent: Colour
    title: Colour
    body: Colour


# Dark and light themes; text keeps a contrast ratio above 6 (WCAG AA asks 4.5) against both ends of the gradient.
THEMES: tuple[Theme, ...] = (
    Theme((15, 32, 61), (27, 58, 102), (255, 183, 77), (255, 255, 255), (214, 226, 240)),  # navy, amber
    Theme((8, 58, 64), (14, 88, 94), (255, 138, 101), (255, 255, 255), (208, 236, 233)),  # teal, coral
    Theme((245, 247, 250), (223, 230, 240), (37, 99, 235), (15, 23, 42), (51, 65, 85)),  # slate, blue
    Theme((52, 26, 72), (82, 44, 110), (255, 202, 40), (255, 255, 255), (232, 220, 242)),  # plum, gold
    Theme((253, 246, 236), (243, 228, 206), (194, 65, 12), (41, 37, 36), (68, 64, 60)),  # sand, rust
    Theme((20, 54, 36), (34, 82, 55), (174, 213, 129), (255, 255, 255), (220, 237, 222)),  # forest, lime
)


@dataclass(frozen=True)
class SlideLine:
    text: str
    title: bool  # drawn in the bold title font and colour, else in the body's
    size: int  # pixels
    box: Box  # the text is drawn with its ascender line at the box's top


@dataclass(frozen=True)
class SlideLayout:
    safe_area: Box  # inside the margins and above the caption band; every line box lies within it
    accent_bar: Box
    title_size: int
    body_size: int
    lines: tuple[SlideLine, ...]


def _font_size(short_side: int, fractions: tuple[float, float], scale: float) -> int:
    start, minimum = fractions
    return max(_MIN_PIXELS, round(short_side * minimum), round(short_side * start * scale))


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap; a word wider than the box is broken between characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while font.getlength(word) > width:
            # The longest prefix that fits, found by bisection; at least one character so the loop ends.
            cut = max(1, bisect.bisect_right(range(1, len(word) + 1), width, key=lambda n: font.getlength(word[:n])))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    return lines + [line] if line else lines


def _stack(paragraphs: list[tuple[list[str], bool]], fonts: Fonts, left: int, top: int) -> list[SlideLine]:
    """Places wrapped lines one below the other from `top`, with a gap between title and body."""
    placed: list[SlideLine] = []
    y = top
    for lines, title in paragraphs:
        font = fonts[title]
        ascent, descent = font.getmetrics()
        if placed:  # the body starts a little under one body line below the title
            y += round(fonts[False].size * 0.9)
        for text in lines:
            right = left + math.ceil(font.getlength(text))
            placed.append(SlideLine(text, title, int(font.size), (left, y, right, y + ascent + descent)))
            y += round(font.size * (_TITLE_LEADING if title else _BODY_LEADING))
    return placed


def _truncate(lines: list[SlideLine], bottom: int, fonts: Fonts, width: int) -> list[SlideLine]:
    """Drops the lines that reach below `bottom` and ends the last kept one with an ellipsis."""
    kept = [line for line in lines if line.box[3] <= bottom]
    if len(kept) == len(lines) or not kept:
        return kept
    last = kept[-1]
    font = fonts[last.title]
    text = last.text
    while text and font.getlength(text.rstrip() + ELLIPSIS) > width:
        text = text[:-1]
    text = text.rstrip() + ELLIPSIS
    left, top, _, line_bottom = last.box
    kept[-1] = replace(last, text=text, box=(left, top, left + math.ceil(font.getlength(text)), line_bottom))
    return kept


def layout_slide(title: str, body: str, width: int, height: int) -> SlideLayout:
    """Chooses font sizes and wraps the text so it fits the safe area; with no title the body becomes the title."""
    title, body = " ".join(title.split()), " ".join(body.split())
    if not title:
        title, body = body, ""
    short_side = min(width, height)
    margin = round(short_side * MARGIN)
    safe_area = (margin, margin, width - margin, math.floor(height * (1 - caption_band(width, height))))
    box_width = safe_area[2] - safe_area[0]
    bar_height = max(2, round(short_side * 0.012))
    bar_gap = round(short_side * 0.035)
    box_height = safe_area[3] - safe_area[1] - bar_height - bar_gap

    texts = [(text, is_title) for text, is_title in ((title, True), (body, False)) if text]
    smallest = (_font_size(short_side, _TITLE_SIZE, 0), _font_size(short_side, _BODY_SIZE, 0))
    scale = 1.0
    while True:
        title_size, body_size = (_font_size(short_side, fractions, scale) for fractions in (_TITLE_SIZE, _BODY_SIZE))
        fonts = {True: load_font(title_size, bold=True), False: load_font(body_size)}
        paragraphs = [(_wrap(text, fonts[is_title], box_width), is_title) for text, is_title in texts]
        # Laid out from y=0 first; the block is centred once its height is known.
        lines = _stack(paragraphs, fonts, safe_area[0], 0)
        if not lines or lines[-1].box[3] <= box_height or (title_size, body_size) == smallest:
            break
        scale *= _SHRINK
    lines = _truncate(lines, box_height, fonts, box_width)

    # Centre the accent bar and text together vertically in the safe area.
    text_height = lines[-1].box[3] if lines else 0
    top = safe_area[1] + (box_height - text_height) // 2
    accent_bar = (safe_area[0], top, safe_area[0] + round(short_side * 0.14), top + bar_height)
    shift = top + bar_height + bar_gap
    shifted = tuple(
        replace(line, box=(line.box[0], line.box[1] + shift, line.box[2], line.box[3] + shift)) for line in lines
    )
    return SlideLayout(safe_area, accent_bar, title_size, body_size, shifted)


def _gradient(width: int, height: int, top: Colour, bottom: Colour) -> Image.Image:
    mask = Image.linear_gradient("L").resize((width, height))
    return Image.composite(Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), mask)


def render_slide(title: str, body: str, width: int, height: int, scene_index: int) -> bytes:
    """Draws the slide and encodes it as PNG; the theme rotates with the scene so consecutive slides differ."""
    theme = THEMES[scene_index % len(THEMES)]
    layout = layout_slide(title, body, width, height)
    image = _gradient(width, height, theme.top, theme.bottom)
    draw = ImageDraw.Draw(image)
    draw.rectangle(layout.accent_bar, fill=theme.accent)
    fonts = {True: load_font(layout.title_size, bold=True), False: load_font(layout.body_size)}
    for line in layout.lines:
        colour = theme.title if line.title else theme.body
        draw.text(line.box[:2], line.text, font=fonts[line.title], fill=colour, anchor="la")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class SlidesProvider(Provider[NoSettings, ImageJob]):
    """Needs no network, key or GPU, so a render works anywhere and costs nothing."""

    description = ProviderDescription(
        name="slides",
        description="Text slides (scene title and prompt) drawn locally with Pillow; offline and free.",
        offline=True,
    )

    @classmethod
    def prices(cls, settings: NoSettings) -> tuple[Price, ...]:
        return (Price(MODEL, "image", 0.0, "offline, on this machine's CPU"),)

    @classmethod
    def estimate_usd(cls, settings: NoSettings, job: ImageJob) -> float:
        return 0.0

    async def generate(self, job: ImageJob) -> ImageResult:
        # Drawing and PNG encoding are CPU-bound; a worker thread keeps the event loop serving other calls.
        data = await asyncio.to_thread(render_slide, job.title, job.prompt, job.width, job.height, job.scene_index)
        return ImageResult(data=data, mime_type="image/png", width=job.width, height=job.height, model=MODEL)
