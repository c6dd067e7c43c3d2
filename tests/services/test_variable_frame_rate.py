"""`output.frame_rate_mode: variable` over real gRPC: each distinct picture once, at the constant-rate times."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from aiohttp import web
from PIL import Image
from scenecast.v1 import assembler_service_pb2 as pb
from scenecast.v1 import types_pb2
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.test_studio_browser import browser, downloads  # noqa: F401 (fixtures)
from tests.fakes.base import FakeServer
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


class _Folder(FakeServer):
    """A folder's files over HTTP (aiohttp's static files answer range requests)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self._folder = folder

    def routes(self, app: web.Application) -> None:
        app.router.add_static("/", self._folder)


# Loads the video, then seeks to arguments[0] seconds; answers with what the element reports.
_SEEK = """
const [time, done] = arguments;
const video = document.querySelector("video");
const picture = () => {
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [64, 36];
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0, 64, 36);
  return Array.from(context.getImageData(0, 0, 64, 36).data);
};
const report = () => done({duration: video.duration, currentTime: video.currentTime, readyState: video.readyState,
                           error: video.error && video.error.message, picture: video.error ? null : picture()});
video.onerror = report;
const seek = () => { video.onseeked = report; video.currentTime = time; };
if (video.readyState >= 1) seek(); else video.onloadedmetadata = seek;
"""


@pytest.mark.parametrize("mode", [types_pb2.FRAME_RATE_MODE_VARIABLE, types_pb2.FRAME_RATE_MODE_CONSTANT])
def test_chromium_plays_the_video_with_its_duration_and_seeks_to_the_right_picture(
    renders: dict[int, Path],
    browser: WebDriver,  # noqa: F811 (the studio test's fixture, imported above)
    mode: int,
) -> None:
    """At a constant rate the held frames are pictures of skips (services/assembler/repeats.py): Chromium's decoder
    must show the picture they repeat, as FFmpeg's does."""
    movie = renders[mode]
    page = movie.with_name("player.html")
    page.write_text(f'<video src="{movie.name}" preload="auto" muted></video>')
    duration = probe_mp4(movie).duration_s
    # Half a frame into a repeat past the middle: at a constant rate a picture of skips, a few bytes.
    packets = _video_packets(renders[types_pb2.FRAME_RATE_MODE_CONSTANT])[0]
    with av.open(str(renders[types_pb2.FRAME_RATE_MODE_CONSTANT])) as container:
        sizes = [p.size for p in container.demux(container.streams.video[0]) if p.size]
    start, length = next(
        packet for packet, size in zip(packets, sizes, strict=True) if packet[0] > duration / 2 and size < 100
    )
    target = round(float(start + length / 2), 3)
    # Over HTTP from one origin (a video read from a file:// page taints the canvas its picture is drawn on), with
    # range requests, which seeking needs.
    with _Folder(movie.parent) as server:
        browser.get(f"{server.base_url}/{page.name}")
        state = browser.execute_async_script(_SEEK, target)
    assert state["error"] is None
    assert abs(state["duration"] - duration) < 0.05
    assert state["currentTime"] == pytest.approx(target, abs=0.001)
    # HAVE_CURRENT_DATA or more: the picture at the sought time is decoded.
    assert state["readyState"] >= 2
    drawn = np.array(state["picture"], dtype=np.float64).reshape(36, 64, 4)[:, :, :3]
    (expected,) = frames_shown(movie, [target])
    small = np.asarray(Image.fromarray(expected).resize((64, 36), Image.Resampling.BOX), dtype=np.float64)
    difference = float(np.abs(drawn - small).mean())
    print(f"{movie.name} at {target} s: mean difference to FFmpeg's picture {difference:.2f} levels")
    # Scaling and colour conversion differ between the two by a few levels; a wrong picture by tens.
    assert small.std() > 20 and difference < 8
