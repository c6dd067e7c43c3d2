"""Finishing options (captions, transitions, framing, cards, sound mix): validated once, as plain values.

The gateway checks them before a render starts and the assembler again when an assembly opens, with this one
function, so a bad option fails before anything is spent and both say the same thing about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scenecast.v1 import types_pb2

from services.common.errors import InvalidArgument
from services.common.limits import MAX_CARD_SUBTITLE_CHARS, MAX_CARD_TITLE_CHARS
from services.common.text import checked_text

DEFAULT_HIGHLIGHT = "#FFD400"
DEFAULT_PAD_COLOR = "#000000"
DEFAULT_CARD_MS = 3000
CARD_MS_RANGE = (500, 15_000)
MAX_TRANSITION_MS = 3000
MAX_SILENCE_PAD_MS = 2000
LUFS_RANGE = (-40.0, -5.0)
TRUE_PEAK_RANGE = (-9.0, 0.0)
MUSIC_GAIN_RANGE = (-60.0, 0.0)
MAX_MUSIC_FADE_MS = 30_000
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")

TRANSITIONS = {
    types_pb2.TRANSITION_UNSPECIFIED: "fade",
    types_pb2.TRANSITION_FADE_BLACK: "fade",
    types_pb2.TRANSITION_CROSSFADE: "crossfade",
    types_pb2.TRANSITION_CUT: "cut",
}
FITS = {
    types_pb2.FIT_UNSPECIFIED: "pad_color",
    types_pb2.FIT_PAD_COLOR: "pad_color",
    types_pb2.FIT_PAD_BLUR: "pad_blur",
    types_pb2.FIT_CROP: "crop",
}
SIDECARS = {types_pb2.SUBTITLE_FORMAT_SRT: "srt", types_pb2.SUBTITLE_FORMAT_WEBVTT: "vtt"}


@dataclass(frozen=True)
class CardText:
    title: str
    subtitle: str
    duration_ms: int


@dataclass(frozen=True)
class Loudness:
    integrated_lufs: float
    true_peak_dbtp: float


@dataclass(frozen=True)
class MusicOptions:
    gain_db: float
    duck: bool
    fade_ms: int


@dataclass(frozen=True)
class FinishingOptions:
    transition: str  # "fade", "crossfade" or "cut"
    transition_ms: int | None  # None: the assembler's FADE_MS
    fit: str  # "pad_color", "pad_blur" or "crop"
    pad_color: str  # "#RRGGBB"
    highlight_words: bool
    highlight_color: str
    caption_box: bool
    sidecars: tuple[str, ...]  # "srt", "vtt"
    loudness: Loudness | None  # None: leave the mix as it is
    silence_pad_ms: int | None  # None: keep the narration's own silence
    title_card: CardText | None
    end_card: CardText | None
    music: MusicOptions


def finishing_options(message: types_pb2.Finishing, field: str = "finishing") -> FinishingOptions:
    """Validates a Finishing message; every error names the field and what it accepts."""
    if message.transition not in TRANSITIONS:
        raise InvalidArgument(f"{field}.transition must be FADE_BLACK, CROSSFADE or CUT (got {message.transition})")
    if message.transition_ms > MAX_TRANSITION_MS:
        raise InvalidArgument(
            f"{field}.transition_ms must be at most {MAX_TRANSITION_MS} (got {message.transition_ms})"
        )
    if message.fit not in FITS:
        raise InvalidArgument(f"{field}.fit must be PAD_COLOR, PAD_BLUR or CROP (got {message.fit})")
    sidecars: list[str] = []
    for index, value in enumerate(message.sidecars):
        if value not in SIDECARS:
            raise InvalidArgument(f"{field}.sidecars[{index}] must be SRT or WEBVTT (got {value})")
        if SIDECARS[value] not in sidecars:
            sidecars.append(SIDECARS[value])
    if message.HasField("silence_pad_ms") and message.silence_pad_ms > MAX_SILENCE_PAD_MS:
        raise InvalidArgument(
            f"{field}.silence_pad_ms must be at most {MAX_SILENCE_PAD_MS} (got {message.silence_pad_ms})"
        )
    style = message.caption_style
    return FinishingOptions(
        transition=TRANSITIONS[message.transition],
        transition_ms=message.transition_ms or None,
        fit=FITS[message.fit],
        pad_color=_color(message.pad_color, f"{field}.pad_color", DEFAULT_PAD_COLOR),
        highlight_words=style.highlight_words,
        highlight_color=_color(style.highlight_color, f"{field}.caption_style.highlight_color", DEFAULT_HIGHLIGHT),
        caption_box=style.box,
        sidecars=tuple(sidecars),
        loudness=_loudness(message.loudness, f"{field}.loudness"),
        silence_pad_ms=message.silence_pad_ms if message.HasField("silence_pad_ms") else None,
        title_card=_card(message.title_card, f"{field}.title_card"),
        end_card=_card(message.end_card, f"{field}.end_card"),
        music=_music(message.music, f"{field}.music"),
    )


def _color(value: str, field: str, default: str) -> str:
    if not value:
        return default
    if not _COLOR.fullmatch(value):
        raise InvalidArgument(f"{field} must be a colour written #RRGGBB, for example #FFD400 (got {value!r})")
    return value.upper()


def _within(value: float, bounds: tuple[float, float], field: str) -> float:
    if not bounds[0] <= value <= bounds[1]:
        raise InvalidArgument(f"{field} must be from {bounds[0]:g} to {bounds[1]:g} (got {value:g})")
    return value


def _loudness(message: types_pb2.LoudnessSettings, field: str) -> Loudness | None:
    if message.disabled:
        return None
    return Loudness(
        integrated_lufs=_within(message.integrated_lufs, LUFS_RANGE, f"{field}.integrated_lufs")
        if message.HasField("integrated_lufs")
        else -16.0,
        true_peak_dbtp=_within(message.true_peak_dbtp, TRUE_PEAK_RANGE, f"{field}.true_peak_dbtp")
        if message.HasField("true_peak_dbtp")
        else -1.5,
    )


def _card(message: types_pb2.Card, field: str) -> CardText | None:
    title = checked_text(message.title, f"{field}.title", MAX_CARD_TITLE_CHARS, required=False)
    subtitle = checked_text(message.subtitle, f"{field}.subtitle", MAX_CARD_SUBTITLE_CHARS, required=False)
    if not title:
        if subtitle or message.duration_ms:
            raise InvalidArgument(f"{field}.title is empty; a card needs a title (or leave the whole card unset)")
        return None
    duration = message.duration_ms or DEFAULT_CARD_MS
    _within(duration, CARD_MS_RANGE, f"{field}.duration_ms")
    return CardText(title=title, subtitle=subtitle, duration_ms=duration)


def _music(message: types_pb2.MusicMix, field: str) -> MusicOptions:
    if message.HasField("fade_ms") and message.fade_ms > MAX_MUSIC_FADE_MS:
        raise InvalidArgument(f"{field}.fade_ms must be at most {MAX_MUSIC_FADE_MS} (got {message.fade_ms})")
    return MusicOptions(
        gain_db=_within(message.gain_db, MUSIC_GAIN_RANGE, f"{field}.gain_db")
        if message.HasField("gain_db")
        else -20.0,
        duck=message.duck if message.HasField("duck") else True,
        fade_ms=message.fade_ms if message.HasField("fade_ms") else 1500,
    )
