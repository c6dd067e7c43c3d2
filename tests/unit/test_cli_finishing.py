"""The script's `finishing:` block, local music beside the script, and subtitle sidecars written beside the MP4."""

from __future__ import annotations

from pathlib import Path

import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import write_sidecars
from scenecast_cli.main import main
from scenecast_cli.script import ScriptError, load_script
from services.common.finishing import finishing_options

SCENES = "scenes:\n  - {id: a, title: Hi, narration: Hello there.}\n"
FULL = """
finishing:
  transition: crossfade
  transition_ms: 600
  fit: pad_blur
  pad_color: "#102030"
  captions: {highlight: true, highlight_color: "#ff0000", box: true}
  sidecars: [srt, vtt]
  loudness: {lufs: -14, true_peak: -1}
  silence_pad_ms: 150
  title_card: {title: Ladders, subtitle: A safety lesson, duration_ms: 2500}
  end_card: {title: Thanks}
  music: {file: music/bed.mp3, gain_db: -18, duck: false, fade_ms: 2000}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "script.yaml"
    path.write_text(text + SCENES)
    return path


def test_every_finishing_option_maps_to_the_contract(tmp_path: Path) -> None:
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "bed.mp3").write_bytes(b"ID3")
    script = load_script(_write(tmp_path, FULL))
    finishing = script.request.finishing
    assert (finishing.transition, finishing.transition_ms) == (types_pb2.TRANSITION_CROSSFADE, 600)
    assert (finishing.fit, finishing.pad_color) == (types_pb2.FIT_PAD_BLUR, "#102030")
    assert finishing.caption_style == types_pb2.CaptionStyle(highlight_words=True, highlight_color="#ff0000", box=True)
    assert list(finishing.sidecars) == [types_pb2.SUBTITLE_FORMAT_SRT, types_pb2.SUBTITLE_FORMAT_WEBVTT]
    assert (finishing.loudness.integrated_lufs, finishing.loudness.true_peak_dbtp) == (-14, -1)
    assert not finishing.loudness.disabled
    assert finishing.silence_pad_ms == 150
    assert finishing.title_card == types_pb2.Card(title="Ladders", subtitle="A safety lesson", duration_ms=2500)
    assert finishing.end_card.title == "Thanks"
    assert finishing.music == types_pb2.MusicMix(gain_db=-18, duck=False, fade_ms=2000)
    # The local file is uploaded by the CLI, which then names it by upload id.
    assert not script.request.HasField("music")
    assert script.music is not None
    assert (script.music.path, script.music.mime_type) == (tmp_path / "music" / "bed.mp3", "audio/mpeg")
    options = finishing_options(finishing)
    assert (options.transition, options.fit, options.sidecars) == ("crossfade", "pad_blur", ("srt", "vtt"))


def test_defaults_loudness_off_and_library_music(tmp_path: Path) -> None:
    plain = load_script(_write(tmp_path, ""))
    assert plain.request.finishing == types_pb2.Finishing() and plain.music is None
    assert not plain.request.HasField("music")
    script = load_script(_write(tmp_path, "finishing:\n  loudness: off\n  music: {library: calm.mp3}\n"))
    assert script.request.finishing.loudness.disabled
    assert script.request.music.library_file == "calm.mp3" and script.music is None
    # Unset mix settings stay unset, so the assembler's defaults apply.
    assert not script.request.finishing.music.HasField("gain_db")
    assert not script.request.finishing.HasField("silence_pad_ms")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("finishing: {transition: wipe}", "finishing.transition"),
        ("finishing: {fit: stretch}", "finishing.fit"),
        ("finishing: {colour: red}", "finishing.colour: Extra inputs are not permitted"),
        ("finishing: {pad_color: red}", "finishing.pad_color"),
        ("finishing: {captions: {highlight_color: '#12'}}", "finishing.captions.highlight_color"),
        ("finishing: {captions: {size: 3}}", "finishing.captions.size"),
        ("finishing: {sidecars: [ass]}", "finishing.sidecars.0"),
        ("finishing: {loudness: {lufs: -60}}", "finishing.loudness"),
        ("finishing: {loudness: loud}", "finishing.loudness"),
        ("finishing: {transition_ms: 9000}", "finishing.transition_ms"),
        ("finishing: {silence_pad_ms: 5000}", "finishing.silence_pad_ms"),
        ("finishing: {title_card: {subtitle: no title}}", "finishing.title_card.title"),
        ("finishing: {end_card: {title: Bye, duration_ms: 100}}", "finishing.end_card.duration_ms"),
        ("finishing: {music: {gain_db: -10}}", "finishing.music"),
        ("finishing: {music: {file: a.mp3, library: b.mp3}}", "finishing.music"),
        ("finishing: {music: {library: b.mp3, gain_db: 6}}", "finishing.music.gain_db"),
        ("finishing: {music: {file: missing.mp3}}", "finishing.music.file: no such file"),
        ("finishing: {music: {file: script.yaml}}", "finishing.music.file: script.yaml is not named as audio"),
    ],
)
def test_bad_finishing_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ScriptError, match=str(path)) as error:
        load_script(path)
    assert message in str(error.value)


def test_sidecars_are_written_beside_the_video(tmp_path: Path) -> None:
    srt = "1\r\n00:00:00,000 --> 00:00:01,500\r\nHéllo, 世界\r\n"
    vtt = "WEBVTT\n\n00:00.000 --> 00:01.500\nHéllo, 世界\n"
    summary = render_service_pb2.RenderSummary(
        subtitles=[
            types_pb2.SubtitleFile(format=types_pb2.SUBTITLE_FORMAT_SRT, text=srt),
            types_pb2.SubtitleFile(format=types_pb2.SUBTITLE_FORMAT_WEBVTT, text=vtt),
        ]
    )
    written = write_sidecars(summary, tmp_path / "out.mp4")
    assert written == [tmp_path / "out.srt", tmp_path / "out.vtt"]
    assert (tmp_path / "out.srt").read_bytes() == srt.encode()
    assert (tmp_path / "out.vtt").read_bytes() == vtt.encode()
    assert write_sidecars(render_service_pb2.RenderSummary(), tmp_path / "none.mp4") == []


def test_spend_refuses_a_malformed_day(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_code:
        main(["spend", "--since", "28/11/2026"])
    assert exit_code.value.code == 2
    assert "'28/11/2026' is not a date written YYYY-MM-DD" in capsys.readouterr().err
