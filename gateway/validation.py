"""Checks a RenderRequest before any provider is called; every error names the field path and the fix."""

from __future__ import annotations

import re

from scenecast.v1 import render_service_pb2, types_pb2

from services.common.errors import InvalidArgument, quoted
from services.common.limits import MAX_ID_CHARS, MAX_PROMPT_CHARS, MAX_TITLE_CHARS, MAX_VOICE_CHARS
from services.common.output import OutputFormat, output_format
from services.common.providers import check_cost_cap
from services.common.text import checked_narration, checked_text

_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_CHARS}}}")


def validate_render(
    request: render_service_pb2.RenderRequest, max_scenes: int, needs_visuals: bool = True
) -> OutputFormat:
    """Returns the output format of a valid request; raises InvalidArgument on the first problem found.

    `needs_visuals` is False for avatar renders, whose scenes need only narration.
    """
    check_render_id(request.render_id)
    check_cost_cap(request.max_cost_usd, "max_cost_usd")
    checked_text(request.title, "title", MAX_TITLE_CHARS, required=False)
    checked_text(request.voice, "voice", MAX_VOICE_CHARS, required=False)
    if not request.scenes:
        raise InvalidArgument("scenes is empty; a script needs at least one scene")
    if len(request.scenes) > max_scenes:
        raise InvalidArgument(
            f"scenes has {len(request.scenes)} entries; the limit is {max_scenes}, so split the script"
        )
    seen: dict[str, int] = {}
    for index, scene in enumerate(request.scenes):
        field = f"scenes[{index}]"
        if not _ID.fullmatch(scene.id):
            raise InvalidArgument(
                f"{field}.id must be 1-{MAX_ID_CHARS} characters of A-Z, a-z, 0-9, _ and - (got {quoted(scene.id)})"
            )
        if scene.id in seen:
            raise InvalidArgument(f"{field}.id {scene.id!r} repeats scenes[{seen[scene.id]}].id; ids must be unique")
        seen[scene.id] = index
        checked_narration(scene.narration, f"{field}.narration")
        prompt = checked_text(scene.visual_prompt, f"{field}.visual_prompt", MAX_PROMPT_CHARS, required=False)
        title = checked_text(scene.title, f"{field}.title", MAX_TITLE_CHARS, required=False)
        if needs_visuals and not prompt and not title:
            raise InvalidArgument(f"{field}.visual_prompt and {field}.title are both empty; give at least one")
        if scene.visual_kind not in types_pb2.VisualKind.values():
            # An enum value from a newer contract would otherwise be rendered as a still without a word.
            raise InvalidArgument(f"{field}.visual_kind must be STILL, CLIP or unspecified (got {scene.visual_kind})")
    return output_format(request.output, "output")


def effective_cap(requested_usd: float, operator_usd: float) -> float:
    """The cap a render runs under (0: none). The operator's MAX_RENDER_COST_USD is a ceiling: a request may only
    lower it, since whoever can reach the gateway must not be able to spend more than the operator allowed."""
    if not operator_usd:
        return requested_usd
    return min(requested_usd, operator_usd) if requested_usd else operator_usd


def check_render_id(render_id: str) -> None:
    """Render ids name files and ledger rows; empty is allowed where the gateway picks one."""
    if render_id and not _ID.fullmatch(render_id):
        raise InvalidArgument(f"render_id must be 1-{MAX_ID_CHARS} characters of A-Z, a-z, 0-9, _ and -")


def check_provider(name: str, field: str, valid: list[str]) -> None:
    """An override must name a provider the service has; checked up front so nothing is spent on a doomed render."""
    if name and name not in valid:
        raise InvalidArgument(f"{field}: unknown provider {quoted(name)}; valid: {', '.join(valid)}")
