"""Title and end cards: text centred on a dark frame of the output's size, then encoded like any still scene."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

from services.common.fonts import load_font_for
from services.common.output import OutputFormat

BACKGROUND = (16, 18, 24)
TITLE_COLOR = (245, 245, 245)
SUBTITLE_COLOR = (180, 186, 198)
# Text stays this far in from every edge, relative to the frame: the classic title-safe area (the middle 80%),
# which also keeps it clear of the controls phone players lay over 9:16 video.
SAFE_MARGIN_RATIO = 0.1
# Font sizes relative to the frame's short side, so a card reads the same at 16:9, 9:16 and 1:1.
TITLE_SIZE_RATIO = 0.09
SUBTITLE_SIZE_RATIO = 0.05
# Space between the title block and the subtitle block, relative to the subtitle's font size.
_GAP_RATIO = 0.8
# Text too long for the safe area at full size is shrunk by this factor until it fits, down to _MIN_SIZE pixels.
_SHRINK = 0.9
_MIN_SIZE = 10


def render_card(title: str, subtitle: str, output: OutputFormat, path: Path, background: str = "") -> None:
    """Draws a card as a PNG at the output size: a large title over a smaller subtitle, both optional.

    Lines are wrapped to the title-safe width (at spaces, and inside words only when one alone is too wide, as in
    CJK text), and the whole block is shrunk until it also fits the safe height.
    """
    margin_x = round(output.width * SAFE_MARGIN_RATIO)
    margin_y = round(output.height * SAFE_MARGIN_RATIO)
    safe_width, safe_height = output.width - 2 * margin_x, output.height - 2 * margin_y
    short_side = min(output.width, output.height)
    styles = ((title, TITLE_SIZE_RATIO, True, TITLE_COLOR), (subtitle, SUBTITLE_SIZE_RATIO, False, SUBTITLE_COLOR))
    texts = [style for style in styles if style[0].strip()]
    scale = 1.0
    while True:
        blocks = [
            _Block(text, max(_MIN_SIZE, round(short_side * ratio * scale)), bold, color, safe_width)
            for text, ratio, bold, color in texts
        ]
        gap = round(short_side * SUBTITLE_SIZE_RATIO * scale * _GAP_RATIO) if len(blocks) > 1 else 0
        total = sum(block.height for block in blocks) + gap
        if total <= safe_height or round(short_side * SUBTITLE_SIZE_RATIO * scale) <= _MIN_SIZE:
            break
        scale *= _SHRINK
    # `background` is "#RRGGBB" (the render's pad colour); empty means the default dark slate.
    image = Image.new("RGB", (output.width, output.height), ImageColor.getrgb(background) if background else BACKGROUND)
    draw = ImageDraw.Draw(image)
    top = margin_y + max(0, (safe_height - total) // 2)
    for block in blocks:
        block.draw(draw, output.width // 2, top)
        top += block.height + gap
    image.save(path, format="PNG")


class _Block:
    """One text in a font that covers it, wrapped into lines that fit `width`, spaced by the font's own metrics."""

    def __init__(self, text: str, size: int, bold: bool, color: tuple[int, int, int], width: int) -> None:
        self.font = load_font_for(text, size, bold)
        self.color = color
        self.lines = _wrap(text, self.font, width)
        ascent, descent = self.font.getmetrics()
        self.pitch = ascent + descent

    @property
    def height(self) -> int:
        return self.pitch * len(self.lines)

    def draw(self, draw: ImageDraw.ImageDraw, centre_x: int, top: int) -> None:
        for index, line in enumerate(self.lines):
            # "ma": x is the line's middle, y its ascender line, so ink stays inside [top, top + pitch).
            draw.text((centre_x, top + index * self.pitch), line, font=self.font, fill=self.color, anchor="ma")


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Breaks text into lines no wider than `width`, at spaces, and inside a word only when it alone is too wide."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        for piece in _pieces(word, font, width):
            candidate = f"{current} {piece}" if current else piece
            if current and font.getlength(candidate) > width:
                lines.append(current)
                current = piece
            else:
                current = candidate
    if current:
        lines.append(current)
    return lines


def _pieces(word: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """A word cut into runs of characters that each fit `width` (CJK text has no spaces to break at)."""
    pieces: list[str] = []
    current = ""
    for character in word:
        if current and font.getlength(current + character) > width:
            pieces.append(current)
            current = character
        else:
            current += character
    return [*pieces, current] if current else pieces
