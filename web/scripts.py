"""Scripts sent over the network, read with the CLI's own parser and model, as RenderRequests."""

from __future__ import annotations

import re
from typing import Literal

from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.script import ScriptError, checked_request, parse_script
from web.problems import FieldProblem, ProblemError, field_path


def render_request(text: str, kind: Literal["JSON", "YAML"]) -> render_service_pb2.RenderRequest:
    """The request a script's text stands for; a ProblemError (400) naming each refused field otherwise."""
    try:
        script = parse_script(text, kind)
        music = script.finishing.music
        if music is not None and music.file:
            # A request value never becomes a path on this machine.
            raise ProblemError(
                400,
                "finishing.music.file: a file path is not accepted over the network; upload the music "
                "(POST /v1/music) and name its upload_id in finishing.music.upload",
                field="finishing.music.file",
            )
        render = checked_request(script)
    except ScriptError as error:
        errors = [
            FieldProblem(field=field_path(_fields_only(loc)) or "(top level)", detail=msg)
            for loc, msg in error.problems
        ]
        detail = "; ".join(f"{e.field}: {e.detail}" for e in errors) if errors else str(error)
        raise ProblemError(400, detail, field=errors[0].field if errors else None, errors=errors or None) from None
    # Both caption files for every render with captions: the studio's player needs WebVTT for its caption track and
    # offers both as downloads, and they are text the assembler writes anyway, so a script need not ask.
    for wanted in (types_pb2.SUBTITLE_FORMAT_SRT, types_pb2.SUBTITLE_FORMAT_WEBVTT):
        if render.output.captions and wanted not in render.finishing.sidecars:
            render.finishing.sidecars.append(wanted)
    return render


# A script's fields are snake_case; pydantic also puts the member of a union it tried into a location (its class name,
# or `literal['off']`), which is no field the user wrote: "finishing.loudness.LoudnessModel.lufs" is
# "finishing.loudness.lufs" to them.
_FIELD = re.compile(r"[a-z_][a-z0-9_]*")


def _fields_only(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return tuple(part for part in loc if isinstance(part, int) or _FIELD.fullmatch(part))
