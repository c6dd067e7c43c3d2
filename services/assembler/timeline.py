"""The video's timeline: title card, scenes and end card in showing order, each planned and described for its encode."""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

from services.assembler import captions, soundtrack
from services.assembler.caption_layout import CaptionStyle
from services.assembler.cards import render_card
from services.assembler.ffmpeg import Fit, SegmentJob
from services.assembler.plan import ScenePlan, caption_runs, plan_scene
from services.assembler.word_timing import SpokenText, spread_sentences
from services.common.errors import InvalidArgument
from services.common.finishing import CardText, FinishingOptions
from services.common.media import probe
from services.common.output import OutputFormat


@dataclass
class Piece:
    """One stretch of the video's timeline, a scene or a card, and its encoded parts."""

    plan: ScenePlan
    visual: Path
    is_clip: bool
    # The narration and the part of it kept (milliseconds), or None for a silent card.
    narration: Path | None = None
    kept_ms: tuple[int, int] = (0, 0)
    job: SegmentJob | None = None


@dataclass(frozen=True)
class SceneAssets:
    """A scene's received assets and what was said about them, as plain values."""

    index: int
    visual: Path
    is_clip: bool
    narration: Path
    # The narration as written, and the voice's timings of it (relative to the narration audio).
    text: str
    timings: tuple[SpokenText, ...]
    # The timings are words (not sentences): the written words then take their times.
    word_timings: bool
    # The narration is the sound of the video itself (an avatar video): trimming it would put the voice out of sync
    # with the lips.
    own_sound: bool


@dataclass
class Timeline:
    """The pieces of one video and how they join; its files (cards, caption files) live under `folder`."""

    folder: Path
    output: OutputFormat
    scene_count: int
    title: str
    lead_ms: int
    tail_ms: int
    finishing: FinishingOptions
    # Frames of each cross-fade (0 unless the transition is a cross-fade) and of each fade through black.
    crossfade_frames: int
    fade_frames: int
    # Scenes by index, added as each is planned.
    scenes: dict[int, Piece] = field(default_factory=dict)
    cards: dict[str, Piece] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        folder: Path,
        output: OutputFormat,
        scene_count: int,
        title: str,
        lead_ms: int,
        tail_ms: int,
        finishing: FinishingOptions,
        default_transition_ms: int,
    ) -> Timeline:
        """A timeline with its cards drawn; the scenes are added as they are planned."""
        transition_ms = finishing.transition_ms or default_transition_ms
        crossfade_frames = 0
        if finishing.transition == "crossfade":
            # Capped by the silence around the narrations, so two voices never overlap (an avatar video has none).
            crossfade_frames = math.floor(min(transition_ms, lead_ms + tail_ms) * output.fps / 1000)
        timeline = cls(
            folder=folder,
            output=output,
            scene_count=scene_count,
            title=title,
            lead_ms=lead_ms,
            tail_ms=tail_ms,
            finishing=finishing,
            crossfade_frames=crossfade_frames,
            fade_frames=0 if finishing.transition == "cut" else round(transition_ms * output.fps / 1000),
        )
        for name, card in (("title", finishing.title_card), ("end", finishing.end_card)):
            if card is not None:
                timeline.cards[name] = timeline._card(name, card)
        return timeline

    @property
    def style(self) -> CaptionStyle:
        return CaptionStyle(
            highlight=self.finishing.highlight_words,
            highlight_color=self.finishing.highlight_color,
            box=self.finishing.caption_box,
        )

    def pieces(self) -> list[Piece]:
        """The pieces in showing order: title card, scenes, end card."""
        scenes = [self.scenes.get(i) for i in range(self.scene_count)]
        pieces = [self.cards.get("title"), *scenes, self.cards.get("end")]
        return [piece for piece in pieces if piece is not None]

    def card_positions(self) -> list[tuple[Piece, int]]:
        """The cards and their positions among the pieces."""
        last = self.piece_count - 1
        return [(self.cards[name], position) for name, position in (("title", 0), ("end", last)) if name in self.cards]

    def position(self, scene_index: int) -> int:
        return scene_index + ("title" in self.cards)

    @property
    def piece_count(self) -> int:
        return self.scene_count + len(self.cards)

    def scene_starts(self) -> tuple[list[ScenePlan], list[int]]:
        """Each scene's plan and its start on the video's timeline in milliseconds (cards and cross-fades counted)."""
        starts: dict[int, int] = {}
        frame = 0
        for piece in self.pieces():
            starts[id(piece)] = frame
            frame += piece.plan.frames - self.crossfade_frames
        pieces = [self.scenes[i] for i in range(self.scene_count) if i in self.scenes]
        offsets = [round(starts[id(piece)] * 1000 / self.output.fps) for piece in pieces]
        return [piece.plan for piece in pieces], offsets

    @property
    def duration_ms(self) -> int:
        pieces = self.pieces()
        frames = sum(piece.plan.frames for piece in pieces) - (len(pieces) - 1) * self.crossfade_frames
        return round(frames * 1000 / self.output.fps)

    def plan_scene(self, scene: SceneAssets, stop: threading.Event) -> Piece:
        """Checks both assets decode, then fixes the scene's length from the narration actually kept.

        Runs in a worker thread: probing decodes the narration (and the silence trim reads it again).
        """
        field_name = f"scene[{scene.index}]"
        visual = probe(scene.visual, f"{field_name}.visual")
        narration = probe(scene.narration, f"{field_name}.narration")
        if not visual.has_video:
            raise InvalidArgument(f"{field_name}.visual has no picture")
        if not narration.has_audio or narration.duration_ms <= 0:
            raise InvalidArgument(f"{field_name}.narration has no audio")
        kept = (0, narration.duration_ms)
        pad = self.finishing.silence_pad_ms
        if pad is not None and not scene.own_sound:
            kept = soundtrack.kept_span(soundtrack.speech_bounds(scene.narration), narration.duration_ms, pad)
            if kept[1] <= kept[0]:
                raise InvalidArgument(f"{field_name}.narration is silent; check the speech provider's output")
        kept_ms = kept[1] - kept[0]
        spoken = [
            SpokenText(t.text, max(0, t.start_ms - kept[0]), min(kept_ms, max(0, t.end_ms - kept[0])))
            for t in scene.timings
        ] or spread_sentences(scene.text, kept_ms)
        plan = plan_scene(
            scene.index,
            kept_ms,
            spoken,
            self.output,
            self.lead_ms,
            self.tail_ms,
            narration=scene.text if scene.word_timings else "",
            stop=stop,
        )
        # A scene holds its cross-fades in and out and one frame of its own.
        plan = _at_least_frames(plan, 2 * self.crossfade_frames + 1)
        return Piece(plan, scene.visual, scene.is_clip, narration=scene.narration, kept_ms=kept)

    def segment_job(self, piece: Piece, position: int) -> SegmentJob:
        """Writes the piece's caption files and describes its encode (fades, framing, cross-fade parts)."""
        first, last = position == 0, position == self.piece_count - 1
        crossfade = self.crossfade_frames
        if crossfade:
            # Cross-fades between pieces; the video still fades in from black and out to black at its ends.
            fade_in = min(self.fade_frames, piece.plan.frames // 3) if first else 0
            fade_out = min(self.fade_frames, piece.plan.frames // 3) if last else 0
        else:
            fade_in = fade_out = min(self.fade_frames, piece.plan.frames // 3)
        name = f"piece-{position}"
        style = self.style
        clip_captions = None
        still_runs: list[tuple[int, Path | None]] = []
        if piece.is_clip and piece.plan.cues:
            clip_captions = self.folder / f"{name}.ass"
            captions.write_scene_ass(piece.plan, self.output, style, clip_captions)
        elif not piece.is_clip:
            for run, (frames, shown) in enumerate(caption_runs(piece.plan, style)):
                run_path = None
                if shown is not None:
                    run_path = self.folder / f"{name}-caption-{run}.ass"
                    captions.write_still_caption(shown, self.output, style, run_path)
                still_runs.append((frames, run_path))
        piece.job = SegmentJob(
            piece.visual,
            piece.is_clip,
            piece.plan,
            self.folder / f"{name}.mp4",
            captions=clip_captions,
            still_runs=tuple(still_runs),
            fade_in_frames=fade_in,
            fade_out_frames=fade_out,
            fit=Fit(self.finishing.fit),
            pad_color=self.finishing.pad_color,
            head_frames=0 if first else crossfade,
            tail_frames=0 if last else crossfade,
        )
        return piece.job

    def _card(self, name: str, card: CardText) -> Piece:
        png = self.folder / f"card-{name}.png"
        render_card(card.title, card.subtitle, self.output, png, background=self.finishing.pad_color)
        frames = max(math.ceil(card.duration_ms * self.output.fps / 1000), 2 * self.crossfade_frames + 1)
        plan = ScenePlan(index=-1, frames=frames, fps=self.output.fps, lead_ms=0, cues=())
        return Piece(plan=plan, visual=png, is_clip=False)


def _at_least_frames(plan: ScenePlan, minimum: int) -> ScenePlan:
    return plan if plan.frames >= minimum else dataclasses.replace(plan, frames=minimum)
