"""Caption files: styled ASS per scene (or per still frame) for libass to burn in, SRT and WebVTT sidecars, and the
MP4's soft subtitle track (mov_text)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import pairwise
from pathlib import Path

import av
import pysubs2

from services.assembler.caption_layout import CaptionFrame, CaptionStyle, Cue, caption_geometry, highlighted_word
from services.assembler.plan import ScenePlan
from services.common.errors import MediaError
from services.common.fonts import FontFace
from services.common.output import OutputFormat

# ASS alpha runs from 00 (opaque) to FF (transparent): the box or the shadow lets about 40 % of the picture through.
_BACK_ALPHA = 0x60
# A caption drawn once on a still frame is shown from its first frame on; nine hours covers any scene and stays
# below ASS's largest timestamp (9:59:59.99).
_WHOLE_RUN_MS = 9 * 3600 * 1000


def ass_text(text: str) -> str:
    r"""Makes plain text safe as libass event text, so captions are data and never tags.

    A word joiner (invisible) after each backslash keeps `\N`, `\h` or `\{` in the text from being read as
    escapes; libass reads `\{` and `\}` as literal braces, which would otherwise open override blocks.
    """
    return text.replace("\\", "\\\u2060").replace("{", "\\{").replace("}", "\\}").replace("\r", " ").replace("\n", " ")


def vtt_text(text: str) -> str:
    """Makes plain text safe as a WebVTT cue: `&`, `<` and `>` as character references, on one line.

    With `>` escaped the text cannot hold `-->`, which WebVTT forbids in a cue's text.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", " ").replace("\n", " ")


def write_scene_ass(plan: ScenePlan, output: OutputFormat, style: CaptionStyle, path: Path) -> None:
    """Writes a clip's timed captions: one event per cue, or per spoken word when the highlight follows the words."""
    events: list[tuple[Cue, int | None, int, int]] = []
    for cue in plan.cues:
        if not style.highlight:
            events.append((cue, None, cue.start_ms, cue.end_ms))
            continue
        starts = [cue.start_ms, *(word.start_ms for word in cue.words[1:]), cue.end_ms]
        for start, end in pairwise(starts):
            if end > start:
                events.append((cue, highlighted_word(cue, start), start, end))
    _write_ass(events, output, style, path)


def write_still_caption(frame: CaptionFrame, output: OutputFormat, style: CaptionStyle, path: Path) -> None:
    """One caption frame, shown from time 0 on: drawn once over a still's single frame, which is then repeated."""
    _write_ass([(frame.cue, frame.highlight, 0, _WHOLE_RUN_MS)], output, style, path)


def _ass_colour(hex_colour: str) -> str:
    """A colour written #RRGGBB as ASS override tags want it: `&HBBGGRR&`."""
    return f"&H{hex_colour[5:7]}{hex_colour[3:5]}{hex_colour[1:3]}&".upper()


def event_text(cue: Cue, highlight: int | None, style: CaptionStyle) -> str:
    r"""The cue's lines joined by `\N`, each word escaped; the highlighted word alone wrapped in colour tags."""
    lines, index = [], 0
    for line in cue.lines:
        parts = []
        for position, word in enumerate(line):
            text = ass_text(word.text)
            if index == highlight:
                text = f"{{\\1c{_ass_colour(style.highlight_color)}}}{text}{{\\r}}"
            parts.append(text if position == 0 or word.glued else f" {text}")
            index += 1
        lines.append("".join(parts))
    return "\\N".join(lines)


def _style_name(face: FontFace) -> str:
    return f"{face.family} {face.index}{' bold' if face.bold else ''}"


def _write_ass(
    events: Sequence[tuple[Cue, int | None, int, int]], output: OutputFormat, style: CaptionStyle, path: Path
) -> None:
    """Writes (cue, highlighted word, start ms, end ms) events as ASS whose script size is the output frame.

    Sizes and margins are then in output pixels. WrapStyle 2 turns libass's own wrapping off: the lines are the
    ones measured when the cues were planned. Each font gets a style naming its family as libass looks it up.
    """
    geometry = caption_geometry(output)
    subs = pysubs2.SSAFile()
    subs.info.update({"PlayResX": str(output.width), "PlayResY": str(output.height), "WrapStyle": "2"})
    subs.styles.clear()
    for cue, highlight, start_ms, end_ms in events:
        name = _style_name(cue.face)
        if name not in subs.styles:
            subs.styles[name] = pysubs2.SSAStyle(
                fontname=cue.face.family,
                fontsize=geometry.font_size,
                bold=cue.face.bold,
                primarycolor=pysubs2.Color(255, 255, 255),
                # Style 4 (a libass extension) draws one box of the back colour behind the whole event, padded by
                # the outline width; the outline itself is then transparent. Style 3 would draw a box per run of
                # text, and where the boxes of neighbouring lines and of the runs that the highlight's colour tags
                # cut overlap, the semi-opaque boxes show darker stripes.
                outlinecolor=pysubs2.Color(0, 0, 0, 0xFF if style.box else 0),
                backcolor=pysubs2.Color(0, 0, 0, _BACK_ALPHA),
                borderstyle=4 if style.box else 1,
                outline=geometry.box_padding if style.box else geometry.outline,
                shadow=0 if style.box else geometry.shadow,
                alignment=pysubs2.Alignment.BOTTOM_CENTER,
                # -1 lets libass find each line's direction from its first strong character, as Pillow's raqm
                # does when measuring. With any other value the base direction is left to right, and a right-to-left
                # line cut into runs by the highlight's colour tags shows its words in the wrong order.
                encoding=-1,
                marginl=geometry.side_margin,
                marginr=geometry.side_margin,
                marginv=geometry.bottom_margin,
            )
        subs.append(pysubs2.SSAEvent(start=start_ms, end=end_ms, style=name, text=event_text(cue, highlight, style)))
    subs.save(str(path), format_="ass")


def _timeline(plans: Sequence[ScenePlan], offsets_ms: Sequence[int]) -> Iterator[tuple[int, int, str]]:
    """Every cue as (start ms, end ms, text) on the video's timeline; `offsets_ms[i]` is where scene i starts."""
    for plan, offset in zip(plans, offsets_ms, strict=True):
        for cue in plan.cues:
            yield offset + cue.start_ms, offset + cue.end_ms, cue.text


def _clock(ms: int, separator: str) -> str:
    seconds, milli = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{milli:03d}"


def srt_document(plans: Sequence[ScenePlan], offsets_ms: Sequence[int]) -> str:
    r"""SubRip: numbered cues, `,` before the milliseconds, each cue on one line (players wrap to their own width).

    The text is the narration as written: SubRip defines no escapes, so any added character would be read as text
    (a word joiner after each `\`, `{` and `<` used to be, by copy, search and screen readers). A player that
    reads tags in SRT (`<i>`, `{\an8}`) reads them in the text too; WebVTT has escapes and is exact everywhere.
    """
    return "".join(
        f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n\n"
        for number, (start, end, text) in enumerate(_timeline(plans, offsets_ms), 1)
    )


def vtt_document(plans: Sequence[ScenePlan], offsets_ms: Sequence[int]) -> str:
    """WebVTT: the `WEBVTT` header, then cues with `.` before the milliseconds, each on one line."""
    cues = "".join(
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{vtt_text(text)}\n\n"
        for start, end, text in _timeline(plans, offsets_ms)
    )
    return f"WEBVTT\n\n{cues}"


# The soft subtitle track. FFmpeg reads every subtitle format as markup on its way to the mov_text encoder, which
# reads `\n`, `\N` and `{\...}` as line breaks and tags: neither an SRT, an ASS nor a WebVTT file (whose decoder
# escapes `\` and `{` with a word joiner) gives it the text as written. So FFmpeg builds the track from a timing
# template, whose cues hold only their number, and each of its samples is then rewritten with the cue's text as
# 3GPP timed text stores it (TS 26.245: a 16-bit big-endian length, then UTF-8, no style boxes).


def write_track_template(plans: Sequence[ScenePlan], offsets_ms: Sequence[int], path: Path) -> None:
    """Writes the SRT that FFmpeg turns into the track's timing (its own empty samples fill the gaps)."""
    path.write_text(
        "".join(
            f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{number}\n\n"
            for number, (start, end, _) in enumerate(_timeline(plans, offsets_ms), 1)
        ),
        encoding="utf-8",
    )


def write_track(template: Path, plans: Sequence[ScenePlan], offsets_ms: Sequence[int], path: Path) -> None:
    """Copies the template's mov_text track to `path`, each cue's sample holding the cue's text as written."""
    texts = [text.encode("utf-8") for _, _, text in _timeline(plans, offsets_ms)]
    with av.open(str(template)) as source, av.open(str(path), "w", format="mp4") as target:
        (track,) = source.streams.subtitles
        copy = target.add_stream_from_template(track)
        cue = 0
        for packet in source.demux(track):
            if packet.dts is None:
                continue  # the demuxer's end-of-stream marker
            if int.from_bytes(bytes(packet)[:2], "big"):  # a cue's sample; the others are the gaps' empty samples
                if cue == len(texts):
                    raise MediaError(f"the subtitle track has more cues than the {len(texts)} written")
                # A 16-bit length: far above any cue's few lines, but never cut inside a character.
                text = texts[cue][:0xFFFF].decode("utf-8", "ignore").encode("utf-8")
                sample = av.Packet(len(text).to_bytes(2, "big") + text)
                sample.pts, sample.dts, sample.duration = packet.pts, packet.dts, packet.duration
                sample.time_base, sample.is_keyframe = packet.time_base, packet.is_keyframe
                packet = sample
                cue += 1
            packet.stream = copy
            target.mux(packet)
    if cue != len(texts):
        raise MediaError(f"the subtitle track has {cue} cues, not the {len(texts)} written")
