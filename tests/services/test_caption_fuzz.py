"""Property tests of caption text: escaping never turns text into markup, and cue planning keeps every word in order.

The fast properties run the pure functions on arbitrary text; the slow ones send a few texts through piper and the
real assembler and read the MP4's subtitle track back.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import av
import grpc
import pysubs2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import (
    assembler_service_pb2_grpc,
    audio_service_pb2,
    audio_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    types_pb2,
)

from services.assembler.caption_layout import CaptionStyle, Cue, caption_geometry, text_width
from services.assembler.captions import ass_text, srt_document, vtt_document, write_scene_ass
from services.assembler.plan import ScenePlan, plan_scene
from services.assembler.word_timing import SpokenText, join_words, spread_words
from services.common.chunks import iter_chunks
from services.common.fonts import libass_em_per_size
from services.common.output import OutputFormat
from services.common.providers import Quality
from services.common.text import split_sentences
from tests.probe import probe_mp4
from tests.services.test_media_services import collect

WORD_JOINER = "\u2060"
# Text that means something to libass, pysubs2, FFmpeg's SRT reader or the mov_text encoder.
MARKUP = [
    "{",
    "}",
    "\\",
    "\\N",
    "\\n",
    "\\h",
    "\\{",
    "{\\b1}",
    "{\\b0}",
    "{\\pos(1,2)}",
    "{\\an8}",
    "{c:red}",
    "{y:i}",
    "{}",
    "<b>",
    "</b>",
    "<i>",
    "<br>",
    "<font color=red>",
    "< u >",
    "<<",
    "&amp;",
    "&nbsp;",
    "%",
    "%s",
    ":",
    ",",
    "'",
    '"',
    "-->",
    "00:00:01,000",
    "00:00:05,000 --> 00:00:06,000",
    "1:2:3.4 --> 5:6:7.8",
    WORD_JOINER,
    "\u202e",
    "\ufeff",
    "\U0001f600",
    "C:\\new\\table",
]
# Unicode text without control characters (narration may not hold them) or surrogates (not valid UTF-8).
_PLAIN = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)
# Longer than a two-line cue of the narrowest test frame (68 characters), so it cannot be cut at a space.
_LONG_WORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=70, max_size=300)
_PIECE = st.one_of(_PLAIN, st.sampled_from(MARKUP), st.sampled_from([" ", "\t", "\n", ". ", "! ", "? "]), _LONG_WORD)
TEXT = st.lists(_PIECE, max_size=25).map("".join)
# What a caption may be handed: anything a client can send, line breaks and control characters included.
ANY_TEXT = st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",))), st.sampled_from(MARKUP))).map(
    "".join
)

OUTPUT = OutputFormat(640, 360, 25, True, Quality.DRAFT, "16:9")
NARROW = OutputFormat(144, 256, 25, True, Quality.DRAFT, "9:16")
FAST = settings(max_examples=150, deadline=None)


@dataclass(frozen=True)
class Syntax:
    """What a consumer of caption text reads as markup, and the escapes we write so that it reads text instead."""

    escapes: dict[str, str]
    markup: tuple[str, ...]

    def unescape(self, text: str) -> str:
        """Reads escaped text as the consumer would; fails on any markup the escaping left in."""
        out, index = [], 0
        while index < len(text):
            escape = next((e for e in self.escapes if text.startswith(e, index)), None)
            if escape is not None:
                out.append(self.escapes[escape])
                index += len(escape)
                continue
            opener = next((m for m in self.markup if text.startswith(m, index)), None)
            assert opener is None, f"unescaped {opener!r} at {index} in {text!r}"
            out.append(text[index])
            index += 1
        return "".join(out)


# libass: `\` starts an escape (`\N`, `\h`, `\{`...), `{` an override block.
ASS = Syntax({"\\" + WORD_JOINER: "\\", "\\{": "{", "\\}": "}"}, ("\\", "{", "}"))
# WebVTT's own escapes, the only ones in the sidecars: character references for `&`, `<` and `>`.
VTT = Syntax({"&amp;": "&", "&lt;": "<", "&gt;": ">"}, ("&", "<", ">"))


_SRT_TIME = r"(\d+):(\d\d):(\d\d),(\d\d\d)"
_SRT_BLOCK = re.compile(rf"(\d+)\n{_SRT_TIME} --> {_SRT_TIME}\n(.*)")


def read_srt(path: Path) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) of each block, read strictly: number, timing line, one line of text.

    Not pysubs2.load: it takes any line holding two times (such as "0:0:0.0 0:0:0.0") for a timing line, which
    FFmpeg, the only reader of these files, does not.
    """

    def ms(h: str, m: str, s: str, milli: str) -> int:
        return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(milli)

    blocks = path.read_text(encoding="utf-8").split("\n\n")
    assert blocks[-1] == ""
    events = []
    for number, block in enumerate(blocks[:-1], 1):
        match = _SRT_BLOCK.fullmatch(block)
        assert match and int(match[1]) == number, block
        events.append((ms(*match.groups()[1:5]), ms(*match.groups()[5:9]), match[10]))
    return events


def _lines_as_spaces(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


@FAST
@given(ANY_TEXT)
def test_ass_text_is_never_markup_and_unescapes_to_the_input(text: str) -> None:
    escaped = ass_text(text)
    assert "\n" not in escaped and "\r" not in escaped
    assert ASS.unescape(escaped) == _lines_as_spaces(text)


def _written(cues: tuple[Cue, ...]) -> str:
    """The cues' words as written, one space between words: what the narration reads with its spacing tidied."""
    return join_words([word for cue in cues for word in cue.words])


def _tidy(texts: list[str]) -> str:
    return " ".join(" ".join(texts).split())


def _assert_lines_fit(plan: ScenePlan, output: OutputFormat) -> None:
    """Every line of more than one word is no wider than the title-safe line (a lone word has nowhere to break)."""
    geometry = caption_geometry(output)
    for cue in plan.cues:
        em = geometry.font_size * libass_em_per_size(cue.face)
        for line in cue.lines:
            assert len(line) == 1 or text_width(cue.face, em, join_words(line)) <= geometry.line_width, line


def _sentence_plan(text: str, output: OutputFormat, index: int = 0) -> ScenePlan:
    sentences = split_sentences(text)
    spoken = [SpokenText(sentence, i * 1000, i * 1000 + 900) for i, sentence in enumerate(sentences)]
    return plan_scene(index, max(1, len(sentences)) * 1000, spoken, output, lead_ms=300, tail_ms=500)


@FAST
@given(TEXT, st.sampled_from([OUTPUT, NARROW]))
@example(".\u3400", OUTPUT)  # found by this test: a Latin full stop, then CJK text without a space
def test_caption_files_read_back_as_the_cue_text(text: str, output: OutputFormat) -> None:
    plan = _sentence_plan(text, output)
    # A cue never crosses a sentence end, so each sentence is shown from its own first word: joined here one space
    # apart, even where the text runs one into the next (".世" and "。世" end a sentence with no space after).
    assert _written(plan.cues) == _tidy(split_sentences(text))
    _assert_lines_fit(plan, output)
    second = _sentence_plan("Next scene.", output, index=1)
    with tempfile.TemporaryDirectory() as folder:
        ass_path, srt_path = Path(folder) / "scene.ass", Path(folder) / "all.srt"
        write_scene_ass(plan, output, CaptionStyle(), ass_path)
        srt_path.write_text(srt_document([plan, second], [0, plan.duration_ms]), encoding="utf-8")
        ass_events = pysubs2.load(str(ass_path)).events
        srt_events = read_srt(srt_path)
    vtt = vtt_document([plan, second], [0, plan.duration_ms])
    # `\N` is the line break written between the measured lines; escaped text never holds it.
    assert [[ASS.unescape(line) for line in e.text.split("\\N")] for e in ass_events] == [
        [join_words(line) for line in cue.lines] for cue in plan.cues
    ]
    # ASS times are in centiseconds.
    assert all(
        abs(e.start - cue.start_ms) < 10 and abs(e.end - cue.end_ms) < 10
        for e, cue in zip(ass_events, plan.cues, strict=True)
    )
    expected = [*plan.cues, *second.cues]
    # The sidecars hold the text as written: SubRip raw (it has no escapes), WebVTT with its character references.
    assert [text for _, _, text in srt_events] == [cue.text for cue in expected]
    assert [VTT.unescape(block.split("\n")[1]) for block in vtt.split("\n\n")[1:-1]] == [cue.text for cue in expected]
    # The second scene's cues sit after the first scene on the video's timeline.
    assert srt_events[-1][0] == plan.duration_ms + second.cues[0].start_ms


@FAST
@given(TEXT, st.integers(0, 10_000), st.integers(0, 20_000))
def test_sentence_words_keep_the_text_and_share_its_time(text: str, start: int, span: int) -> None:
    words = spread_words(SpokenText(text, start, start + span))
    assert join_words(words) == _tidy([text])
    assert all(word.text and not any(c.isspace() for c in word.text) for word in words)
    if words:
        assert words[0].start_ms == start and words[-1].end_ms == start + span
        assert all(a.end_ms == b.start_ms for a, b in pairwise(words))
        assert all(word.start_ms <= word.end_ms for word in words)


def _respell(token: str) -> str:
    """How a speech provider might report a written token: no punctuation, or a different spelling."""
    return "".join(c for c in token if c.isalnum()) or token


@st.composite
def text_and_word_timings(draw: st.DrawFn) -> tuple[str, list[SpokenText]]:
    text = draw(TEXT.filter(lambda t: t.split()))
    spoken = [_respell(token) for token in text.split()]
    # Providers drop words, add words and say numbers differently.
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(spoken)))
        if draw(st.booleans()) and position < len(spoken):
            del spoken[position]
        else:
            spoken.insert(position, draw(st.sampled_from(["twelve", "um", "the", "N"])))
    if not spoken:
        spoken = ["hm"]
    words, clock = [], draw(st.integers(0, 500))
    for word in spoken:
        gap, length = draw(st.integers(0, 300)), draw(st.integers(0, 900))
        words.append(SpokenText(word, clock + gap, clock + gap + length))
        clock += gap + length
    return text, words


@FAST
@given(text_and_word_timings(), st.sampled_from([OUTPUT, NARROW]), st.integers(0, 1000))
def test_word_cues_keep_written_words_in_order_and_in_time(
    case: tuple[str, list[SpokenText]], output: OutputFormat, lead_ms: int
) -> None:
    text, words = case
    narration_ms = max(1, words[-1].end_ms)
    plan = plan_scene(0, narration_ms, words, output, lead_ms=lead_ms, tail_ms=0, narration=text)
    assert _written(plan.cues) == _tidy([text])
    _assert_lines_fit(plan, output)
    assert all(lead_ms <= cue.start_ms < cue.end_ms <= lead_ms + narration_ms for cue in plan.cues)
    assert all(a.end_ms <= b.start_ms for a, b in pairwise(plan.cues))
    # A cue starts with its first word and ends with its last.
    assert all((cue.start_ms, cue.end_ms) == (cue.words[0].start_ms, cue.words[-1].end_ms) for cue in plan.cues)
    # A cue never runs on past the end of a sentence (a piece of a word cut to fit a line ends none), except to take
    # in words that take no time, which would never show in a cue of their own.
    for cue in plan.cues:
        for index, (word, following) in enumerate(pairwise(cue.words)):
            if word.text.endswith((".", "!", "?", "…")) and not following.glued:
                assert word.start_ms == word.end_ms or all(w.start_ms == w.end_ms for w in cue.words[index + 1 :])


@st.composite
def sentence_timings(draw: st.DrawFn) -> list[SpokenText]:
    """Sentences as a voice times them; some take no time at all (piper says nothing for "{} ...")."""
    spoken, clock = [], 0
    for text in draw(st.lists(TEXT, min_size=1, max_size=6)):
        gap, length = draw(st.integers(0, 300)), draw(st.sampled_from([0, 0, 1, 40, 700, 3000]))
        spoken.append(SpokenText(text, clock + gap, clock + gap + length))
        clock += gap + length
    return spoken


@FAST
@given(sentence_timings(), st.sampled_from([OUTPUT, NARROW]), st.integers(0, 1000))
def test_every_word_gets_a_cue_that_is_shown(spoken: list[SpokenText], output: OutputFormat, lead_ms: int) -> None:
    narration_ms = max(1, spoken[-1].end_ms)
    plan = plan_scene(0, narration_ms, spoken, output, lead_ms=lead_ms, tail_ms=500)
    assert _written(plan.cues) == _tidy([part.text for part in spoken])
    assert all(lead_ms <= cue.start_ms < cue.end_ms <= lead_ms + narration_ms for cue in plan.cues)
    assert all(a.end_ms <= b.start_ms for a, b in pairwise(plan.cues))
    assert plan.frames * 1000 >= (lead_ms + narration_ms + 500) * output.fps


# The real assembler: a few texts through piper, one slide, the segment encode and the mux.

SMALL = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=144, fps=10, quality=types_pb2.QUALITY_DRAFT
)
# Starts with a speakable word: for text piper cannot say at all there is no audio to caption (see the case
# speech-nothing-to-say in tests/e2e/test_bad_input.py). Shorter than TEXT, so each file is a few seconds long. Pieces
# joined without spaces can make a word longer than narration allows (limits.MAX_WORD_CHARS, refused by the audio
# service): a space after every 99 characters of a run keeps the text valid and its markup as it was.
SPOKEN_TEXT = st.tuples(
    st.sampled_from(["Look", "Stop.", "Wait", "Hello!"]),
    st.lists(
        st.one_of(_PLAIN, st.sampled_from(MARKUP), st.sampled_from([" ", ". "]), _LONG_WORD.map(lambda w: w[:90])),
        max_size=6,
    ).map("".join),
).map(lambda words: re.sub(r"(\S{99})(?=\S)", r"\1 ", " ".join(words)))


def _is_cut_from(cues: list[str], narration: str) -> bool:
    """Whether the cues, exactly as stored, are the narration (its spacing tidied) cut in order.

    Cues meet at a space, or inside a word too long for a line.
    """
    position = 0
    for cue in cues:
        if narration.startswith(" " + cue, position):
            position += 1
        elif not narration.startswith(cue, position):
            return False
        position += len(cue)
    return position == len(narration)


def subtitle_track_texts(path: Path) -> list[str]:
    """The text of each mov_text sample exactly as stored (a 16-bit length, then UTF-8).

    tests/probe.py reads the track through PyAV's ASS `dialogue`, which drops any `{...}` run, so it cannot show
    whether literal braces survived.
    """
    texts = []
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.subtitles[0]):
            data = bytes(packet)
            if len(data) >= 2 and (length := int.from_bytes(data[:2], "big")):
                texts.append(data[2 : 2 + length].decode("utf-8"))
    return texts


class Asset(NamedTuple):
    metadata: types_pb2.AssetMetadata
    data: bytes

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Asset({self.metadata.mime_type}, {len(self.data)} bytes)"


@pytest.fixture(scope="module")
async def slide(image_channel: grpc.aio.Channel) -> Asset:
    scene = types_pb2.Scene(id="s", narration="x", title="Captions")
    stub = image_service_pb2_grpc.ImageServiceStub(image_channel)
    return Asset(*await collect(stub.GenerateImage(image_service_pb2.GenerateImageRequest(scene=scene, output=SMALL))))


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@example(
    text=r"Use {\b1}bold{\b0}, {\pos(1,2)}here, <i>tags</i>, a \N break, a \h space, {curly} & 100% at C:\new\h.",
    words=False,
)
@example(text="Hello. {} ...", words=False)
@example(text="Stop. 00:00:05,000 --> 00:00:06,000 is a timing line.", words=False)
@given(text=SPOKEN_TEXT, words=st.booleans())
async def test_assembled_subtitle_track_is_the_narration(
    text: str,
    words: bool,
    slide: Asset,
    audio_channel: grpc.aio.Channel,
    assembler_channel: grpc.aio.Channel,
    work_root: Path,
    tmp_path: Path,
) -> None:
    speech = await collect(
        audio_service_pb2_grpc.AudioServiceStub(audio_channel).SynthesizeSpeech(
            audio_service_pb2.SynthesizeSpeechRequest(text=text)
        )
    )
    if words:
        # As edge-tts reports them: one timing per spoken word, without punctuation, spread over the audio.
        spoken = [_respell(token) for token in text.split()]
        step = speech[0].duration_ms // len(spoken)
        del speech[0].timings[:]
        for index, word in enumerate(spoken):
            speech[0].timings.add(
                text=word, start_ms=index * step, end_ms=(index + 1) * step, kind=types_pb2.TIMING_KIND_WORD
            )
    scene = types_pb2.Scene(id="s", narration=text, title="Captions")

    async def requests() -> AsyncIterator[pb.AssembleRequest]:
        sidecars = [types_pb2.SUBTITLE_FORMAT_SRT, types_pb2.SUBTITLE_FORMAT_WEBVTT]
        finishing = types_pb2.Finishing(sidecars=sidecars)
        yield pb.AssembleRequest(start=pb.AssemblyStart(output=SMALL, scene_count=1, finishing=finishing))
        yield pb.AssembleRequest(scene=pb.SceneStart(scene_index=0, scene=scene, visual=slide[0], narration=speech[0]))
        for role, (_, data) in ((pb.ASSET_ROLE_VISUAL, slide), (pb.ASSET_ROLE_NARRATION, speech)):
            for chunk in iter_chunks(data):
                yield pb.AssembleRequest(chunk=pb.SceneChunk(scene_index=0, role=role, chunk=chunk))

    movie, summary = bytearray(), None
    async for response in assembler_service_pb2_grpc.AssemblerServiceStub(assembler_channel).Assemble(requests()):
        if response.HasField("chunk"):
            movie += response.chunk.data
        elif response.HasField("summary"):
            summary = response.summary
    path = tmp_path / "captions.mp4"
    path.write_bytes(movie)
    probed = probe_mp4(path)
    assert (probed.video_codec, probed.audio_codec, probed.width, probed.height) == ("h264", "aac", 256, 144)
    assert abs(probed.audio_duration_s - probed.video_duration_s) < 0.15
    stored = subtitle_track_texts(path)
    assert _is_cut_from(stored, " ".join(text.split())), stored
    # The sidecars hold the same cue texts: SubRip as they are, WebVTT with its character references.
    assert summary is not None
    srt, vtt = (file.text for file in summary.subtitles)
    assert [block.split("\n")[2] for block in srt.split("\n\n")[:-1]] == stored
    assert [VTT.unescape(block.split("\n")[1]) for block in vtt.split("\n\n")[1:-1]] == stored
    assert list(work_root.iterdir()) == []
