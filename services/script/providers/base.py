"""What a script provider takes and returns, and the one check every draft passes: the script format's own model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import ValidationError

from services.common.errors import InvalidArgument, ScenecastError
from services.common.limits import MAX_PROMPT_CHARS, MAX_TITLE_CHARS
from services.common.providers import ProviderDescription
from services.common.script_format import ScriptModel
from services.common.text import checked_narration, checked_text

DocumentFormat = Literal["markdown", "plain"]


@dataclass(frozen=True)
class DraftJob:
    """One draft request, in plain values; either `topic` or `document` is set."""

    topic: str
    document: str
    # How `document` is written; "" with a topic.
    document_format: DocumentFormat | Literal[""]
    audience: str
    target_seconds: int
    tone: str
    language: str
    max_scenes: int
    # The call's deadline (a time.monotonic() value) and attempts for calls that were not answered (429).
    deadline: float | None = None
    attempts: int = 1


@dataclass(frozen=True)
class DraftedScene:
    id: str
    title: str
    narration: str
    visual: str


@dataclass(frozen=True)
class DraftCall:
    """One billed call to a vendor."""

    id: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class Draft:
    title: str
    scenes: tuple[DraftedScene, ...]
    model: str
    calls: tuple[DraftCall, ...] = ()

    @property
    def cost_usd(self) -> float:
        return sum(call.cost_usd for call in self.calls)


class UnusableDraft(Exception):
    """Billed calls that made no draft: `error` is the status the caller gets, `calls` what the vendor billed (the
    caller records them; a failure must not hide money spent)."""

    def __init__(self, error: ScenecastError, calls: tuple[DraftCall, ...]) -> None:
        super().__init__(str(error))
        self.error = error
        self.calls = calls


class ScriptProvider(Protocol):
    description: ClassVar[ProviderDescription]

    async def draft(self, job: DraftJob) -> Draft:
        """Drafts the script; raises services.common.errors domain errors on failure, wrapped in UnusableDraft
        once a call was billed."""
        ...


class InvalidDraft(ValueError):
    """A candidate script that is not one the script format and the render limits accept; the message says why."""


def checked_draft(candidate: Any, max_scenes: int, model: str, calls: tuple[DraftCall, ...] = ()) -> Draft:
    """`candidate` ({"title": ..., "scenes": [{"title", "narration", "visual"}, ...]}) as a Draft, with scene ids
    "scene-1", "scene-2"...; InvalidDraft otherwise.

    Checked by the script format's model (as a hand-written script is), then by the limits the gateway applies to a
    render (text lengths, words, control characters, the scene count), so a draft that passes renders as it is.
    """
    if not isinstance(candidate, dict) or not isinstance(candidate.get("scenes"), list):
        raise InvalidDraft("the answer must be a JSON object with a `scenes` array")
    scenes = [
        {"id": f"scene-{number}", **scene} if isinstance(scene, dict) else scene
        for number, scene in enumerate(candidate["scenes"], 1)
    ]
    try:
        script = ScriptModel.model_validate({**candidate, "scenes": scenes})
    except ValidationError as error:
        raise InvalidDraft(
            "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors())
        ) from None
    if len(script.scenes) > max_scenes:
        raise InvalidDraft(f"scenes has {len(script.scenes)} entries; at most {max_scenes} are allowed")
    try:
        title = checked_text(script.title, "title", MAX_TITLE_CHARS, required=False)
        drafted = tuple(
            _checked_scene(scene.id, scene.title, scene.narration, scene.visual, index)
            for index, scene in enumerate(script.scenes)
        )
    except InvalidArgument as error:
        raise InvalidDraft(str(error)) from None
    return Draft(title=title, scenes=drafted, model=model, calls=calls)


def _checked_scene(scene_id: str, title: str, narration: str, visual: str, index: int) -> DraftedScene:
    field = f"scenes[{index}]"
    checked_title = checked_text(title, f"{field}.title", MAX_TITLE_CHARS, required=False)
    checked_visual = checked_text(visual, f"{field}.visual", MAX_PROMPT_CHARS, required=False)
    if not checked_title and not checked_visual:
        raise InvalidArgument(f"{field}.visual and {field}.title are both empty; give at least one")
    return DraftedScene(scene_id, checked_title, checked_narration(narration, f"{field}.narration"), checked_visual)
