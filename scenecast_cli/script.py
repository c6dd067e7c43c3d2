"""The script file format (YAML or JSON), checked with pydantic and turned into a RenderRequest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scenecast.v1 import render_service_pb2, types_pb2

from services.common.output import ASPECT_NAMES

_VISUAL_KINDS = {
    "": types_pb2.VISUAL_KIND_UNSPECIFIED,
    "still": types_pb2.VISUAL_KIND_STILL,
    "clip": types_pb2.VISUAL_KIND_CLIP,
}
_QUALITIES = {"draft": types_pb2.QUALITY_DRAFT, "standard": types_pb2.QUALITY_STANDARD, "hd": types_pb2.QUALITY_HD}


class ScriptError(Exception):
    """A script that cannot be rendered; the message names the file, the field and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SceneModel(_Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    narration: str = Field(min_length=1)
    visual: str = ""
    title: str = ""
    # "still" or "clip" overrides the render's choice for this scene; empty follows it.
    show: Literal["", "still", "clip"] = ""


class OutputModel(_Strict):
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    height: int = Field(720, ge=144, le=2160)
    fps: int = Field(30, ge=1, le=60)
    captions: bool = True
    quality: Literal["draft", "standard", "hd"] = "standard"


class ProvidersModel(_Strict):
    image: str = ""
    speech: str = ""
    video: str = ""
    avatar: str = ""


class AvatarModel(_Strict):
    avatar: str = ""
    voice: str = ""
    background: str = ""


class ScriptModel(_Strict):
    title: str = Field("", max_length=200)
    output: OutputModel = OutputModel()
    providers: ProvidersModel = ProvidersModel()
    voice: str = ""
    # Most the render may spend, in US dollars; 0 leaves it to the gateway's MAX_RENDER_COST_USD.
    max_cost_usd: float = Field(0.0, ge=0)
    avatar: AvatarModel = AvatarModel()
    scenes: list[SceneModel] = Field(min_length=1)


def load_script(path: Path) -> render_service_pb2.RenderRequest:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScriptError(f"{path}: cannot read the file ({error})") from error
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ScriptError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {error}"
        ) from error
    try:
        script = ScriptModel.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '(top level)'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ScriptError(f"{path}: {problems}") from error
    return to_request(script)


def to_request(script: ScriptModel) -> render_service_pb2.RenderRequest:
    output = script.output
    return render_service_pb2.RenderRequest(
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
        ),
        providers=types_pb2.ProviderOverrides(**script.providers.model_dump()),
        voice=script.voice,
        title=script.title,
        max_cost_usd=script.max_cost_usd,
        avatar=types_pb2.AvatarSettings(**script.avatar.model_dump()),
    )
