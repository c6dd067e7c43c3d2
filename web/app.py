"""The `/v1` HTTP/JSON API: each route is one gateway call (or a render followed by WatchRender), translated."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, types_pb2

from scenecast_cli.script import ScriptError, ScriptModel, checked_request, parse_script
from services.common.chunks import CHUNK_BYTES
from services.common.server import MAX_MESSAGE_BYTES
from services.common.tls import aio_client_channel
from web.config import WebSettings
from web.problems import EXCEPTION_HANDLERS, PROBLEM_JSON, FieldProblem, Problem, ProblemError, field_path
from web.renders import RenderBook, RenderState

_SCRIPT_TYPES = {
    "application/json": "JSON",
    "application/yaml": "YAML",
    "application/x-yaml": "YAML",
    "text/yaml": "YAML",
    "text/x-yaml": "YAML",
}
_SCRIPT_BODY = {
    "required": True,
    "content": {kind: {"schema": {"$ref": "#/components/schemas/ScriptModel"}} for kind in _SCRIPT_TYPES},
}
# Seconds a music upload may take: minutes for the largest file over a slow link, but never forever.
_UPLOAD_TIMEOUT_SECONDS = 300.0
# An SSE comment this often keeps proxies from closing a stream while a long scene renders without events.
_PING_SECONDS = 15.0
_CAPTIONS = {
    "srt": (types_pb2.SUBTITLE_FORMAT_SRT, "application/x-subrip; charset=utf-8"),
    "vtt": (types_pb2.SUBTITLE_FORMAT_WEBVTT, "text/vtt; charset=utf-8"),
}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": Problem, "content": {PROBLEM_JSON: {}}},
    "5XX": {"model": Problem, "content": {PROBLEM_JSON: {}}},
}


class RenderCreated(BaseModel):
    """A render the gateway accepted; follow it at `events`, download it at `video` once it ends."""

    render_id: str
    status: str
    events: str
    video: str


class RenderStatus(BaseModel):
    """A render as last reported: `progress` and `summary` are the gateway's messages in proto3 JSON."""

    render_id: str
    state: Literal["running", "succeeded", "failed", "cancelled"]
    progress: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    error: Problem | None = None


class CancelResult(BaseModel):
    """True when the render was running and is now cancelled; false when it had already ended."""

    cancelled: bool


class Health(BaseModel):
    status: Literal["ready"]


def proto_json(message: Message) -> dict[str, Any]:
    """A gateway message in proto3's JSON mapping, with the .proto field names (as in the contract's comments)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def create_app(settings: WebSettings) -> FastAPI:
    """The app with its own gateway channel, opened and closed with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        channel = aio_client_channel(
            settings.gateway,
            tls=settings.tls,
            ca_file=settings.ca_file or None,
            cert_file=settings.cert_file or None,
            key_file=settings.key_file or None,
            server_name=settings.server_name or None,
            token=settings.token.get_secret_value() or None,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        )
        app.state.stub = render_service_pb2_grpc.RenderServiceStub(channel)
        app.state.health = health_pb2_grpc.HealthStub(channel)
        app.state.book = RenderBook(app.state.stub)
        try:
            yield
        finally:
            await app.state.book.close()
            await channel.close()

    # No Swagger or ReDoc pages: they load their scripts from a CDN, and the studio must work with no network.
    app = FastAPI(
        title="scenecast",
        version="1",
        summary="Script in, narrated captioned MP4 out: the HTTP/JSON front door to the scenecast gateway.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Last-Event-ID", "Range"],
            expose_headers=["Location", "Content-Range", "Accept-Ranges", "Content-Length"],
        )
    app.include_router(_routes(settings))
    return app


def _routes(settings: WebSettings) -> APIRouter:
    router = APIRouter(prefix="/v1", responses=_PROBLEMS)
    timeout = settings.call_timeout_seconds

    def stub(request: Request) -> render_service_pb2_grpc.RenderServiceStub:
        return request.app.state.stub  # type: ignore[no-any-return]

    def book(request: Request) -> RenderBook:
        return request.app.state.book  # type: ignore[no-any-return]

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        return Response(openapi_text(request.app), media_type="application/json")

    @router.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        """Ready when the gateway reports its RenderService SERVING (its media services are up); 503 otherwise."""
        try:
            answer = await request.app.state.health.Check(
                health_pb2.HealthCheckRequest(service="scenecast.v1.RenderService"), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise ProblemError(503, f"the gateway cannot be reached: {error.details()}") from None
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            raise ProblemError(503, "the gateway is not ready (a media service behind it is down or starting)")
        return Health(status="ready")

    @router.get("/config")
    async def config(request: Request) -> dict[str, Any]:
        """Providers per media kind (with their defaults and prices), and the gateway's scene limits: GetConfig."""
        return proto_json(await stub(request).GetConfig(render_service_pb2.GetConfigRequest(), timeout=timeout))

    @router.post("/estimate", openapi_extra={"requestBody": _SCRIPT_BODY})
    async def estimate(request: Request) -> dict[str, Any]:
        """Prices a script (JSON or YAML, the CLI's format) with the providers a render would use now."""
        render = await _script(request, settings.max_body_bytes)
        response = await stub(request).EstimateCost(
            render_service_pb2.EstimateCostRequest(render=render), timeout=timeout
        )
        return proto_json(response)

    @router.post("/renders", status_code=202, response_model=RenderCreated, openapi_extra={"requestBody": _SCRIPT_BODY})
    async def create_render(request: Request, response: Response) -> RenderCreated:
        """Starts rendering a script (JSON or YAML, the CLI's format); answers once the gateway accepted it."""
        state = await book(request).start(await _script(request, settings.max_body_bytes))
        base = f"/v1/renders/{state.render_id}"
        response.headers["Location"] = base
        return RenderCreated(render_id=state.render_id, status=base, events=f"{base}/events", video=f"{base}/video.mp4")

    @router.get("/renders/{render_id}", response_model=RenderStatus)
    async def render_status(request: Request, render_id: str) -> RenderStatus:
        """The render's latest progress, and its summary or error once it ended."""
        return _status(await book(request).get(render_id))

    @router.post("/renders/{render_id}/cancel", response_model=CancelResult)
    async def cancel_render(request: Request, render_id: str) -> CancelResult:
        """Stops a running render at once: CancelRender."""
        answer = await stub(request).CancelRender(
            render_service_pb2.CancelRenderRequest(render_id=render_id), timeout=timeout
        )
        return CancelResult(cancelled=answer.cancelled)

    @router.get(
        "/renders/{render_id}/events",
        responses={
            200: {"description": "The render's events, described above.", "content": {"text/event-stream": {}}},
            204: {"description": "No events after Last-Event-ID."},
        },
    )
    async def render_events(
        request: Request,
        render_id: str,
        last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
    ) -> Response:
        """Server-Sent Events: one per progress step (named after its stage: `accepted`, `asset_ready`,
        `scene_encoded`, `muxing`, `streaming`; scene steps carry `scene_index` and `scene_id`), then `summary` or
        `error` (a problem document), then the stream ends.

        Event ids count the render's events from 1 in the order the gateway recorded them, which WatchRender replays
        identically on every call: resuming with `Last-Event-ID: n` sends exactly the events after the n-th. 204 when
        there are none left (the render ended), which tells EventSource to stop reconnecting.
        """
        events = _progress_events(stub(request), render_id, after=last_event_id or 0)
        # Read up to the first event to send before answering: an unknown render is then a 404, not an empty stream.
        first = await anext(events, None)
        if first is None:
            return Response(status_code=204)
        return EventSourceResponse(_with_pings(first, events), headers={"Cache-Control": "no-store"})

    @router.get(
        "/renders/{render_id}/video.mp4",
        response_class=StreamingResponse,
        responses={200: {"content": {"video/mp4": {}}}, 206: {"content": {"video/mp4": {}}}},
    )
    async def render_video(
        request: Request, render_id: str, range_header: Annotated[str | None, Header(alias="Range")] = None
    ) -> StreamingResponse:
        """The MP4 (waiting for the render to end, like FetchResult), whole or one byte range (206; 416 when the range
        starts past the end). A browser's `<video>` seeks with ranges."""
        summary = await book(request).finished(render_id)
        size = summary.size_bytes
        span = byte_range(range_header, size)
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{summary.render_id}.mp4"',
            "Cache-Control": "private, max-age=3600",
        }
        start, end = span if span is not None else (0, size - 1)
        headers["Content-Length"] = str(end - start + 1)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return StreamingResponse(
            _mp4_bytes(stub(request), render_id, start, end),
            status_code=206 if span is not None else 200,
            media_type="video/mp4",
            headers=headers,
        )

    @router.get(
        "/renders/{render_id}/captions.{caption_format}",
        response_class=Response,
        responses={200: {"content": {"application/x-subrip": {}, "text/vtt": {}}}},
    )
    async def render_captions(request: Request, render_id: str, caption_format: Literal["srt", "vtt"]) -> Response:
        """The captions as SRT or WebVTT (waiting for the render to end), exactly as the assembler wrote them."""
        summary = await book(request).finished(render_id)
        wanted, media_type = _CAPTIONS[caption_format]
        for subtitle in summary.subtitles:
            if subtitle.format == wanted:
                return Response(subtitle.text.encode("utf-8"), media_type=media_type)
        raise ProblemError(
            404,
            f"render {render_id} has no {caption_format.upper()} captions: it was not made through this API, "
            f"which asks for both; render the script again here, or add `{caption_format}` to finishing.sidecars",
        )

    @router.post(
        "/music",
        status_code=201,
        openapi_extra={"requestBody": {"required": True, "content": {"audio/*": {"schema": {"format": "binary"}}}}},
    )
    async def upload_music(
        request: Request,
        content_type: Annotated[str, Header()] = "",
        content_length: Annotated[int | None, Header(ge=0)] = None,
    ) -> dict[str, Any]:
        """Uploads background music (the raw file as the body, Content-Type audio/*, Content-Length set); name the
        returned `upload_id` in the script's `finishing.music.upload`."""
        mime_type = content_type.split(";")[0].strip().lower()
        if not mime_type.startswith("audio/"):
            raise ProblemError(
                415,
                f"Content-Type must be audio/* (audio/mpeg, audio/wav...), got {mime_type[:60]!r}",
                field="Content-Type",
            )
        if content_length is None:
            raise ProblemError(
                411,
                "Content-Length is required: the gateway checks the size before the upload starts",
                field="Content-Length",
            )
        if content_length > settings.max_upload_bytes:
            raise _too_large(content_length, settings.max_upload_bytes, "WEB_MAX_UPLOAD_BYTES")
        answer = await stub(request).UploadMusic(
            _upload_messages(request, mime_type, content_length), timeout=_UPLOAD_TIMEOUT_SECONDS
        )
        return proto_json(answer)

    @router.get("/spend")
    async def spend(
        request: Request,
        group_by: Literal["day", "provider", "render"] = "day",
        since_day: Annotated[str, Query(description="First UTC day included, YYYY-MM-DD; empty means every day.")] = "",
        render_id: Annotated[str, Query(description="Only this render; empty means all.")] = "",
    ) -> dict[str, Any]:
        """Recorded provider spend, grouped by day, provider or render: GetSpend."""
        grouping = render_service_pb2.SpendGrouping.Value(f"SPEND_GROUPING_{group_by.upper()}")
        answer = await stub(request).GetSpend(
            render_service_pb2.GetSpendRequest(group_by=grouping, since_day=since_day, render_id=render_id),
            timeout=timeout,
        )
        return proto_json(answer)

    return router


async def _capped_body(request: Request, cap: int, setting: str) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `cap` (from Content-Length, or while it arrives):
    done here rather than with FastAPI's body limit, whose 413 is plain text instead of a problem document."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(int(declared), cap, setting)
    body = bytearray()
    async for block in request.stream():
        body += block
        if len(body) > cap:
            raise _too_large(len(body), cap, setting)
    return bytes(body)


def _too_large(size: int, cap: int, setting: str) -> ProblemError:
    return ProblemError(
        413, f"the body has {size} bytes or more; this server takes at most {cap} ({setting})", field="body"
    )


async def _script(request: Request, cap: int) -> render_service_pb2.RenderRequest:
    """The body as a script in the CLI's format, checked by the CLI's own model, as a RenderRequest."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    kind = _SCRIPT_TYPES.get(content_type)
    if kind is None:
        raise ProblemError(
            415,
            f"Content-Type must be application/json or application/yaml for a script, got {content_type[:60]!r}",
            field="Content-Type",
        )
    try:
        text = (await _capped_body(request, cap, "WEB_MAX_BODY_BYTES")).decode("utf-8")
    except UnicodeDecodeError:
        raise ProblemError(400, "the script must be UTF-8 text") from None
    try:
        script = parse_script(text, kind)  # type: ignore[arg-type]
        music = script.finishing.music
        if music is not None and music.file:
            # A request value never becomes a path on this machine.
            raise ProblemError(
                400,
                "finishing.music.file: a file path is not accepted over HTTP; upload the music (POST /v1/music) and "
                "name the upload_id in finishing.music.upload",
                field="finishing.music.file",
            )
        render = checked_request(script)
    except ScriptError as error:
        errors = [FieldProblem(field=field_path(loc) or "(top level)", detail=msg) for loc, msg in error.problems]
        detail = "; ".join(f"{e.field}: {e.detail}" for e in errors) if errors else str(error)
        raise ProblemError(400, detail, field=errors[0].field if errors else None, errors=errors or None) from None
    # Both caption files for every render: the studio's player needs WebVTT for its caption track and offers both as
    # downloads, and they are text the assembler writes anyway, so a script need not ask.
    for wanted in (types_pb2.SUBTITLE_FORMAT_SRT, types_pb2.SUBTITLE_FORMAT_WEBVTT):
        if render.output.captions and wanted not in render.finishing.sidecars:
            render.finishing.sidecars.append(wanted)
    return render


def _status(state: RenderState) -> RenderStatus:
    if state.error is not None:
        cancelled = state.error.problem.grpc_status == grpc.StatusCode.CANCELLED.name
        phase: Literal["running", "succeeded", "failed", "cancelled"] = "cancelled" if cancelled else "failed"
    else:
        phase = "succeeded" if state.summary is not None else "running"
    return RenderStatus(
        render_id=state.render_id,
        state=phase,
        progress=proto_json(state.progress) if state.progress is not None else None,
        summary=proto_json(state.summary) if state.summary is not None else None,
        error=state.error.problem if state.error is not None else None,
    )


async def _progress_events(
    stub: render_service_pb2_grpc.RenderServiceStub, render_id: str, after: int
) -> AsyncIterator[bytes]:
    """WatchRender as SSE events numbered from 1, those after the first `after` only (delivered before a reconnect);
    the render's error becomes a last `error` event. A render id the gateway does not know raises before the first
    event (a 404 before the stream starts)."""
    call = stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id=render_id))
    number = 0
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            number += 1
            if number <= after:
                continue
            if response.HasField("progress"):
                stage = render_service_pb2.RenderStage.Name(response.progress.stage).removeprefix("RENDER_STAGE_")
                data, event = proto_json(response.progress), stage.lower()
            else:
                data, event = proto_json(response.summary), "summary"
            yield format_sse_event(data_str=json.dumps(data), event=event, id=str(number))
    except grpc.aio.AioRpcError as error:
        if number == 0:
            raise
        if number + 1 > after:
            problem = ProblemError.from_rpc(error).problem
            yield format_sse_event(
                data_str=problem.model_dump_json(exclude_none=True), event="error", id=str(number + 1)
            )
    finally:
        call.cancel()


async def _with_pings(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    pending = asyncio.ensure_future(anext(rest, None))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=_PING_SECONDS)
            if not done:
                yield format_sse_event(comment="ping")
                continue
            event = pending.result()
            if event is None:
                return
            yield event
            pending = asyncio.ensure_future(anext(rest, None))
    finally:
        pending.cancel()


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, as (first, last) inclusive; None for the whole file. A header this server does
    not serve as a range (several ranges, another unit, malformed) is ignored, as RFC 9110 allows: the whole file is
    sent. A range that starts past the end is 416."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(int(last), size - 1) if last else size - 1


def _unsatisfiable(size: int) -> ProblemError:
    return ProblemError(
        416,
        f"the range starts past the end of the {size}-byte MP4",
        field="Range",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def _mp4_bytes(
    stub: render_service_pb2_grpc.RenderServiceStub, render_id: str, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes `start`..`end` of the MP4, passed on a FetchResult chunk at a time (never the whole file in memory)."""
    call = stub.FetchResult(render_service_pb2.FetchResultRequest(render_id=render_id, offset=start))
    left = end - start + 1
    try:
        while left > 0:
            response = await call.read()
            if response is grpc.aio.EOF or not response.HasField("chunk"):
                raise RuntimeError(f"render {render_id}: the result stream ended {left} bytes short")
            data = response.chunk.data[:left]
            left -= len(data)
            yield data
    finally:
        call.cancel()


async def _upload_messages(
    request: Request, mime_type: str, size: int
) -> AsyncIterator[render_service_pb2.UploadMusicRequest]:
    """The body as UploadMusic messages, re-cut into the contract's ~256 KiB chunks as it arrives."""
    yield render_service_pb2.UploadMusicRequest(
        start=render_service_pb2.UploadMusicStart(mime_type=mime_type, size_bytes=size)
    )
    pending, offset = bytearray(), 0
    async for block in request.stream():
        pending += block
        while len(pending) >= CHUNK_BYTES:
            yield render_service_pb2.UploadMusicRequest(
                chunk=types_pb2.MediaChunk(offset=offset, data=bytes(pending[:CHUNK_BYTES]))
            )
            del pending[:CHUNK_BYTES]
            offset += CHUNK_BYTES
    if pending:
        yield render_service_pb2.UploadMusicRequest(chunk=types_pb2.MediaChunk(offset=offset, data=bytes(pending)))


def openapi_text(app: FastAPI) -> str:
    """The OpenAPI document as served and as committed in web/openapi.json, byte for byte."""
    if app.openapi_schema is None:
        document = app.openapi()
        # The script schema (the CLI's model) for the routes whose body is a script in JSON or YAML.
        script = ScriptModel.model_json_schema(ref_template="#/components/schemas/{model}")
        document["components"]["schemas"].update(script.pop("$defs", {}))
        document["components"]["schemas"]["ScriptModel"] = script
    return json.dumps(app.openapi_schema, indent=2, ensure_ascii=False) + "\n"
