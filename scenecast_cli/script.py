"""The script file format (YAML or JSON), checked with pydantic and turned into a RenderRequest."""

from __future__ import annotations

import json
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from scenecast.v1 import render_service_pb2, types_pb2

from gateway.config import GatewaySettings
from gateway.validation import validate_render
from services.common import finishing
from services.common.errors import InvalidArgument
from services.common.output import ASPECT_NAMES
from services.common.script_format import CaptionsModel, FinishingModel, ScriptModel

_VISUAL_KINDS = {
    "": types_pb2.VISUAL_KIND_UNSPECIFIED,
    "still": types_pb2.VISUAL_KIND_STILL,
    "clip": types_pb2.VISUAL_KIND_CLIP,
}
_QUALITIES = {"draft": types_pb2.QUALITY_DRAFT, "standard": types_pb2.QUALITY_STANDARD, "hd": types_pb2.QUALITY_HD}
_FRAME_RATE_MODES = {"constant": types_pb2.FRAME_RATE_MODE_CONSTANT, "variable": types_pb2.FRAME_RATE_MODE_VARIABLE}
_TRANSITIONS = {
    "fade": types_pb2.TRANSITION_FADE_BLACK,
    "crossfade": types_pb2.TRANSITION_CROSSFADE,
    "cut": types_pb2.TRANSITION_CUT,
}
_FITS = {"pad_color": types_pb2.FIT_PAD_COLOR, "pad_blur": types_pb2.FIT_PAD_BLUR, "crop": types_pb2.FIT_CROP}
_SIDECARS = {"srt": types_pb2.SUBTITLE_FORMAT_SRT, "vtt": types_pb2.SUBTITLE_FORMAT_WEBVTT}


class ScriptError(Exception):
    """A script that cannot be rendered; the message names the file, the field and the reason.

    `problems` lists each field the model refused, as its location (("scenes", 0, "id")) and the reason, for callers
    that report fields apart (the HTTP API); empty when the script is not valid YAML or JSON at all.
    """

    def __init__(self, message: str, problems: tuple[tuple[tuple[str | int, ...], str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class LocalMusic:
    """A music file beside the script, uploaded with UploadMusic before the render."""

    path: Path
    mime_type: str


@dataclass(frozen=True)
class Script:
    request: render_service_pb2.RenderRequest
    music: LocalMusic | None


def load_script(path: Path) -> Script:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScriptError(f"{path}: cannot read the file ({error})") from error
    try:
        script = parse_script(text, "JSON" if path.suffix.lower() == ".json" else "YAML")
        request = checked_request(script)
    except ScriptError as error:
        raise ScriptError(f"{path}: {error}", error.problems) from error
    music = script.finishing.music
    return Script(request, _local_music(path, music.file) if music and music.file else None)


def script_problems(path: Path) -> list[str]:
    """Every problem of a script file, one line each, "file:line: field: reason" as compilers print them (the line
    is the field's own, or that of the nearest enclosing block when the field is missing); empty when it is valid."""
    try:
        script = load_script(path)
    except ScriptError as error:
        if not error.problems:
            return [str(error)]  # unreadable, or not YAML/JSON (the parser's message has the line), or one check
        root = _yaml_tree(path)
        return [
            f"{path}:{_line(root, loc)}: {'.'.join(str(part) for part in loc) or '(top level)'}: {message}"
            for loc, message in error.problems
        ]
    # Then the gateway's own checks (a scene with neither visual nor title...), as a default gateway makes them; they
    # stop at the first problem. A gateway whose AVATAR_PROVIDER is set needs no visuals: not knowable offline.
    try:
        validate_render(
            script.request, GatewaySettings.model_fields["max_scenes"].default, not script.request.providers.avatar
        )
    except InvalidArgument as error:
        scene = re.match(r"scenes\[(\d+)\]", str(error))
        return [f"{path}:{_line(_yaml_tree(path), ('scenes', int(scene[1])) if scene else ())}: {error}"]
    return []


def _yaml_tree(path: Path) -> yaml.Node | None:
    """The script's YAML node tree, which keeps each value's position (JSON is read as the YAML it also is)."""
    try:
        return yaml.compose(path.read_text(encoding="utf-8"), yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _line(node: yaml.Node | None, loc: tuple[str | int, ...]) -> str:
    """The 1-based line of the field at `loc`, or of the deepest block on its way that exists; "?" without a tree."""
    if node is None:
        return "?"
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            keys = [(key, value) for key, value in node.value if key.value == part]
            if not keys:
                break
            key, node = keys[0]
            if part == loc[-1]:
                return str(key.start_mark.line + 1)  # a refused key is reported where it is written
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break  # a pydantic union member's name, or a scalar where a block was expected
    return str(node.start_mark.line + 1)


# Largest frame height of a draft: enough to judge framing and captions, with a fraction of the pixels to encode.
DRAFT_HEIGHT = 360


def draft(request: render_service_pb2.RenderRequest) -> None:
    """Makes `request` a quick preview: at most DRAFT_HEIGHT high, draft quality. The script's providers are kept
    (at their cheaper draft price): switching to the offline ones would preview a different video."""
    request.output.height = min(request.output.height, DRAFT_HEIGHT)
    request.output.quality = types_pb2.QUALITY_DRAFT


def only_scene(request: render_service_pb2.RenderRequest, scene_id: str) -> None:
    """Keeps only the scene `scene_id`, as its own short video: without the title and end cards, which belong to the
    whole video and would make a preview of one scene mostly cards."""
    kept = [scene for scene in request.scenes if scene.id == scene_id]
    if not kept:
        ids = ", ".join(scene.id for scene in request.scenes)
        raise ScriptError(f"--scene {scene_id}: the script has no scene with that id (its scenes: {ids})")
    del request.scenes[:]
    request.scenes.extend(kept)
    request.finishing.ClearField("title_card")
    request.finishing.ClearField("end_card")


def parse_script(text: str, kind: Literal["JSON", "YAML"]) -> ScriptModel:
    """The script a text stands for; ScriptError (without a file name) when it is not valid."""
    try:
        data = (
            json.loads(text, object_pairs_hook=_unique_keys, parse_int=_check_number)
            if kind == "JSON"
            else yaml.load(text, _UniqueKeyLoader)
        )
    except RecursionError:
        raise ScriptError(f"not valid {kind}: nested too deeply for a script") from None
    # ValueError: a number too long, or a repeated key in JSON.
    except (ValueError, yaml.YAMLError) as error:
        raise ScriptError(f"not valid {kind}: {error}") from error
    try:
        return ScriptModel.model_validate(data)
    except ValidationError as error:
        problems = tuple((tuple(problem["loc"]), problem["msg"]) for problem in error.errors())
        message = "; ".join(f"{'.'.join(str(part) for part in loc) or '(top level)'}: {msg}" for loc, msg in problems)
        raise ScriptError(message, problems) from error


def checked_request(script: ScriptModel) -> render_service_pb2.RenderRequest:
    """The request a script stands for, checked as the gateway checks it, so a script that loads is one the gateway
    accepts."""
    request = to_request(script)
    try:
        finishing.finishing_options(request.finishing)
    except InvalidArgument as error:
        raise ScriptError(str(error)) from error
    return request


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a repeated key: the last value would win without a word (a lost scene edit)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"the key {key!r} appears twice in one object")
        data[key] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a repeated key in a mapping (it would keep the last value without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges keys that the mapping's own keys may override
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        _check_number(str(node.value))
        return int(super().construct_yaml_int(node))


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)

# Longest integer a script may write, in characters: far beyond any valid value, and it keeps Python's own limit
# (4300 digits, with advice about sys.set_int_max_str_digits) out of the message.
_MAX_INT_CHARS = 100


def _check_number(text: str) -> int:
    if len(text) > _MAX_INT_CHARS:
        raise ValueError(f"a number has {len(text)} characters; no script value needs more than {_MAX_INT_CHARS}")
    return int(text)


def _local_music(script: Path, name: str) -> LocalMusic:
    music = script.parent / name
    if not music.is_file():
        raise ScriptError(f"{script}: finishing.music.file: no such file {music}")
    mime_type = mimetypes.guess_type(music.name)[0] or ""
    if not mime_type.startswith("audio/"):
        raise ScriptError(
            f"{script}: finishing.music.file: {music.name} is not named as audio (.mp3, .m4a, .wav, .ogg, .flac)"
        )
    return LocalMusic(music, mime_type)


def to_request(script: ScriptModel) -> render_service_pb2.RenderRequest:
    """The request a script stands for; local music is left out, to be named by its upload id once uploaded."""
    output = script.output
    request = render_service_pb2.RenderRequest(
        scenes=[
            types_pb2.Scene(
                id=s.id, narration=s.narration, visual_prompt=s.visual, title=s.title, visual_kind=_VISUAL_KINDS[s.show]
            )
            for s in script.scenes
        ],
        output=types_pb2.OutputSettings(
            aspect_ratio=ASPECT_NAMES[output.aspect_ratio],
            height=output.height,
            fps=output.fps,
            captions=output.captions,
            quality=_QUALITIES[output.quality],
            frame_rate_mode=_FRAME_RATE_MODES[output.frame_rate_mode],
        ),
        providers=types_pb2.ProviderOverrides(**script.providers.model_dump()),
        voice=script.voice,
        title=script.title,
        max_cost_usd=script.max_cost_usd,
        avatar=types_pb2.AvatarSettings(**script.avatar.model_dump()),
        finishing=_finishing(script.finishing),
    )
    music = script.finishing.music
    if music and music.library:
        request.music.library_file = music.library
    elif music and music.upload:
        request.music.upload_id = music.upload
    return request


def _finishing(model: FinishingModel) -> types_pb2.Finishing:
    """Sets only what the script sets, so an empty block is an empty message."""
    message = types_pb2.Finishing(
        transition=_TRANSITIONS[model.transition] if model.transition else types_pb2.TRANSITION_UNSPECIFIED,
        transition_ms=model.transition_ms,
        fit=_FITS[model.fit] if model.fit else types_pb2.FIT_UNSPECIFIED,
        pad_color=model.pad_color,
        sidecars=[_SIDECARS[name] for name in model.sidecars],
    )
    captions = model.captions
    if captions != CaptionsModel():
        message.caption_style.CopyFrom(
            types_pb2.CaptionStyle(
                highlight_words=captions.highlight, highlight_color=captions.highlight_color, box=captions.box
            )
        )
    for card, target in ((model.title_card, message.title_card), (model.end_card, message.end_card)):
        if card is not None:
            target.CopyFrom(types_pb2.Card(title=card.title, subtitle=card.subtitle, duration_ms=card.duration_ms))
    if model.silence_pad_ms is not None:
        message.silence_pad_ms = model.silence_pad_ms
    if model.loudness == "off":
        message.loudness.disabled = True
    else:
        if model.loudness.lufs is not None:
            message.loudness.integrated_lufs = model.loudness.lufs
        if model.loudness.true_peak is not None:
            message.loudness.true_peak_dbtp = model.loudness.true_peak
    if model.music is not None:
        if model.music.gain_db is not None:
            message.music.gain_db = model.music.gain_db
        if model.music.duck is not None:
            message.music.duck = model.music.duck
        if model.music.fade_ms is not None:
            message.music.fade_ms = model.music.fade_ms
    return message
