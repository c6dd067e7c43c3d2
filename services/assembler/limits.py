"""Bounds on what an Assemble call may announce, checked as each message arrives, before any work starts.

The assembler is called directly too (not only through the gateway), so it enforces the contract's limits itself
(their numbers are in services.common.limits). The bounds defined here are the assembler's own, on what the contract
leaves open (asset metadata, word timings from the speech service, an avatar's whole script): it keeps every scene's
announcement until the video is muxed, and plans captions from its text, so no field may make it hold or plan
without end.
"""

from __future__ import annotations

from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import types_pb2

from services.common.errors import InvalidArgument
from services.common.limits import MAX_ID_CHARS, MAX_NARRATION_CHARS, MAX_PROMPT_CHARS, MAX_TITLE_CHARS
from services.common.text import checked_text

# RFC 6838 allows 127 characters for the type and for the subtype.
MAX_MIME_TYPE_CHARS = 255
# Provider and model names, for the record only.
MAX_NAME_CHARS = 200
# Word timings come from the voice, which may say a written word as several ("101" as "one hundred and one"): at
# most two timings, and eight characters of timing text, per character of the narration. That holds for numbers
# read out in full ("1,111,111,111" is 13 characters, said in 84) and stops a caller sending 100,000 timings for a
# short text.
TIMINGS_PER_CHARACTER = 2
TIMING_CHARS_PER_CHARACTER = 8


def narration_limit(own_sound: bool, max_scenes: int) -> int:
    """Characters a scene's narration may have.

    A scene whose narration is the sound of its own video (an avatar video) speaks the whole script, which the
    gateway joins from up to all of its scenes: it may hold as much text as a whole assembly of ordinary scenes, so
    planning it never takes longer than planning the largest assembly would.
    """
    return MAX_NARRATION_CHARS * (max_scenes if own_sound else 1)


def check_start(start: pb.AssemblyStart) -> None:
    checked_text(start.render_id, "start.render_id", MAX_ID_CHARS, required=False)


def check_scene(start: pb.SceneStart, field: str, max_narration_chars: int) -> str:
    """Checks a scene's announcement (`field` is `scene[i]`); returns its narration, stripped."""
    scene = start.scene
    narration = checked_text(scene.narration, f"{field}.scene.narration", max_narration_chars, required=False)
    checked_text(scene.id, f"{field}.scene.id", MAX_ID_CHARS, required=False)
    checked_text(scene.title, f"{field}.scene.title", MAX_TITLE_CHARS, required=False)
    checked_text(scene.visual_prompt, f"{field}.scene.visual_prompt", MAX_PROMPT_CHARS, required=False)
    check_asset(start.visual, f"{field}.visual")
    check_asset(start.narration, f"{field}.narration")
    _check_timings(start.narration.timings, f"{field}.narration.timings", len(narration))
    return narration


def check_asset(metadata: types_pb2.AssetMetadata, field: str) -> None:
    checked_text(metadata.mime_type, f"{field}.mime_type", MAX_MIME_TYPE_CHARS, required=False)
    checked_text(metadata.provider, f"{field}.provider", MAX_NAME_CHARS, required=False)
    checked_text(metadata.model, f"{field}.model", MAX_NAME_CHARS, required=False)


def _check_timings(timings: list[types_pb2.TextTiming], field: str, narration_chars: int) -> None:
    most = TIMINGS_PER_CHARACTER * narration_chars
    if len(timings) > most:
        raise InvalidArgument(
            f"{field} has {len(timings)} entries; the limit is {TIMINGS_PER_CHARACTER} per character of the "
            f"narration ({most}); send one timing per spoken word or sentence"
        )
    budget = TIMING_CHARS_PER_CHARACTER * narration_chars
    total = 0
    for index, timing in enumerate(timings):
        # Sentence timings become caption text: the narration's rule applies (control characters refused).
        total += len(checked_text(timing.text, f"{field}[{index}].text", budget, required=False))
    if total > budget:
        raise InvalidArgument(
            f"{field} hold {total} characters of text; the limit is {TIMING_CHARS_PER_CHARACTER} per character of "
            f"the narration ({budget}); send the words as spoken"
        )
