"""`output.frame_rate_mode: variable` over real gRPC: each distinct picture once, at the constant-rate times."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import grpc
import pytest
from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import types_pb2
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.test_studio_browser import browser, downloads  # noqa: F401 (fixtures)
from tests.probe import frames_shown, probe_mp4, psnr
from tests.services.test_assembler import Asset, assemble, assets, scene_messages  # noqa: F401 (a fixture)
from tests.services.test_media_services import OUTPUT_16_9

# Enough sampled times to land in every caption run, fade and cross-fade of a two-scene video.
SAMPLES = 24
# Two encodes of the same pictures differ by the encoder's loss only.
MIN_PSNR_DB = 40.0


def _start(mode: int) -> pb.AssembleRequest:
    output = types_pb2.OutputSettings()
    output.CopyFrom(OUTPUT_16_9)
    output.frame_rate_mode = mode
    finishing = types_pb2.Finishing(
        transition=types_pb2.TRANSITION_CROSSFADE,
        title_card=types_pb2.Card(title="Ladders", duration_ms=1000),
    )
    return pb.AssembleRequest(start=pb.AssemblyStart(output=output, scene_count=2, finishing=finishing))


def _video_packets(path: Path) -> tuple[list[tuple[Fraction, Fraction]], Fraction]:
    """Each video packet's (presentation time, duration) in seconds, in order, and the stream's time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts * stream.time_base, p.duration * stream.time_base) for p in container.demux(stream) if p.size]
        return sorted(packets), stream.time_base


@pytest.fixture(scope="module")
async def renders(
    assembler_channel: grpc.aio.Channel,
    assets: tuple[Asset, Asset],  # noqa: F811 (test_assembler's fixture, imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, Path]:
    image, speech = assets
    folder = tmp_path_factory.mktemp("frame-rate")
    paths = {}
    for mode in (types_pb2.FRAME_RATE_MODE_CONSTANT, types_pb2.FRAME_RATE_MODE_VARIABLE):
        messages = [_start(mode), *scene_messages(0, image, speech), *scene_messages(1, image, speech)]
        movie, _, summary = await assemble(assembler_channel, messages)
        paths[mode] = folder / f"{types_pb2.FrameRateMode.Name(mode)}.mp4"
        paths[mode].write_bytes(movie)
        assert summary.size_bytes == len(movie)
    return paths


def test_a_variable_rate_video_has_one_packet_per_distinct_picture_on_the_frame_grid(renders: dict[int, Path]) -> None:
    constant, constant_tb = _video_packets(renders[types_pb2.FRAME_RATE_MODE_CONSTANT])
    variable, _ = _video_packets(renders[types_pb2.FRAME_RATE_MODE_VARIABLE])
    frame = Fraction(1, OUTPUT_16_9.fps)
    assert all(duration == frame for _, duration in constant)
    # The held stretches of the title card and both scenes are one packet each, instead of a packet per frame.
    assert len(variable) < len(constant) / 2
    times = [time for time, _ in variable]
    assert times[0] == 0 and times == sorted(set(times))
    # Every picture starts on a frame of the constant-rate grid and lasts until the next one starts.
    assert all(time % frame == 0 for time in times)
    assert all(start + duration == end for (start, duration), (end, _) in zip(variable, variable[1:], strict=False))
    assert variable[-1][0] + variable[-1][1] == constant[-1][0] + constant[-1][1]
    # The same frame grid as the constant-rate file (no rounding of frame times).
    assert constant_tb == _video_packets(renders[types_pb2.FRAME_RATE_MODE_VARIABLE])[1]


def test_a_variable_rate_video_shows_the_constant_rate_pictures_sound_and_captions(renders: dict[int, Path]) -> None:
    constant, variable = renders[types_pb2.FRAME_RATE_MODE_CONSTANT], renders[types_pb2.FRAME_RATE_MODE_VARIABLE]
    probed_constant, probed_variable = probe_mp4(constant), probe_mp4(variable)
    assert probed_variable.video_duration_s == probed_constant.video_duration_s
    assert probed_variable.audio_duration_s == probed_constant.audio_duration_s
    assert probed_variable.subtitle_texts == probed_constant.subtitle_texts
    assert probed_variable.subtitle_starts_s == probed_constant.subtitle_starts_s
    duration = probed_constant.video_duration_s
    times = [duration * (index + 0.5) / SAMPLES for index in range(SAMPLES)]
    for time, a, b in zip(times, frames_shown(constant, times), frames_shown(variable, times), strict=True):
        assert psnr(a, b) >= MIN_PSNR_DB, f"the pictures at {time:.3f} s differ"


# Loads the video, then seeks to arguments[0] seconds; answers with what the element reports.
_SEEK = """
const [time, done] = arguments;
const video = document.querySelector("video");
const report = () => done({duration: video.duration, currentTime: video.currentTime, readyState: video.readyState,
                           error: video.error && video.error.message});
video.onerror = report;
const seek = () => { video.onseeked = report; video.currentTime = time; };
if (video.readyState >= 1) seek(); else video.onloadedmetadata = seek;
"""


def test_chromium_plays_a_variable_rate_video_with_its_duration_and_seeks_in_it(
    renders: dict[int, Path],
    browser: WebDriver,  # noqa: F811 (the studio test's fixture, imported above)
) -> None:
    movie = renders[types_pb2.FRAME_RATE_MODE_VARIABLE]
    page = movie.with_name("player.html")
    page.write_text(f'<video src="{movie.name}" preload="auto" muted></video>')
    duration = probe_mp4(movie).duration_s
    target = round(duration * 0.6, 3)
    browser.get(page.as_uri())
    state = browser.execute_async_script(_SEEK, target)
    assert state["error"] is None
    assert abs(state["duration"] - duration) < 0.05
    assert state["currentTime"] == pytest.approx(target, abs=0.001)
    # HAVE_CURRENT_DATA or more: the picture at the sought time is decoded.
    assert state["readyState"] >= 2
