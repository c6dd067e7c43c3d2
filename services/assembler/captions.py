"""Caption files: styled ASS per scene for libass to burn in, and SRT for the soft subtitle track."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pysubs2

from services.assembler.plan import (
    CAPTION_SIDE_MARGIN_RATIO,
    ScenePlan,
    caption_font_size,
)
from services.common.output import OutputFormat

CAPTION_FONT = "DejaVu Sans"
# Distance of the caption's baseline block from the bottom edge, relative to the frame height (title-safe).
_BOTTOM_MARGIN_RATIO = 0.06


def ass_text(text: str) -> str:
    r"""Makes plain text safe as libass event text, so captions are data and never tags.

    A word joiner (invisible) after each backslash keeps `\N`, `\h` or `\{` in the text from being read as
    escapes; libass reads `\{` and `\}` as literal braces, which would otherwise open override blocks.
    """
    return text.replace("\\", "\\\u2060").replace("{", "\\{").replace("}", "\\}").replace("\r", " ").replace("\n", " ")


def srt_text(text: str) -> str:
    r"""Makes plain text safe as an SRT cue for FFmpeg, so the soft subtitle track shows the text as written.

    FFmpeg reads SRT as HTML-like markup and converts it to ASS: it drops `{\...}` and `{c:...}` blocks and unknown
    `<tags>`, turns `<b>`, `<i>`, `<u>`, `<s>`, `<font>` into styles, and (there and in the mov_text encoder) reads
    `\N` and `\n` as line breaks; a cue whose text starts like a timing line (`1:2:3,4 --> 5:6:7,8`) is dropped.
    SRT has no escapes of its own; a word joiner (invisible) after each backslash, `{` and `<`, and inside each
    `-->`, breaks every one of those patterns.
    """
    return (
        text.replace("\\", "\\\u2060")
        .replace("{", "{\u2060")
        .replace("<", "<\u2060")
        .replace("-->", "--\u2060>")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def write_scene_ass(plan: ScenePlan, output: OutputFormat, path: Path) -> None:
    """Writes the scene's cues as ASS whose script resolution equals the output, so sizes are in output pixels."""
    write_ass([(cue.text, cue.start_ms, cue.end_ms) for cue in plan.cues], output, path)


# A caption drawn once on a still frame is shown from its first frame on; nine hours covers any scene and stays
# below ASS's largest timestamp (9:59:59.99).
_WHOLE_RUN_MS = 9 * 3600 * 1000


def write_still_caption(text: str, output: OutputFormat, path: Path) -> None:
    """One caption, shown from time 0 on: drawn once over a still's single frame, which is then repeated."""
    write_ass([(text, 0, _WHOLE_RUN_MS)], output, path)


def write_ass(events: Sequence[tuple[str, int, int]], output: OutputFormat, path: Path) -> None:
    """Writes (text, start ms, end ms) events as styled ASS at the output's resolution."""
    subs = pysubs2.SSAFile()
    subs.info["PlayResX"] = str(output.width)
    subs.info["PlayResY"] = str(output.height)
    subs.info["WrapStyle"] = "0"
    size = caption_font_size(output)
    subs.styles["Default"] = pysubs2.SSAStyle(
        fontname=CAPTION_FONT,
        fontsize=size,
        bold=True,
        primarycolor=pysubs2.Color(255, 255, 255),
        outlinecolor=pysubs2.Color(0, 0, 0),
        backcolor=pysubs2.Color(0, 0, 0, 96),
        outline=max(1.0, size * 0.09),
        shadow=max(1.0, size * 0.05),
        alignment=pysubs2.Alignment.BOTTOM_CENTER,
        marginl=round(output.width * CAPTION_SIDE_MARGIN_RATIO),
        marginr=round(output.width * CAPTION_SIDE_MARGIN_RATIO),
        marginv=round(output.height * _BOTTOM_MARGIN_RATIO),
    )
    for text, start_ms, end_ms in events:
        subs.append(pysubs2.SSAEvent(start=start_ms, end=end_ms, text=ass_text(text)))
    subs.save(str(path), format_="ass")


def write_srt(plans: Sequence[ScenePlan], path: Path) -> None:
    """Writes every cue on the video's timeline (scene starts are the sums of the scenes' frame-exact lengths)."""
    subs = pysubs2.SSAFile()
    offset_frames = 0
    for plan in plans:
        offset_ms = round(offset_frames * 1000 / plan.fps)
        for cue in plan.cues:
            event = pysubs2.SSAEvent(
                start=offset_ms + cue.start_ms, end=offset_ms + cue.end_ms, text=srt_text(cue.text)
            )
            subs.append(event)
        offset_frames += plan.frames
    # The text is SRT already: keep_ssa_tags stops pysubs2 from stripping `{...}` and `\N` from it as ASS markup.
    subs.save(str(path), format_="srt", keep_ssa_tags=True)
