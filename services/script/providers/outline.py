"""Offline drafts: a Markdown or plain-text document's own words become scenes, cut to the script format's limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.token import Token

from services.common.errors import InvalidArgument
from services.common.limits import MAX_NARRATION_CHARS, MAX_TITLE_CHARS, MAX_WORD_CHARS
from services.common.providers import NoSettings, Price, Provider, ProviderDescription
from services.common.text import ends_sentence, split_sentences
from services.script.providers.base import Draft, DraftJob, InvalidDraft, checked_draft

# Narration per scene, in characters: about 40 s at the usual 15 characters a second. Longer sections are split at
# paragraphs, then sentences, then words: a picture held longer than that loses the viewer.
SCENE_CHARS = 600
# A section shorter than this (about 4 s spoken) joins the scene before it rather than flash by as a scene of its own.
TINY_CHARS = 60
# Longest visual description taken from the text: image models follow a sentence; the rest of a long one is noise.
VISUAL_CHARS = 300
# Blank lines separate the paragraphs of plain text (this is not Markdown, which is parsed, never matched).
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass
class _Section:
    """A heading and what follows it up to the next heading."""

    title: str = ""
    paragraphs: list[str] = field(default_factory=list)
    # The alt text of the section's first image: the author's own description of the picture that belongs there.
    image_alt: str = ""


@dataclass(frozen=True)
class _Scene:
    title: str
    narration: str
    visual: str


class OutlineProvider(Provider[NoSettings, DraftJob]):
    description = ProviderDescription(
        name="outline",
        description="Offline: a Markdown or plain-text document's headings, paragraphs and image alt texts as scenes",
        offline=True,
    )

    @classmethod
    def prices(cls, settings: NoSettings) -> tuple[Price, ...]:
        return (Price("outline", "draft", 0.0, "offline, from the document's own text"),)

    @classmethod
    def estimate_usd(cls, settings: NoSettings, job: DraftJob) -> float:
        return 0.0

    async def draft(self, job: DraftJob) -> Draft:
        if job.topic:
            raise InvalidArgument(
                "topic: the outline provider drafts from a document, not a topic; send a document, or choose a "
                "language model provider (provider: openai)"
            )
        sections = (
            _markdown_sections(job.document) if job.document_format == "markdown" else _plain_sections(job.document)
        )
        sections = [section for section in sections if section.paragraphs]
        if not sections:
            raise InvalidArgument(
                "document.text has no paragraph to narrate (headings, code blocks and images alone make no scene); "
                "add the text to be spoken"
            )
        scenes = _within_scene_count(_scenes(sections), job.max_scenes)
        title = next((section.title for section in sections if section.title), "")
        candidate = {
            "title": _shortened(title, MAX_TITLE_CHARS),
            "scenes": [{"title": s.title, "narration": s.narration, "visual": s.visual} for s in scenes],
        }
        try:
            return checked_draft(candidate, job.max_scenes, "outline")
        except InvalidDraft as error:  # the document's own text broke a rule (a control character, say)
            raise InvalidArgument(f"document.text: {error}; edit the document") from None


def _markdown_sections(text: str) -> list[_Section]:
    """Sections from CommonMark: every heading starts one; paragraphs and list items are its text; code blocks and
    HTML are left out (not speakable)."""
    sections = [_Section()]
    in_heading = False
    for token in MarkdownIt("commonmark").parse(text):
        if token.type == "heading_open":
            in_heading = True
        elif token.type == "heading_close":
            in_heading = False
        elif token.type == "inline":
            words, alts = _inline(token.children or [])
            if in_heading:
                sections.append(_Section(title=_shortened(words, MAX_TITLE_CHARS)))
            elif words:
                sections[-1].paragraphs.append(words)
            if alts and not sections[-1].image_alt:
                sections[-1].image_alt = alts[0]
    return sections


def _inline(children: list[Token]) -> tuple[str, list[str]]:
    """The spoken words of a paragraph or heading (link text kept, URLs, images and HTML left out), and the alt
    texts of its images."""
    words: list[str] = []
    alts: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            words.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            words.append(" ")
        elif child.type == "image" and child.content.strip():
            alts.append(_clean(child.content))
    return _clean("".join(words)), alts


def _plain_sections(text: str) -> list[_Section]:
    """Plain text has no headings: one section, its paragraphs separated by blank lines."""
    return [_Section(paragraphs=[p for p in (_clean(part) for part in _BLANK_LINE.split(text)) if p])]


def _clean(text: str) -> str:
    """One line of words; a word too long to be spoken or captioned (a pasted URL, a hash) is dropped."""
    return " ".join(word for word in text.split() if len(word) <= MAX_WORD_CHARS)


def _scenes(sections: list[_Section]) -> list[_Scene]:
    """A scene per SCENE_CHARS of each section's text; a tiny section joins the scene before it when it fits."""
    scenes: list[_Scene] = []
    for section in sections:
        # A paragraph or list item without a final stop is read as its own sentence, not run into the next one.
        sentences = [p if ends_sentence(p) else f"{p}." for p in section.paragraphs]
        chunks = _packed(_pieces(sentences, SCENE_CHARS), SCENE_CHARS)
        if scenes and len(chunks) == 1 and len(chunks[0]) < TINY_CHARS:
            previous = scenes[-1]
            if len(previous.narration) + 1 + len(chunks[0]) <= SCENE_CHARS:
                scenes[-1] = _Scene(previous.title, f"{previous.narration} {chunks[0]}", previous.visual)
                continue
        scenes.extend(_Scene(section.title, chunk, _visual(section, chunk)) for chunk in chunks)
    return scenes


def _visual(section: _Section, narration: str) -> str:
    """What the picture shows: the author's alt text when the section has an image. Else the heading and the first
    sentence: offline there is no model to read the text, and a section's first sentence usually states its
    subject, which the heading names; image models take such a sentence well, and a reader can see where it came
    from."""
    if section.image_alt:
        return _shortened(section.image_alt, VISUAL_CHARS)
    first = split_sentences(narration)[0]
    return _shortened(f"{section.title}: {first}" if section.title else first, VISUAL_CHARS)


def _pieces(paragraphs: list[str], limit: int) -> list[str]:
    """The text in pieces no longer than `limit`: whole paragraphs, else their sentences, else runs of words."""
    pieces: list[str] = []
    for paragraph in paragraphs:
        if len(paragraph) <= limit:
            pieces.append(paragraph)
            continue
        for sentence in split_sentences(paragraph):
            pieces.extend([sentence] if len(sentence) <= limit else _packed(sentence.split(), limit))
    return pieces


def _packed(pieces: list[str], limit: int) -> list[str]:
    """Consecutive pieces joined by spaces into as few texts of at most `limit` characters as order allows (greedy
    packing is optimal when the order is kept); each piece is at most `limit` long."""
    packed: list[str] = []
    for piece in pieces:
        if packed and len(packed[-1]) + 1 + len(piece) <= limit:
            packed[-1] = f"{packed[-1]} {piece}"
        else:
            packed.append(piece)
    return packed


def _within_scene_count(scenes: list[_Scene], max_scenes: int) -> list[_Scene]:
    """Joins neighbouring scenes (each keeps its first part's title and visual) until there are at most
    `max_scenes`, with scenes as short as that allows; INVALID_ARGUMENT when even the longest scenes are too many."""
    if len(scenes) <= max_scenes:
        return scenes
    if len(_joined(scenes, MAX_NARRATION_CHARS)) > max_scenes:
        raise InvalidArgument(
            f"document.text needs more than {max_scenes} scenes (the most a script may have) even at "
            f"{MAX_NARRATION_CHARS} characters of narration each; shorten the document or split it in parts"
        )
    low, high = SCENE_CHARS, MAX_NARRATION_CHARS  # the shortest limit that fits, by bisection
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if len(_joined(scenes, middle)) <= max_scenes else (middle + 1, high)
    return _joined(scenes, low)


def _joined(scenes: list[_Scene], limit: int) -> list[_Scene]:
    joined: list[_Scene] = []
    for scene in scenes:
        if joined and len(joined[-1].narration) + 1 + len(scene.narration) <= limit:
            first = joined[-1]
            joined[-1] = _Scene(first.title, f"{first.narration} {scene.narration}", first.visual)
        else:
            joined.append(scene)
    return joined


def _shortened(text: str, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"
