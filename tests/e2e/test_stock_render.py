"""A script rendered by `scenecast render` with Pexels photos and Pexels clips (FakePexels), every service its own
process: the MP4 is probed, and the credits file beside it and the summary's credits are read as they are."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scenecast_cli.client import render_to_file
from scenecast_cli.script import load_script
from scenecast_cli.stack import LocalStack
from tests.e2e.test_first_run_cli import SCENECAST
from tests.e2e.test_render import LEAD_S, TAIL_S
from tests.fakes.pexels_server import KEY, FakePexels, Video
from tests.probe import probe_mp4

SCRIPT = """\
title: Forest walks
output:
  aspect_ratio: "16:9"
  height: 360
  quality: draft
providers:
  image: pexels
  video: pexels
scenes:
  - id: forest
    show: still
    visual: A misty pine forest at dawn, soft golden light.
    narration: The forest is quiet before sunrise.
  - id: ladder
    visual: A ladder against a sunny wall.
    narration: Check the ladder's feet before you climb, every single time.
"""
CREDITS = (
    "Photo by Lena Wide on Pexels (https://www.pexels.com/photo/102/)\n"
    "  Lena Wide: https://www.pexels.com/@lena-wide\n"
    "Video by Shorty Clip on Pexels (https://www.pexels.com/video/201/)\n"
    "  Shorty Clip: https://www.pexels.com/@shorty-clip\n"
    "\n"
    "Photos and videos provided by Pexels (https://www.pexels.com), free to use under the Pexels License "
    "(https://www.pexels.com/license/)\n"
)


@pytest.fixture(scope="module")
def pexels_fake() -> Iterator[FakePexels]:
    with FakePexels() as fake:
        # One clip of one second: shorter than any narration, so the assembler has to loop it.
        fake.videos = [Video(201, 1, ((640, 360), (1280, 720)), "Shorty Clip")]
        yield fake


def test_a_pexels_render_is_probed_and_credited_beside_the_video(pexels_fake: FakePexels, tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    output = tmp_path / "forest.mp4"
    env = {
        "PEXELS_API_KEY": KEY,
        "PEXELS_BASE_URL": pexels_fake.base_url,
        "ALLOW_PRIVATE_OUTPUT_URLS": "true",
        "ASSET_CACHE_DIR": str(tmp_path / "cache"),
    }
    with LocalStack(env=env, log_dir=tmp_path) as stack:
        result = subprocess.run(
            [str(SCENECAST), "render", str(script), "-o", str(output), "--gateway", stack.gateway_address],
            cwd=tmp_path,
            env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        # The same render through the client, for the summary the CLI printed from (its photos now cached).
        summary = render_to_file(
            stack.gateway_address, load_script(script).request, tmp_path / "again.mp4", timeout_seconds=120
        )

    assert output.with_name("forest.credits.txt").read_text(encoding="utf-8") == CREDITS
    assert f"wrote {output.with_name('forest.credits.txt')}: the credits" in result.stderr

    probed = probe_mp4(output)
    assert (probed.video_codec, probed.width, probed.height, probed.audio_codec) == ("h264", 640, 360, "aac")
    narration_s = [scene.narration.duration_ms / 1000 for scene in summary.scenes]
    # The one-second clip fills its whole scene: the picture lasts as long as the narration, with leads and tails.
    assert narration_s[1] > 2.0
    assert abs(probed.duration_s - (sum(narration_s) + 2 * (LEAD_S + TAIL_S))) < 0.3
    assert abs(probed.video_duration_s - probed.audio_duration_s) < 0.05

    forest, ladder = summary.scenes
    assert (forest.visual.provider, forest.visual.model) == ("pexels", "pexels photo 102 1880x1253")
    assert (ladder.visual.provider, ladder.visual.model) == ("pexels", "pexels video 201 640x360 1 s")
    assert ladder.visual.duration_ms == 1000 and ladder.duration_ms > 2000
    assert [c.attribution for c in forest.credits] == ["Photo by Lena Wide on Pexels"]
    # The clip replaces the scene's Pexels photo, so only the clip is credited for it.
    assert [c.attribution for c in ladder.credits] == ["Video by Shorty Clip on Pexels"]
    assert [c.source_url for c in summary.credits] == [
        "https://www.pexels.com/photo/102/",
        "https://www.pexels.com/video/201/",
    ]
    assert summary.estimated_cost_usd == 0
    # The second render's photos came from the asset cache, their credits with them.
    assert [r.path for r in pexels_fake.searches()].count("/v1/search") == 2
