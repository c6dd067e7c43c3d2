"""A script rendered with Pexels photos and Pexels clips (FakePexels), every service its own process: by
`scenecast render` (the MP4 probed, the credits file beside it and the summary's credits read as they are), and by
the MCP server (its credits file), with the HTTP API reporting the same credits."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mcp import Client, StdioServerParameters
from scenecast.v1 import types_pb2

from scenecast_cli.client import get_config, render_to_file
from scenecast_cli.script import load_script
from scenecast_cli.stack import LocalStack
from tests.e2e.test_first_run_cli import SCENECAST
from tests.e2e.test_mcp import ROOT
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


@pytest.fixture(scope="module")
def pexels_stack(pexels_fake: FakePexels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The services, the HTTP API in front of them, and Pexels (the fake) as the only stock library."""
    folder = tmp_path_factory.mktemp("pexels-stack")
    env = {
        "PEXELS_API_KEY": KEY,
        "PEXELS_BASE_URL": pexels_fake.base_url,
        "PIXABAY_API_KEY": "",  # unset, whatever the environment running the tests holds
        "ALLOW_PRIVATE_OUTPUT_URLS": "true",
        "ASSET_CACHE_DIR": str(folder / "cache"),
    }
    with LocalStack(env=env, log_dir=folder, web=True) as stack:
        yield stack


def test_a_pexels_render_is_probed_and_credited_beside_the_video(
    pexels_fake: FakePexels, pexels_stack: LocalStack, tmp_path: Path
) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    output = tmp_path / "forest.mp4"
    result = subprocess.run(
        [str(SCENECAST), "render", str(script), "-o", str(output), "--gateway", pexels_stack.gateway_address],
        cwd=tmp_path,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    photo_searches = [r.path for r in pexels_fake.searches()].count("/v1/search")
    # The same render through the client, for the summary the CLI printed from (its photos now cached).
    summary = render_to_file(
        pexels_stack.gateway_address, load_script(script).request, tmp_path / "again.mp4", timeout_seconds=120
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
    assert [r.path for r in pexels_fake.searches()].count("/v1/search") == photo_searches


async def test_the_mcp_server_saves_the_credits_beside_the_video_and_the_http_api_reports_them(
    pexels_stack: LocalStack, tmp_path: Path
) -> None:
    video_dir = tmp_path / "videos"
    env = {"SCENECAST_GATEWAY": pexels_stack.gateway_address, "MCP_VIDEO_DIR": str(video_dir), "LOG_LEVEL": "WARNING"}
    server = StdioServerParameters(command=sys.executable, args=["-m", "web.mcp"], env=env, cwd=ROOT)
    async with Client(server) as client:
        rendered = await client.call_tool("render", {"script": SCRIPT})
    assert not rendered.is_error, rendered.content
    answer = rendered.structured_content
    assert answer is not None
    credits = video_dir / f"{answer['render_id']}.credits.txt"
    assert answer["credits_path"] == str(credits)
    assert credits.read_text(encoding="utf-8") == CREDITS
    assert stat.S_IMODE(credits.stat().st_mode) == 0o600  # private, like the video beside it
    expected = [credit["attribution"] for credit in answer["summary"]["credits"]]
    assert expected == ["Photo by Lena Wide on Pexels", "Video by Shorty Clip on Pexels"]

    # The HTTP API learns of a render it did not start on the first look, and reads its end just after.
    url = f"{pexels_stack.web_url}/v1/renders/{answer['render_id']}"
    for _ in range(100):
        if (status := httpx.get(url).json())["summary"] is not None:
            break
        await asyncio.sleep(0.05)
    assert status["summary"]["credits"] == answer["summary"]["credits"]
    assert status["summary"]["credits"][1] == {
        "vendor": "Pexels",
        "author": "Shorty Clip",
        "author_url": "https://www.pexels.com/@shorty-clip",
        "source_url": "https://www.pexels.com/video/201/",
        "attribution": "Video by Shorty Clip on Pexels",
        "license": CREDITS.splitlines()[-1],
    }


def test_get_config_lists_the_stock_providers_as_free_with_credits(pexels_stack: LocalStack) -> None:
    config = get_config(pexels_stack.gateway_address)
    listed = {
        (types_pb2.MediaKind.Name(s.kind), p.name): p
        for s in config.provider_sets
        for p in s.providers
        if p.name in ("pexels", "pixabay")
    }
    assert sorted(listed) == [
        ("MEDIA_KIND_IMAGE", "pexels"),
        ("MEDIA_KIND_IMAGE", "pixabay"),
        ("MEDIA_KIND_VIDEO", "pexels"),
        ("MEDIA_KIND_VIDEO", "pixabay"),
    ]
    pexels_image, pixabay_video = listed["MEDIA_KIND_IMAGE", "pexels"], listed["MEDIA_KIND_VIDEO", "pixabay"]
    assert (pexels_image.configured, list(pexels_image.required_env)) == (True, ["PEXELS_API_KEY"])
    assert (pixabay_video.configured, list(pixabay_video.required_env)) == (False, ["PIXABAY_API_KEY"])
    [price] = pexels_image.prices
    assert (price.model, price.unit, price.usd_per_unit) == ("pexels-image", "image", 0.0)
    assert price.note == "free; the render's credits name the author and Pexels (200 requests an hour, 20,000 a month)"
