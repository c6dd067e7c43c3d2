"""Scene timing, caption cues and caption files."""

import threading
from itertools import pairwise
from pathlib import Path

import pysubs2
import pytest

from services.assembler.caption_layout import CaptionStyle, caption_geometry
from services.assembler.captions import ass_text, srt_document, write_scene_ass
from services.assembler.plan import PlanningStopped, plan_scene
from services.assembler.word_timing import SpokenText, spread_sentences, time_words
from services.common.output import OutputFormat
from services.common.providers import Quality

LANDSCAPE = OutputFormat(1280, 720, 30, True, Quality.STANDARD, "16:9")
PORTRAIT = OutputFormat(720, 1280, 30, True, Quality.STANDARD, "9:16")


def test_scene_length_is_lead_narration_and_tail_rounded_up_to_frames() -> None:
    plan = plan_scene(0, 2010, [SpokenText("Hi there.", 0, 2010)], LANDSCAPE, lead_ms=300, tail_ms=500)
    assert plan.frames == 85  # 2.81 s at 30 fps is 84.3 frames
    assert plan.duration_ms == 2833
    assert plan.cues[0].start_ms == 300 and plan.cues[0].end_ms == 2310


def test_no_cues_when_captions_are_off() -> None:
    output = OutputFormat(1280, 720, 30, False, Quality.STANDARD, "16:9")
    assert plan_scene(0, 1000, [SpokenText("Hi.", 0, 1000)], output, 300, 500).cues == ()


def test_long_sentence_is_cut_into_cues_that_share_its_time_and_never_lose_a_word() -> None:
    sentence = SpokenText(" ".join(f"word{i}" for i in range(40)), 1000, 9000)
    cues = plan_scene(0, 9000, [sentence], LANDSCAPE, lead_ms=0, tail_ms=0).cues
    # About 6400 pixels of text: three cues of two 1012-pixel lines cannot hold it, four can.
    assert len(cues) == 4
    assert all(len(cue.lines) <= 2 for cue in cues)
    assert " ".join(cue.text for cue in cues) == sentence.text
    assert cues[0].start_ms == 1000 and cues[-1].end_ms == 9000
    assert all(a.end_ms == b.start_ms for a, b in pairwise(cues))
    # Balanced: 40 near-equal words in four cues of 9 to 11, not three full cues and a short one.
    counts = [len(cue.words) for cue in cues]
    assert max(counts) - min(counts) <= 2


def test_portrait_captions_sit_higher_and_the_line_is_narrower() -> None:
    landscape, portrait = caption_geometry(LANDSCAPE), caption_geometry(PORTRAIT)
    assert portrait.bottom_margin / PORTRAIT.height > landscape.bottom_margin / LANDSCAPE.height
    assert portrait.line_width < landscape.line_width <= LANDSCAPE.width * 0.8


def test_ass_text_keeps_braces_and_backslashes_as_text() -> None:
    escaped = ass_text(r"a {\b1} b \N c")
    assert "{" not in escaped.replace("\\{", "")
    assert "\\N" not in escaped and "\\b1" not in escaped
    assert escaped.replace("\u2060", "").replace("\\{", "{").replace("\\}", "}") == r"a {\b1} b \N c"


def test_scene_ass_uses_output_pixels_and_its_own_line_breaks(tmp_path: Path) -> None:
    plan = plan_scene(0, 1000, [SpokenText("Stay safe.", 0, 1000)], PORTRAIT, 300, 500)
    path = tmp_path / "c.ass"
    write_scene_ass(plan, PORTRAIT, CaptionStyle(), path)
    subs = pysubs2.load(str(path))
    assert subs.info["PlayResX"] == "720" and subs.info["PlayResY"] == "1280" and subs.info["WrapStyle"] == "2"
    assert [event.text for event in subs] == ["Stay safe."]
    style = subs.styles[subs[0].style]
    assert (style.fontname, style.bold, style.fontsize) == ("DejaVu Sans", True, round(720 * 0.055))


def test_srt_places_cues_at_the_given_scene_offsets(tmp_path: Path) -> None:
    first = plan_scene(0, 1000, [SpokenText("One.", 0, 1000)], LANDSCAPE, 300, 500)
    second = plan_scene(1, 1000, [SpokenText("Two.", 0, 1000)], LANDSCAPE, 300, 500)
    path = tmp_path / "c.srt"
    # A cross-fade overlaps the scenes: the second starts 400 ms before the first one ends.
    path.write_text(srt_document([first, second], [0, first.duration_ms - 400]))
    subs = pysubs2.load(str(path))
    assert [(e.plaintext, e.start) for e in subs] == [("One.", 300), ("Two.", first.duration_ms - 400 + 300)]


def test_word_timings_become_cues_with_the_written_punctuation() -> None:
    words = [
        SpokenText(w, i * 400, i * 400 + 300)
        for i, w in enumerate(["Wet", "floors", "cause", "slips", "Look", "for", "12", "signs"])
    ]
    text = "Wet floors cause slips. Look for twelve signs!"
    cues = plan_scene(0, 3200, words, LANDSCAPE, lead_ms=300, tail_ms=0, narration=text).cues
    assert [c.text for c in cues] == ["Wet floors cause slips.", "Look for twelve signs!"]
    assert (cues[0].start_ms, cues[0].end_ms) == (300, 1800)
    # "twelve" was spoken as "12": it takes the time between its matched neighbours "for" and "signs".
    assert [(w.text, w.start_ms, w.end_ms) for w in time_words(text, words)][6] == ("twelve", 2300, 2800)
    assert (cues[1].start_ms, cues[1].end_ms) == (1900, 3400)


def test_speech_without_timings_is_shared_between_sentences_by_syllables() -> None:
    spans = spread_sentences("Stop. Look around you now.", 2400)
    # One syllable, then five (look, a-round, you, now).
    assert [(s.text, s.start_ms, s.end_ms) for s in spans] == [("Stop.", 0, 400), ("Look around you now.", 400, 2400)]


class _StopAfter(threading.Event):
    """A stop event that its own checks set after `steps` checks, as a call ending mid-plan would."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.checks = 0
        self._steps = steps

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks == self._steps:
            self.set()
        return super().is_set()


def test_planning_stops_at_its_next_step_once_the_call_has_ended() -> None:
    # One 100,000-letter word: hundreds of pieces and cues to measure (a whole plan checks thousands of times).
    text = "x" * 100_000
    stop = _StopAfter(steps=50)
    with pytest.raises(PlanningStopped):
        plan_scene(0, 600_000, spread_sentences(text, 600_000), LANDSCAPE, 300, 500, stop=stop)
    assert stop.checks == 50
    already = threading.Event()
    already.set()
    with pytest.raises(PlanningStopped):
        plan_scene(0, 1000, [SpokenText("Hi.", 0, 1000)], LANDSCAPE, 300, 500, stop=already)


def test_a_word_of_100000_letters_is_cut_into_line_wide_pieces() -> None:
    """Measuring the whole rest of the word for each piece and cue made this take minutes; now about a second."""
    cues = plan_scene(0, 600_000, spread_sentences("x" * 100_000, 600_000), LANDSCAPE, 300, 500).cues
    assert "".join(cue.text for cue in cues) == "x" * 100_000
    assert all(len(cue.lines) <= 2 for cue in cues)
