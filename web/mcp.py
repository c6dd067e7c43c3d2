"""The MCP server (`python -m web.mcp`): the gateway's operations as tools for AI agents, over stdio or HTTP.

The tools call the same `Gateway` as the HTTP routes, so scripts, errors and renders mean the same on both doors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import grpc
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import AliasChoices, Field
from scenecast.v1 import render_service_pb2

from scenecast_cli.client import credits_text
from services.common.observability import configure
from services.common.settings import ServiceSettings
from services.common.state import (
    UnsafeStateLocation,
    create_private_file,
    private_dir,
    state_path,
    write_private_file,
)
from web.app import proto_json, status_of
from web.config import WebSettings
from web.gateway import Gateway
from web.problems import ProblemError
from web.scripts import render_request as script_request
from web.server import serve

# A script as agents write one: an object, or YAML (or JSON) text as a person would paste it.
Script = Annotated[
    dict[str, Any] | str,
    Field(
        description="The script in the scenecast CLI's format, as an object or as YAML text: `title`, `output` and a "
        "list of `scenes`, each with an `id` and its `narration` (and a `visual` prompt or a `title` card)."
    ),
]


class McpSettings(WebSettings):
    """The web service's settings (the gateway, its token, WEB_HOST) and where the MCP server keeps videos."""

    # Folder the render tool saves MP4s in, made private (0700). The tool answers with the file's path; a caller never
    # names a path, so an agent cannot make this process write anywhere else.
    video_dir: Path = Field(state_path("videos"), validation_alias=AliasChoices("MCP_VIDEO_DIR", "video_dir"))
    # Port of the streamable HTTP transport (`python -m web.mcp http`), on WEB_HOST; 0 picks a free one.
    mcp_port: int = Field(8081, ge=0, le=65535, validation_alias=AliasChoices("MCP_PORT", "mcp_port"))


def create_server(settings: McpSettings) -> MCPServer[Gateway]:
    """The MCP server with its own gateway channel, opened and closed with the server's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(server: MCPServer[Gateway]) -> AsyncIterator[Gateway]:
        gateway = Gateway(settings)
        try:
            yield gateway
        finally:
            await gateway.close()

    server: MCPServer[Gateway] = MCPServer(
        "scenecast",
        instructions="Makes narrated, captioned MP4 videos from a script of scenes. Estimate a script's cost before "
        "rendering it: rendering spends money with paid providers.",
        lifespan=lifespan,
    )

    def gateway(ctx: Context) -> Gateway:
        return ctx.request_context.lifespan_context  # type: ignore[no-any-return]

    @server.tool()
    async def list_providers(ctx: Context) -> dict[str, Any]:
        """The image, speech and video providers a script may name, with the defaults and their prices (USD), and
        the limits on scenes."""
        async with _as_tool_errors():
            return proto_json(await gateway(ctx).config())

    @server.tool()
    async def estimate(script: Script, ctx: Context) -> dict[str, Any]:
        """What rendering the script would cost (USD), per scene and in total, with the providers it would use now;
        nothing is generated or spent."""
        async with _as_tool_errors():
            return proto_json(await gateway(ctx).estimate(_request(script)))

    @server.tool()
    async def render(script: Script, ctx: Context) -> dict[str, Any]:
        """Renders the script to an MP4 (H.264 video, AAC audio, captions of the narration) and waits for it,
        reporting progress per step. Answers with the path of the saved MP4, its render id and the summary (duration,
        size, cost), and the path of its credits file when it shows stock media that asks for credit. Spends money with
        paid providers: estimate first. Cancelling the call cancels the render."""
        async with _as_tool_errors():
            return await _render(gateway(ctx), settings.video_dir, _request(script), ctx)

    @server.tool()
    async def render_status(render_id: str, ctx: Context) -> dict[str, Any]:
        """A render's state (running, succeeded, failed, cancelled) with its latest progress, and its summary or error
        once it ended."""
        async with _as_tool_errors():
            return status_of(await gateway(ctx).renders.get(render_id)).model_dump(exclude_none=True)

    return server


def _request(script: dict[str, Any] | str) -> render_service_pb2.RenderRequest:
    """An object goes through the JSON reader (as an HTTP JSON body does), text through the YAML one."""
    return script_request(json.dumps(script), "JSON") if isinstance(script, dict) else script_request(script, "YAML")


@contextlib.asynccontextmanager
async def _as_tool_errors() -> AsyncIterator[None]:
    """A refusal (a bad script, an unknown render, a provider down, an unsafe MCP_VIDEO_DIR) as a tool error with the
    HTTP API's wording, which names the field and the fix, for the agent to read and correct; anything else stays a
    crash."""
    try:
        yield
    except ProblemError as error:
        raise ToolError(error.problem.detail) from None
    except grpc.aio.AioRpcError as error:
        raise ToolError(ProblemError.from_rpc(error).problem.detail) from None
    except UnsafeStateLocation as error:
        raise ToolError(str(error)) from None


async def _render(
    gateway: Gateway, video_dir: Path, request: render_service_pb2.RenderRequest, ctx: Context
) -> dict[str, Any]:
    # The folder is checked before anything is spent: a render whose video cannot be saved is not started.
    folder = private_dir(video_dir, "MCP_VIDEO_DIR")
    state = await gateway.renders.start(request)
    try:
        async for number, event in gateway.events(state.render_id, after=0):
            if isinstance(event, ProblemError):
                raise event
            if isinstance(event, render_service_pb2.RenderProgress):
                # The render id in every message: an agent whose call is cut can still ask render_status.
                stage = render_service_pb2.RenderStage.Name(event.stage).removeprefix("RENDER_STAGE_").lower()
                scene = f" {event.scene_id}" if event.scene_id else ""
                await ctx.report_progress(number, message=f"render {state.render_id}: {stage}{scene}")
    except anyio.get_cancelled_exc_class():
        # The agent cancelled the call: stop spending on a video nobody will collect. Shielded, since the call's own
        # cancellation would otherwise cut this request short too.
        with anyio.CancelScope(shield=True), contextlib.suppress(grpc.aio.AioRpcError):
            await gateway.cancel(state.render_id)
        raise
    summary = await gateway.renders.finished(state.render_id)
    path = await _save(gateway, summary, folder)
    answer = {"path": str(path), "render_id": summary.render_id, "summary": proto_json(summary)}
    if credits := credits_text(summary):
        # Beside the video, as the stock libraries' licences ask: whoever publishes the video finds them there.
        credits_path = path.with_suffix(".credits.txt")
        await anyio.to_thread.run_sync(write_private_file, credits_path, credits.encode("utf-8"))
        answer["credits_path"] = str(credits_path)
    return answer


async def _save(gateway: Gateway, summary: render_service_pb2.RenderSummary, folder: Path) -> Path:
    """Streams the MP4 to `<render id>.mp4` in `folder` (the id is the gateway's, checked there to be a plain name):
    written under a fresh private name, then renamed, so the path never names half a file."""
    path = folder / f"{summary.render_id}.mp4"
    temp = folder / f".{summary.render_id}.{secrets.token_hex(8)}.part"
    try:
        with create_private_file(temp) as file:
            async for data in gateway.video(summary.render_id, 0, summary.size_bytes - 1):
                file.write(data)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m web.mcp", description=__doc__)
    parser.add_argument(
        "transport",
        nargs="?",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default) for an agent that starts this process; http for streamable HTTP on WEB_HOST:MCP_PORT",
    )
    transport = parser.parse_args().transport
    settings = McpSettings()
    # Logs go to stderr (JSON lines, secrets redacted): over stdio, stdout carries the protocol alone.
    configure("mcp", settings.log_format, settings.log_level, metrics_port=0, tracing=ServiceSettings())
    server = create_server(settings)
    if transport == "stdio":
        server.run("stdio")
    else:
        # On loopback the SDK also refuses requests whose Host or Origin is not loopback (DNS rebinding).
        serve(server.streamable_http_app(host=settings.host), settings.host, settings.mcp_port)


if __name__ == "__main__":
    main()
