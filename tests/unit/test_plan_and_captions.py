"""Scene timing, caption cues and caption files."""

from itertools import pairwise
from pathlib import Path

import pysubs2

from services.assembler.captions import ass_text, write_scene_ass, write_srt
from services.assembler.plan import SpokenText, caption_line_chars, plan_scene, split_cue
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


def test_long_sentence_is_cut_into_balanced_cues_that_share_its_time() -> None:
    sentence = SpokenText(" ".join(f"word{i}" for i in range(40)), 1000, 9000)
    cues = split_cue(sentence, max_chars=100)
    assert len(cues) == 3
    assert all(len(cue.text) <= 100 for cue in cues)
    assert " ".join(cue.text for cue in cues) == sentence.text
    assert cues[0].start_ms == 1000 and cues[-1].end_ms == 9000
    assert all(a.end_ms == b.start_ms for a, b in pairwise(cues))
    lengths = [len(cue.text) for cue in cues]
    assert max(lengths) - min(lengths) < 20


def test_portrait_lines_hold_fewer_characters() -> None:
    assert caption_line_chars(PORTRAIT) < caption_line_chars(LANDSCAPE)


def test_ass_text_keeps_braces_and_backslashes_as_text() -> None:
    escaped = ass_text(r"a {\b1} b \N c")
    assert "{" not in escaped.replace("\\{", "")
    assert "\\N" not in escaped and "\\b1" not in escaped
    assert escaped.replace("\u2060", "").replace("\\{", "{").replace("\\}", "}") == r"a {\b1} b \N c"


def test_scene_ass_uses_output_pixels(tmp_path: Path) -> None:
    plan = plan_scene(0, 1000, [SpokenText("Stay safe.", 0, 1000)], PORTRAIT, 300, 500)
    path = tmp_path / "c.ass"
    write_scene_ass(plan, PORTRAIT, path)
    subs = pysubs2.load(str(path))
    assert subs.info["PlayResX"] == "720" and subs.info["PlayResY"] == "1280"
    assert [event.text for event in subs] == ["Stay safe."]
    assert subs.styles["Default"].fontsize == round(720 * 0.055)


def test_srt_places_cues_on_the_video_timeline(tmp_path: Path) -> None:
    first = plan_scene(0, 1000, [SpokenText("One.", 0, 1000)], LANDSCAPE, 300, 500)
    second = plan_scene(1, 1000, [SpokenText("Two.", 0, 1000)], LANDSCAPE, 300, 500)
    path = tmp_path / "c.srt"
    write_srt([first, second], path)
    subs = pysubs2.load(str(path))
    assert [(e.plaintext, e.start) for e in subs] == [("One.", 300), ("Two.", first.duration_ms + 300)]


def test_word_timings_become_cues_with_the_written_punctuation() -> None:
    from services.assembler.plan import cues_from_words

    words = [
        SpokenText(w, i * 400, i * 400 + 300)
        for i, w in enumerate(["Wet", "floors", "cause", "slips", "Look", "for", "12", "signs"])
    ]
    cues = cues_from_words("Wet floors cause slips. Look for twelve signs!", words, max_chars=40)
    assert [c.text for c in cues] == ["Wet floors cause slips.", "Look for twelve signs!"]
    assert (cues[0].start_ms, cues[0].end_ms) == (0, 1500)
    # "twelve" was spoken as "12": it takes that word's time from its matched neighbours.
    assert (cues[1].start_ms, cues[1].end_ms) == (1600, 3100)


def test_word_cues_break_at_the_length_limit() -> None:
    from services.assembler.plan import cues_from_words

    text = " ".join(f"w{i}" for i in range(30))
    words = [SpokenText(f"w{i}", i * 100, i * 100 + 80) for i in range(30)]
    cues = cues_from_words(text, words, max_chars=20)
    assert all(len(c.text) <= 20 for c in cues)
    assert " ".join(c.text for c in cues) == text
    assert all(a.end_ms <= b.start_ms for a, b in pairwise(cues))


def test_speech_without_timings_is_shared_between_sentences_by_length() -> None:
    from services.assembler.plan import spread_sentences

    spans = spread_sentences("Stop. Look around you now.", 2600)
    assert [(s.text, s.start_ms, s.end_ms) for s in spans] == [("Stop.", 0, 520), ("Look around you now.", 520, 2600)]
