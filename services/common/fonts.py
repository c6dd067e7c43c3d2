"""Finds and loads scalable fonts: DejaVu Sans for alphabetic scripts, Noto Sans CJK for Chinese, Japanese, Korean;
Noto Emoji (and the Noto Sans of other scripts) for what libass finds in neither."""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import ImageFont

_LOGGER = logging.getLogger(__name__)

# Where Debian/Ubuntu, Fedora and Arch install DejaVu, for machines without fontconfig.
_KNOWN_PATHS: dict[bool, tuple[str, ...]] = {
    False: (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ),
    True: (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
    ),
}
# fc-match always answers with its closest match, which may be a bitmap font FreeType cannot scale.
_SCALABLE_SUFFIXES = (".ttf", ".otf")

# The pip package `noto-cjk-sans-otc` (SIL OFL) ships one collection, Regular weight only; its faces differ in the
# regional forms of shared ideographs, so Japanese and Korean text get their own face and the rest Simplified Chinese.
_CJK_PACKAGE = "noto_cjk_sans_otc"
_CJK_FILE = "NotoSansCJK-Regular.ttc"
_CJK_JAPANESE, _CJK_KOREAN, _CJK_CHINESE = 0, 1, 2  # face indexes in the collection: JP, KR, SC
# The pip package `manimgx-fonts` (SIL OFL) ships Noto Emoji, a monochrome outline font, and Noto Sans for scripts
# DejaVu lacks (Devanagari, Thai, ...). libass draws outlines only: colour emoji fonts (CBDT bitmaps, as Debian's
# fonts-noto-color-emoji, or COLR layers) come out empty or as one flat shape, so the outline font is the one that
# draws. libass falls back to it through fontconfig, glyph by glyph, where the caption's own face has no glyph (DejaVu
# has a few emoji, such as U+1F600, and draws those itself). Captions are still measured with the caption's face,
# whose missing-glyph box is about as wide as an emoji.
_FALLBACK_PACKAGE = "manimgx_fonts"
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
# Ideographs, kana, hangul, bopomofo, CJK punctuation and full-width forms: what DejaVu Sans has no glyphs for.
CJK_CHARACTER = re.compile(
    "[\u1100-\u11ff\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff]"
)


@dataclass(frozen=True)
class FontFace:
    """One face of a font file, named as libass looks it up (fontconfig for DejaVu, the fonts folder for Noto)."""

    path: Path
    index: int
    family: str
    # The file itself is bold; asked for bold with a regular face, libass would thicken it by itself.
    bold: bool


def _fc_match(pattern: str) -> Path | None:
    try:
        result = subprocess.run(
            ["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        _LOGGER.debug("fc-match unavailable: %s", error)
        return None
    matched = result.stdout.strip()
    return Path(matched) if result.returncode == 0 and matched else None


@functools.cache
def find_font(bold: bool = False) -> Path | None:
    """Returns a DejaVu Sans (or fontconfig's closest) TrueType file, or None when the machine has none."""
    matched = _fc_match("DejaVu Sans:bold" if bold else "DejaVu Sans")
    candidates = ([matched] if matched else []) + [Path(path) for path in _KNOWN_PATHS[bold]]
    for candidate in candidates:
        if candidate.suffix.lower() in _SCALABLE_SUFFIXES and candidate.is_file():
            return candidate
    _LOGGER.warning("no TrueType font found (install fonts-dejavu-core); using Pillow's built-in font")
    return None


def load_font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """Loads the font at a pixel size; without a font file, Pillow's built-in scalable font (never bold) stands in."""
    path = find_font(bold)
    if path is not None:
        return ImageFont.truetype(path, size)
    font = ImageFont.load_default(size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow was built without FreeType, so it cannot draw scalable text")
    return font


def write_fontconfig(path: Path) -> Path:
    """Writes a fontconfig file that adds Noto Sans CJK and Noto Emoji to the system's fonts; FFmpeg reads it via
    FONTCONFIG_FILE.

    Chosen over the `ass` filter's `fontsdir`, which makes libass copy every file of the folder into memory for
    each filter: a still with the word highlight has one filter per word, and ten filters with the 19 MB CJK
    collection took 741 MB against 107 MB through fontconfig (which maps the file once).
    """
    system = "/etc/fonts/fonts.conf"
    folders = (caption_fonts_dir(), Path(str(importlib.resources.files(_FALLBACK_PACKAGE))))
    path.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">\n<fontconfig>\n'
        f'  <include ignore_missing="yes">{escape(system)}</include>\n'
        + "".join(f"  <dir>{escape(str(folder))}</dir>\n" for folder in folders)
        + "</fontconfig>\n"
    )
    return path


def caption_fonts_dir() -> Path:
    """The folder holding Noto Sans CJK (inside its wheel), which the system's fontconfig does not know."""
    return Path(str(importlib.resources.files(_CJK_PACKAGE)))


def _cjk_face(text: str) -> FontFace:
    index = _CJK_JAPANESE if _KANA.search(text) else _CJK_KOREAN if _HANGUL.search(text) else _CJK_CHINESE
    return _face(caption_fonts_dir() / _CJK_FILE, index, bold=False)


@functools.cache
def _face(path: Path, index: int, bold: bool) -> FontFace:
    family, style = ImageFont.truetype(str(path), 16, index=index).getname()
    if family is None:
        raise RuntimeError(f"{path} (face {index}) has no family name, so libass could not look it up")
    return FontFace(path, index, family, bold=bold and "bold" in (style or "").lower())


def face_for(text: str, bold: bool = False) -> FontFace:
    """The face that covers `text`: Noto Sans CJK when it holds any CJK character, else DejaVu Sans.

    DejaVu Sans covers Latin, Greek, Cyrillic, Arabic and Hebrew. Without it, Noto Sans CJK (which also covers
    Latin, Greek and Cyrillic) stands in, so captions are never measured with one font and drawn with another.
    """
    path = None if CJK_CHARACTER.search(text) else find_font(bold)
    return _cjk_face(text) if path is None else _face(path, 0, bold)


@functools.cache
def load_face(face: FontFace, size: float) -> ImageFont.FreeTypeFont:
    """The face at `size` pixels per em (fractions allowed), with complex layout when Pillow has it (bidi, shaping)."""
    return ImageFont.truetype(str(face.path), size, index=face.index)


def load_font_for(text: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """A font at `size` pixels per em whose face covers `text` (see `face_for`); bold only where a bold face exists."""
    return load_face(face_for(text, bold), size)


@functools.cache
def libass_em_per_size(face: FontFace) -> float:
    """Pixels per em that libass draws per unit of ASS `Fontsize`.

    libass sizes a face so that its ascent plus descent (the OS/2 Windows metrics, equal to the hhea metrics that
    FreeType reports here) equals `Fontsize`, not its em: DejaVu Sans Bold draws 0.859 em per unit, Noto Sans CJK
    0.690. Measured by rendering with FFmpeg's `ass` filter: at Fontsize 20, 40 and 57 a line of DejaVu Sans Bold
    was 277, 553 and 788 pixels wide, and Pillow at 0.859 em per unit measured 279, 558 and 795 (Noto Sans CJK SC:
    192, 385, 548 against 193, 387, 551), so measuring this way errs by about 1 % on the wide side.
    """
    reference = 1000
    ascent, descent = load_face(face, reference).getmetrics()
    return reference / (ascent + descent)
