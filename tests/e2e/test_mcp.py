"""The MCP server (`python -m web.mcp`) over stdio, driven by the MCP SDK's own client, in front of the services."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from mcp import Client, StdioServerParameters

from scenecast_cli.stack import LocalStack, free_port
from tests.probe import probe_mp4

ROOT = Path(__file__).resolve().parents[2]
NARRATION = "Keep three points of contact on the ladder."
SCRIPT = f"""\
title: Ladders
output: {{height: 360, fps: 25, quality: draft}}
scenes:
  - id: three
    title: Three points of contact
    narration: {NARRATION}
"""


def _mcp(stack: LocalStack, video_dir: Path) -> Client:
    """The server as an agent host starts it: a child process speaking MCP on its stdin and stdout."""
    env = {"SCENECAST_GATEWAY": stack.gateway_address, "MCP_VIDEO_DIR": str(video_dir), "LOG_LEVEL": "WARNING"}
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "web.mcp"], env=env, cwd=ROOT))


async def test_an_mcp_client_renders_a_video_over_stdio(stack: LocalStack, tmp_path: Path) -> None:
    video_dir = tmp_path / "videos"
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with _mcp(stack, video_dir) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        providers = await client.call_tool("list_providers", {})
        estimate = await client.call_tool("estimate", {"script": yaml.safe_load(SCRIPT)})
        rendered = await client.call_tool("render", {"script": SCRIPT}, progress_callback=on_progress)
        assert not rendered.is_error, rendered.content
        answer = rendered.structured_content
        assert answer is not None
        status = await client.call_tool("render_status", {"render_id": answer["render_id"]})

    assert tools == {"list_providers", "estimate", "render", "render_status"}
    assert not providers.is_error and providers.structured_content is not None
    assert "MEDIA_KIND_IMAGE" in {kind["kind"] for kind in providers.structured_content["provider_sets"]}
    assert not estimate.is_error and estimate.structured_content is not None
    assert [scene["scene_id"] for scene in estimate.structured_content["scenes"]] == ["three"]

    path = Path(answer["path"])
    assert path == video_dir / f"{answer['render_id']}.mp4" and sorted(video_dir.iterdir()) == [path]
    assert stat.S_IMODE(video_dir.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert answer["summary"]["size_bytes"] == str(path.stat().st_size)
    probed = probe_mp4(path)
    assert (probed.video_codec, probed.audio_codec, probed.height) == ("h264", "aac", 360)
    assert probed.subtitle_texts == [NARRATION]
    assert f"render {answer['render_id']}: scene_encoded three" in progress
    assert not status.is_error and status.structured_content is not None
    assert status.structured_content["state"] == "succeeded"
    assert status.structured_content["summary"] == answer["summary"]


async def test_cancelling_a_render_call_cancels_the_render(stack: LocalStack, tmp_path: Path) -> None:
    """An agent that gives up on a render stops it: nothing more is generated or spent for it."""
    script = yaml.safe_load(SCRIPT)
    script["scenes"] = [{**script["scenes"][0], "id": f"s{index}"} for index in range(8)]
    accepted = asyncio.Event()
    render_ids: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        render_ids.append((message or "").removeprefix("render ").split(":")[0])
        accepted.set()

    async with _mcp(stack, tmp_path / "videos") as client:
        call = asyncio.ensure_future(client.call_tool("render", {"script": script}, progress_callback=on_progress))
        await accepted.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        while (status := await client.call_tool("render_status", {"render_id": render_ids[0]})).structured_content[
            "state"
        ] == "running":
            await asyncio.sleep(0.1)  # the server cancels the render after the call has gone
    assert status.structured_content["state"] == "cancelled", status.structured_content
    assert status.structured_content["error"]["grpc_status"] == "CANCELLED"
    assert list((tmp_path / "videos").iterdir()) == []  # no part of a video left


async def test_a_bad_script_is_a_tool_error_naming_the_field(stack: LocalStack, tmp_path: Path) -> None:
    video_dir = tmp_path / "videos"
    async with _mcp(stack, video_dir) as client:
        bad = await client.call_tool("render", {"script": SCRIPT.replace("id: three", "id: 'three points!'")})
        unknown = await client.call_tool("render_status", {"render_id": "nosuchrender"})
    assert bad.is_error and bad.structured_content is None
    assert [part.type for part in bad.content] == ["text"]
    # The SDK's prefix, then the HTTP API's wording, which names the field.
    assert bad.content[0].text == (  # type: ignore[union-attr]
        "Error executing tool render: scenes[0].id: String should match pattern '^[A-Za-z0-9_-]+$'"
    )
    assert unknown.is_error and "nosuchrender" in unknown.content[0].text  # type: ignore[union-attr]
    assert not video_dir.exists()


async def test_an_unsafe_video_folder_is_a_tool_error_naming_its_setting(stack: LocalStack, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "videos").symlink_to(elsewhere)
    async with _mcp(stack, tmp_path / "videos") as client:
        refused = await client.call_tool("render", {"script": SCRIPT})
    assert refused.is_error
    assert refused.content[0].text.startswith(  # type: ignore[union-attr]
        f"Error executing tool render: MCP_VIDEO_DIR={tmp_path / 'videos'} is a symbolic link"
    )
    assert list(elsewhere.iterdir()) == []


async def test_the_streamable_http_transport_serves_the_same_tools(stack: LocalStack, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SCENECAST_GATEWAY": stack.gateway_address, "MCP_PORT": str(port)}
    with (tmp_path / "mcp.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "web.mcp", "http"], env=env, stdout=log, stderr=log, cwd=ROOT)
    try:
        while True:  # until it listens: start-up is not what this test measures
            assert process.poll() is None, (tmp_path / "mcp.log").read_text()
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.1)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            estimate = await client.call_tool("estimate", {"script": SCRIPT})
        # A web page on another site that got its name to resolve to 127.0.0.1 (DNS rebinding) is refused.
        async with httpx.AsyncClient() as http:
            rebound = await http.post(
                f"http://127.0.0.1:{port}/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"Host": f"evil.example:{port}", "Accept": "application/json, text/event-stream"},
            )
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, (tmp_path / "mcp.log").read_text()[-3000:]
    assert not estimate.is_error and estimate.structured_content is not None
    assert [scene["scene_id"] for scene in estimate.structured_content["scenes"]] == ["three"]
    assert rebound.status_code == 421, rebound.text
