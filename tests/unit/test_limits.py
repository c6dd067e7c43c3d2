"""The contract's limits live in one module, match what the protos document, and are defined nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from services.common import limits

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos" / "scenecast" / "v1"
# Every field whose proto comment states a length, with the name of the constant that enforces it.
DOCUMENTED = {
    ("types.proto", "Scene", "id"): "MAX_ID_CHARS",
    ("render_service.proto", "RenderRequest", "render_id"): "MAX_ID_CHARS",
    ("types.proto", "Scene", "narration"): "MAX_NARRATION_CHARS",
    ("audio_service.proto", "SynthesizeSpeechRequest", "text"): "MAX_NARRATION_CHARS",
    ("types.proto", "Scene", "visual_prompt"): "MAX_PROMPT_CHARS",
    ("types.proto", "Scene", "title"): "MAX_TITLE_CHARS",
    ("render_service.proto", "RenderRequest", "title"): "MAX_TITLE_CHARS",
    ("types.proto", "Card", "title"): "MAX_CARD_TITLE_CHARS",
    ("types.proto", "Card", "subtitle"): "MAX_CARD_SUBTITLE_CHARS",
    ("script_service.proto", "DraftScriptRequest", "topic"): "MAX_TOPIC_CHARS",
    ("script_service.proto", "Document", "text"): "MAX_DOCUMENT_CHARS",
    ("script_service.proto", "DraftScriptRequest", "audience"): "MAX_DRAFT_OPTION_CHARS",
    ("script_service.proto", "DraftScriptRequest", "tone"): "MAX_DRAFT_OPTION_CHARS",
    ("script_service.proto", "DraftScriptRequest", "language"): "MAX_DRAFT_OPTION_CHARS",
    ("script_service.proto", "DraftScriptRequest", "target_seconds"): "MAX_TARGET_SECONDS",
}
# Limits the protos do not state yet (voice names, avatar settings, the word rule): checked by the services all the
# same. Named here so that a new limit must either be documented in the contract or added to this list on purpose.
UNDOCUMENTED = {"MAX_VOICE_CHARS", "MAX_AVATAR_SETTING_CHARS", "MAX_WORD_CHARS"}
# "at most 4000 characters", "1-64 characters" or "0-3600 seconds".
_STATED = re.compile(r"(?:at most |\d+-)(\d+) (?:characters|seconds)", re.IGNORECASE)
# Where the code that could redefine a limit lives.
CODE_FOLDERS = ("services", "gateway", "scenecast_cli", "bench", "tools")


def _limit_names() -> set[str]:
    return {name for name in vars(limits) if name.startswith("MAX_")}


def _field_comment(proto: str, message: str, field: str) -> str:
    """The `//` lines right above `field` in `message` of `proto`, joined."""
    lines = (PROTOS / proto).read_text().splitlines()
    start = lines.index(f"message {message} {{")
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    declaration = re.compile(rf"\s*\w+ {field} = \d+;")
    at = next(i for i in range(start, end) if declaration.fullmatch(lines[i]))
    comment: list[str] = []
    while lines[at - 1].strip().startswith("//"):
        at -= 1
        comment.insert(0, lines[at].strip().removeprefix("//").strip())
    return " ".join(comment)


def test_each_limit_is_the_number_the_contract_documents() -> None:
    for (proto, message, field), name in DOCUMENTED.items():
        comment = _field_comment(proto, message, field)
        stated = _STATED.search(comment)
        assert stated is not None, f"{proto} {message}.{field} states no length: {comment!r}"
        value = getattr(limits, name)
        assert int(stated.group(1)) == value, f"{proto} {message}.{field}: {comment!r} but {name} is {value}"


def test_every_limit_is_documented_or_listed_as_not_yet() -> None:
    assert _limit_names() == set(DOCUMENTED.values()) | UNDOCUMENTED


def test_no_module_defines_a_contract_limit_of_its_own() -> None:
    names = _limit_names()
    own = ROOT / "services" / "common" / "limits.py"
    found = []
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == own:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id.lstrip("_") in names:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {target.id}")
    assert found == [], "import these from services.common.limits instead"
