"""Caption layout measured with the font libass draws, and captions drawn by FFmpeg's `ass` filter and measured."""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import subprocess
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from services.assembler.caption_layout import CaptionFrame, CaptionStyle, Cue, caption_geometry
from services.assembler.captions import (
    event_text,
    srt_document,
    vtt_document,
    write_scene_ass,
    write_still_caption,
)
from services.assembler.plan import ScenePlan, caption_runs, plan_scene
from services.assembler.word_timing import SpokenText, join_words, spread_sentences, spread_words, syllables, time_words
from services.common.errors import InvalidArgument
from services.common.fonts import caption_fonts_dir, face_for, libass_em_per_size, load_face, write_fontconfig
from services.common.media import ffmpeg_exe
from services.common.output import OutputFormat
from services.common.providers import Quality

WIDE = OutputFormat(640, 360, 25, True, Quality.DRAFT, "16:9")
TALL = OutputFormat(360, 640, 25, True, Quality.DRAFT, "9:16")
SQUARE = OutputFormat(480, 480, 25, True, Quality.DRAFT, "1:1")
# Large enough that thin CJK strokes keep a solid white core inside their outline.
LARGE = OutputFormat(1280, 720, 25, True, Quality.DRAFT, "16:9")
OUTPUTS = pytest.mark.parametrize("output", [WIDE, TALL, SQUARE], ids=["16:9", "9:16", "1:1"])
TEXTS = {
    "english": "Wet floors cause more workplace injuries than almost any other hazard, so always look for the yellow "
    "warning signs before you walk across a freshly mopped corridor or a loading bay.",
    "german": "Die Donaudampfschifffahrtsgesellschaftskapitänsmütze liegt neben dem "
    "Kraftfahrzeughaftpflichtversicherungsvertrag und der Rechtsschutzversicherungsgesellschaft.",
    "chinese": "湿滑的地板是工作场所受伤的主要原因之一，所以在走过刚拖过的走廊之前，一定要留意黄色的警示牌。",
    "arabic": "الأرضيات المبللة تسبب إصابات في مكان العمل أكثر من أي خطر آخر تقريبا، لذلك ابحث دائما عن علامات "
    "التحذير الصفراء قبل أن تمشي في ممر تم تنظيفه للتو.",
}
# Where captions must stay: the central 80 % of the width, and above 10 % (20 % on 9:16) of the height.
BOTTOM_CLEARANCE = {"16:9": 0.10, "9:16": 0.20, "1:1": 0.10}
BACKGROUND = 64
HIGHLIGHT = "#FFD400"


def _plan(text: str, output: OutputFormat) -> ScenePlan:
    return plan_scene(0, 9000, spread_sentences(text, 9000), output, lead_ms=300, tail_ms=500)


def _ink_width(cue: Cue, output: OutputFormat, text: str) -> float:
    """What the line covers when centred: its advance, widened by glyph ink that overhangs it."""
    font = load_face(cue.face, caption_geometry(output).font_size * libass_em_per_size(cue.face))
    left, _, right, _ = font.getbbox(text)
    return max(font.getlength(text), right) - min(0, left)


# Layout, by the font's metrics.


@OUTPUTS
@pytest.mark.parametrize("language", list(TEXTS))
def test_every_line_fits_the_title_safe_width(language: str, output: OutputFormat) -> None:
    text = TEXTS[language]
    plan = _plan(text, output)
    geometry = caption_geometry(output)
    reach = max(geometry.outline + geometry.shadow, geometry.box_padding)
    assert plan.cues and all(1 <= len(cue.lines) <= 2 for cue in plan.cues)
    for cue in plan.cues:
        for line in cue.lines:
            assert _ink_width(cue, output, join_words(line)) + 2 * reach <= output.width * 0.8
    # Nothing lost or added: the cues read as the text.
    assert join_words([word for cue in plan.cues for word in cue.words]) == text


def test_two_lines_are_balanced_without_an_orphan() -> None:
    text = "Mind the yellow signs before crossing the hall."
    (cue,) = _plan(text, TALL).cues
    first, second = (join_words(line) for line in cue.lines)
    assert len(cue.lines[0]) >= 2 and len(cue.lines[1]) >= 2
    widest_word = max(_ink_width(cue, TALL, word) for word in text.split())
    assert abs(_ink_width(cue, TALL, first) - _ink_width(cue, TALL, second)) <= widest_word


def test_chinese_breaks_between_characters_and_never_before_closing_punctuation() -> None:
    plan = _plan(TEXTS["chinese"], TALL)
    lines = [join_words(line) for cue in plan.cues for line in cue.lines]
    assert len(plan.cues) > 1 and all(" " not in line for line in lines)
    assert all(not line.startswith(("，", "。")) for line in lines)
    assert plan.cues[0].face.family == "Noto Sans CJK SC" and not plan.cues[0].face.bold


def test_fonts_cover_the_text() -> None:
    assert face_for("Hello Привет Γεια שלום مرحبا", bold=True).family == "DejaVu Sans"
    assert face_for("你好 world").family == "Noto Sans CJK SC"
    assert face_for("こんにちは").family == "Noto Sans CJK JP"
    assert face_for("안녕하세요").family == "Noto Sans CJK KR"
    assert face_for("你好").path.parent == caption_fonts_dir()


# Timing.


def test_syllables_weigh_words() -> None:
    words = ("Go", "banana", "beautiful", "café", "rhythm", "你好。", "안녕하세요", "2024", "שלום", "Привет")
    assert [syllables(word) for word in words] == [1, 3, 3, 2, 1, 2, 5, 4, 2, 2]


def test_a_sentence_is_spread_over_its_words_by_syllables() -> None:
    words = spread_words(SpokenText("Go banana!", 1000, 2000))
    assert [(w.text, w.start_ms, w.end_ms) for w in words] == [("Go", 1000, 1250), ("banana!", 1250, 2000)]
    chinese = spread_words(SpokenText("你好，世界。", 0, 1000))
    assert [(w.text, w.start_ms, w.end_ms, w.glued) for w in chinese] == [
        ("你", 0, 250, False),
        ("好，", 250, 500, True),
        ("世", 500, 750, True),
        ("界。", 750, 1000, True),
    ]


def test_cues_start_and_end_exactly_with_their_words() -> None:
    spoken = [SpokenText(w, 120 + i * 410, 120 + i * 410 + 330) for i, w in enumerate("Look left then right".split())]
    (cue,) = plan_scene(0, 2000, spoken, WIDE, lead_ms=300, tail_ms=500, narration="Look left, then right.").cues
    assert [(w.text, w.start_ms, w.end_ms) for w in cue.words] == [
        (s.text + p, s.start_ms + 300, s.end_ms + 300) for s, p in zip(spoken, ["", ",", "", "."], strict=True)
    ]
    assert (cue.start_ms, cue.end_ms) == (spoken[0].start_ms + 300, spoken[-1].end_ms + 300)


def test_chinese_word_timings_are_shared_by_their_characters() -> None:
    spoken = [SpokenText("今天", 0, 400), SpokenText("天气", 400, 800), SpokenText("很好", 800, 1200)]
    words = time_words("今天天气很好。", spoken)
    assert [(w.text, w.start_ms, w.end_ms) for w in words] == [
        ("今", 0, 200),
        ("天", 200, 400),
        ("天", 400, 600),
        ("气", 600, 800),
        ("很", 800, 1000),
        ("好。", 1000, 1200),
    ]


# Highlight.


def _three_words() -> ScenePlan:
    spoken = [SpokenText(w, i * 300, i * 300 + 250) for i, w in enumerate(["Mind", "the", "step"])]
    return plan_scene(0, 900, spoken, OutputFormat(640, 360, 10, True, Quality.DRAFT, "16:9"), 0, 300, "Mind the step.")


def test_still_runs_follow_the_spoken_word() -> None:
    plan = _three_words()
    (cue,) = plan.cues
    assert caption_runs(plan, CaptionStyle(highlight=True)) == [
        (3, CaptionFrame(cue, 0)),
        (3, CaptionFrame(cue, 1)),
        (2, CaptionFrame(cue, 2)),
        (4, None),
    ]
    # Without the highlight the frames of one cue are all equal, so they make one run.
    assert caption_runs(plan, CaptionStyle()) == [(8, CaptionFrame(cue, None)), (4, None)]


def test_clip_captions_move_the_highlight_word_by_word(tmp_path: Path) -> None:
    plan = _three_words()
    path = tmp_path / "clip.ass"
    write_scene_ass(plan, WIDE, CaptionStyle(highlight=True, highlight_color="#12AB3c"), path)
    events = re.findall(r"^Dialogue: 0,([\d:.]+),([\d:.]+),[^,]*,,0,0,0,,(.*)$", path.read_text(), re.MULTILINE)
    assert events == [
        ("0:00:00.00", "0:00:00.30", r"{\1c&H3CAB12&}Mind{\r} the step."),
        ("0:00:00.30", "0:00:00.60", r"Mind {\1c&H3CAB12&}the{\r} step."),
        ("0:00:00.60", "0:00:00.85", r"Mind the {\1c&H3CAB12&}step.{\r}"),
    ]


def test_user_text_never_becomes_tags_around_the_highlight() -> None:
    text = r"Press {\1c&H0000FF&}red{\r} \N now"
    (cue,) = _plan(text, WIDE).cues
    ours = r"{\1c&H00D4FF&}"
    for highlight in range(len(cue.words)):
        event = event_text(cue, highlight, CaptionStyle(highlight=True))
        assert event.count(ours) == 1 and event.count(r"{\r}") == 1
        rest = event.replace(ours, "").replace(r"{\r}", "")
        # What is left is text and line breaks: each backslash escaped by a word joiner or a brace, each brace escaped.
        assert all(re.search(r"\\(?![\u2060{}])|(?<!\\)[{}]", line) is None for line in rest.split(r"\N"))


def test_a_highlight_colour_must_be_hex() -> None:
    with pytest.raises(InvalidArgument, match="#RRGGBB"):
        CaptionStyle(highlight_color="yellow")


# Sidecars.


def test_webvtt_is_valid_and_reads_back_through_ffmpeg(tmp_path: Path) -> None:
    first = plan_scene(0, 1000, [SpokenText("Fish & chips <b>now</b> --> go.", 0, 1000)], WIDE, 300, 500)
    second = plan_scene(1, 1000, [SpokenText("Two.", 0, 1000)], WIDE, 300, 500)
    # The second scene starts 400 ms before the first ends: a cross-fade.
    offsets = [0, first.duration_ms - 400]
    document = vtt_document([first, second], offsets)
    header, *blocks = document.split("\n\n")
    assert header == "WEBVTT" and blocks[-1] == ""
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n[^\n]+", b) for b in blocks[:-1])
    assert "Fish &amp; chips &lt;b&gt;now&lt;/b&gt; --&gt; go." in document
    path = tmp_path / "captions.vtt"
    path.write_text(document, encoding="utf-8")
    read = []
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        for packet in container.demux(stream):
            for subtitle in packet.decode():
                read.append((packet.pts, packet.pts + packet.duration, subtitle.dialogue.decode("utf-8")))
    assert read == [
        (300, 1300, "Fish & chips <b>now</b> --> go."),
        (offsets[1] + 300, offsets[1] + 1300, "Two."),
    ]
    srt = srt_document([first, second], offsets)
    # SubRip has no escapes: the text as written, nothing added.
    assert srt.startswith("1\n00:00:00,300 --> 00:00:01,300\nFish & chips <b>now</b> --> go.\n\n2\n")


# Rendering with the real `ass` filter.


def _render(ass: Path, output: OutputFormat) -> np.ndarray:
    """The captions drawn by libass over a plain grey frame, as RGB pixels, with the assembler's fontconfig file."""
    options = f"ass=filename={ass}"
    argv = [
        ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-f", "lavfi"),
        *(
            "-i",
            f"color=c=0x{BACKGROUND:02x}{BACKGROUND:02x}{BACKGROUND:02x}:s={output.width}x{output.height},format=rgb24",
        ),
        *("-frames:v", "1", "-vf", options, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"),
    ]
    env = {**os.environ, "FONTCONFIG_FILE": str(write_fontconfig(ass.with_name("fonts.conf")))}
    raw = subprocess.run(argv, capture_output=True, check=True, timeout=60, env=env).stdout
    return np.frombuffer(raw, np.uint8).reshape(output.height, output.width, 3)


def _draw(frame: CaptionFrame, output: OutputFormat, style: CaptionStyle, folder: Path) -> np.ndarray:
    path = folder / "frame.ass"
    write_still_caption(frame, output, style, path)
    return _render(path, output)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Left, top, right, bottom (exclusive) of the true pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _crop(mask: np.ndarray) -> np.ndarray:
    left, top, right, bottom = _box(mask)
    return mask[top:bottom, left:right]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ink masks, each cropped to its ink and aligned at the top left."""
    a, b = _crop(a), _crop(b)
    height, width = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    a, b = (np.pad(m, ((0, height - m.shape[0]), (0, width - m.shape[1]))) for m in (a, b))
    return float((a & b).sum() / (a | b).sum())


def _fill(pixels: np.ndarray) -> np.ndarray:
    """The white glyph fill, apart from the black outline and the grey background."""
    return pixels.min(axis=2) > 200


def _pillow_fill(
    text: str, cue: Cue, output: OutputFormat, layout: ImageFont.Layout = ImageFont.Layout.RAQM
) -> np.ndarray:
    """The text drawn by Pillow in the cue's face at the size libass draws it: with raqm, shaped and in bidi order."""
    size = caption_geometry(output).font_size * libass_em_per_size(cue.face)
    font = ImageFont.truetype(str(cue.face.path), size, index=cue.face.index, layout_engine=layout)
    image = Image.new("L", (output.width * 2, output.height))
    ImageDraw.Draw(image).text((output.width, output.height // 2), text, font=font, fill=255, anchor="mm")
    return np.asarray(image) > 128


@OUTPUTS
@pytest.mark.parametrize("language", list(TEXTS))
def test_drawn_captions_stay_in_the_title_safe_area(language: str, output: OutputFormat, tmp_path: Path) -> None:
    plan = _plan(TEXTS[language], output)
    cue = max(plan.cues, key=lambda c: (len(c.lines), max(_ink_width(c, output, join_words(line)) for line in c.lines)))
    style = CaptionStyle(box=language == "english")
    pixels = _draw(CaptionFrame(cue, None), output, style, tmp_path)
    left, top, right, bottom = _box(np.abs(pixels.astype(int) - BACKGROUND).max(axis=2) > 8)
    assert left >= output.width * 0.1 and right <= output.width * 0.9
    assert bottom <= output.height * (1 - BOTTOM_CLEARANCE[output.aspect_name])
    if len(cue.lines) == 2:
        assert bottom - top > 1.5 * caption_geometry(output).font_size


@pytest.mark.parametrize("text", ["Hamburgefonstiv Wxyz 1234", "今天天气很好我们去公园"])
def test_libass_draws_text_as_wide_as_pillow_measured_it(text: str, tmp_path: Path) -> None:
    (cue,) = _plan(text, WIDE).cues
    pixels = _draw(CaptionFrame(cue, None), WIDE, CaptionStyle(), tmp_path)
    left, _, right, _ = _box(_fill(pixels))
    measured = _ink_width(cue, WIDE, text)
    assert abs((right - left) - measured) <= 0.03 * measured


def test_chinese_is_drawn_with_real_glyphs(tmp_path: Path) -> None:
    masks = []
    for text in ("今天天气很好", "我们去公园散步"):
        (cue,) = _plan(text, LARGE).cues
        drawn = _fill(_draw(CaptionFrame(cue, None), LARGE, CaptionStyle(), tmp_path))
        # The same glyphs as Noto Sans CJK drawn by Pillow (measured 0.54 and 0.57; another string scores 0.17).
        assert _overlap(drawn, _pillow_fill(text, cue, LARGE)) > 0.45
        masks.append(drawn)
    # Boxes for missing characters would look alike whatever the text.
    assert _overlap(*masks) < 0.3


def test_arabic_is_drawn_shaped_and_right_to_left(tmp_path: Path) -> None:
    text = "مرحبا بالعالم"
    (cue,) = _plan(text, LARGE).cues
    drawn = _fill(_draw(CaptionFrame(cue, None), LARGE, CaptionStyle(), tmp_path))
    shaped = _overlap(drawn, _pillow_fill(text, cue, LARGE))
    # The words in written order from left to right, each still shaped; and letters unjoined, in memory order.
    words_swapped = _overlap(drawn, _pillow_fill("بالعالم مرحبا", cue, LARGE))
    unshaped = _overlap(drawn, _pillow_fill(text, cue, LARGE, ImageFont.Layout.BASIC))
    assert shaped > 0.7
    assert shaped - max(words_swapped, unshaped) > 0.2


def _highlight_pixels(pixels: np.ndarray) -> np.ndarray:
    target = np.array([0xFF, 0xD4, 0x00])
    return np.abs(pixels.astype(int) - target).max(axis=2) < 40


def test_the_highlighted_word_is_drawn_in_the_highlight_colour(tmp_path: Path) -> None:
    text = "Look for the yellow signs"
    (cue,) = _plan(text, WIDE).cues
    style = CaptionStyle(highlight=True, box=True)
    pixels = _draw(CaptionFrame(cue, 3), WIDE, style, tmp_path)
    lit = _highlight_pixels(pixels)
    left, _, right, _ = _box(lit)
    start = (WIDE.width - _ink_width(cue, WIDE, text)) / 2 + _ink_width(cue, WIDE, "Look for the ")
    end = start + _ink_width(cue, WIDE, "yellow")
    assert lit.sum() > 100 and start - 3 <= left and right <= end + 3
    # The other words stay white, and the box is one even shade: no darker stripes where boxes would overlap.
    assert _fill(pixels)[:, : int(start)].sum() > 100
    caption_left, caption_top, caption_right, caption_bottom = _box(np.abs(pixels.astype(int) - BACKGROUND).max(2) > 8)
    shades = pixels[caption_top:caption_bottom, caption_left:caption_right].max(axis=2)
    box_shade = int(np.median(shades[shades < BACKGROUND]))
    # A box lets about 40 % of the grey through (measured 34 of 64); where two overlapped it would be about 23.
    assert BACKGROUND * 0.3 < box_shade < BACKGROUND * 0.6 and shades.min() >= box_shade - 3


def test_arabic_highlight_lights_the_first_word_on_the_right(tmp_path: Path) -> None:
    (cue,) = _plan("مرحبا بالعالم", WIDE).cues
    lit = _highlight_pixels(_draw(CaptionFrame(cue, 0), WIDE, CaptionStyle(highlight=True), tmp_path))
    left, _, _, _ = _box(lit)
    assert lit.sum() > 100 and left > WIDE.width / 2


def test_runs_and_still_frames_cover_the_scene(tmp_path: Path) -> None:
    plan = _three_words()
    runs = caption_runs(plan, CaptionStyle(highlight=True))
    assert sum(frames for frames, _ in runs) == plan.frames
    lit_lefts = []
    for _, frame in runs:
        if frame is not None:
            lit_lefts.append(_box(_highlight_pixels(_draw(frame, WIDE, CaptionStyle(highlight=True), tmp_path)))[0])
    # The highlight moves left to right, one word per run.
    assert len(lit_lefts) == 3 and all(a < b for a, b in pairwise(lit_lefts))


def test_emoji_are_drawn_as_emoji_not_as_missing_glyph_boxes(tmp_path: Path) -> None:
    """libass falls back to Noto Emoji (an outline font from the `manimgx-fonts` wheel) for emoji DejaVu lacks."""
    emoji_font = Path(str(importlib.resources.files("manimgx_fonts"))) / "NotoEmoji[wght].ttf"
    drawn = {}
    # U+0378 is unassigned: no font has it, so it is drawn as the box a missing emoji used to be.
    for name, text in (("rocket", "🚀"), ("ladder", "🪜"), ("tofu", "\u0378")):
        (cue,) = _plan(text, LARGE).cues
        drawn[name] = _fill(_draw(CaptionFrame(cue, None), LARGE, CaptionStyle(), tmp_path))
        assert drawn[name].sum() > 50, f"no ink for {name}"
    for name, text in (("rocket", "🚀"), ("ladder", "🪜")):
        (cue,) = _plan(text, LARGE).cues
        noto = dataclasses.replace(cue.face, path=emoji_font, index=0)
        expected = _pillow_fill(text, dataclasses.replace(cue, face=noto), LARGE)
        # Measured against Noto Emoji drawn by Pillow: rocket 0.39, ladder 0.47 (libass emboldens it for the bold
        # caption style); against the box 0.06 and 0.19.
        assert _overlap(drawn[name], expected) > 0.3
        assert _overlap(drawn[name], drawn["tofu"]) < 0.25
