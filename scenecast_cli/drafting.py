"""`scenecast draft`: what to draft from (a topic or a document file), and the drafted script as a script file."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from scenecast.v1 import render_service_pb2, script_service_pb2

from scenecast_cli.script import ScriptError

# Suffixes read as Markdown; any other file is plain text.
MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown", ".mkd")
# Suffixes that say "this is a file": such an argument that names no file is a typo, not a topic to pay a model for.
DOCUMENT_SUFFIXES = (*MARKDOWN_SUFFIXES, ".txt", ".text")


def source_fields(source: str) -> dict[str, object]:
    """The request's `topic` or `document` for the command's argument: a path that exists is a document (Markdown
    by its suffix, else plain text); anything else is a topic, except a missing file named like a document."""
    path = Path(source)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ScriptError(f"{path}: cannot read it as UTF-8 text ({error})") from error
        markdown = path.suffix.lower() in MARKDOWN_SUFFIXES
        document_format = (
            script_service_pb2.DOCUMENT_FORMAT_MARKDOWN if markdown else script_service_pb2.DOCUMENT_FORMAT_PLAIN
        )
        return {"document": script_service_pb2.Document(text=text, format=document_format)}
    if path.suffix.lower() in DOCUMENT_SUFFIXES:
        raise ScriptError(f"{path}: no such file (to draft from a topic, write the topic itself)")
    return {"topic": source}


def script_data(draft: script_service_pb2.DraftScriptResponse) -> dict[str, object]:
    """The drafted script as the script format writes it (what `scenecast render` and POST /v1/renders take)."""
    script: dict[str, object] = {"title": draft.title} if draft.title else {}
    script["scenes"] = [
        {"id": s.id, "title": s.title, "narration": s.narration, "visual": s.visual_prompt} for s in draft.scenes
    ]
    return script


def script_text(answer: render_service_pb2.RenderServiceDraftScriptResponse, json_file: bool) -> str:
    """The drafted script in the script format: YAML, with a comment saying where it came from, or JSON."""
    draft = answer.draft
    script = script_data(draft)
    if json_file:
        return json.dumps(script, indent=2, ensure_ascii=False) + "\n"
    header = (
        f"# Drafted by {draft.provider} ({draft.model}) for ${draft.cost_usd:.4f}, draft {answer.draft_id}. Edit it, "
        "then: scenecast render THIS_FILE -o video.mp4\n"
    )
    return header + yaml.safe_dump(script, sort_keys=False, allow_unicode=True, width=100)


def write_new(path: Path, text: str) -> None:
    """Creates `path` (never over an existing file or a link: a script may hold hand edits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ScriptError(f"{path} exists; choose another name or remove it (it may hold your edits)") from None
