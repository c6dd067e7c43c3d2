"""The `/v1` HTTP/JSON API: each route is one Gateway operation, translated to HTTP (statuses, headers, SSE)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import grpc
from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from fastapi.staticfiles import StaticFiles
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scenecast.v1 import render_service_pb2, script_service_pb2, types_pb2

from scenecast_cli.drafting import script_data
from services.common.limits import MAX_ID_CHARS, MAX_TARGET_SECONDS
from services.common.script_format import ScriptModel
from web.config import WebSettings
from web.gateway import Gateway, RenderEvent
from web.problems import EXCEPTION_HANDLERS, PROBLEM_JSON, Problem, ProblemError
from web.renders import RenderState
from web.scripts import render_request

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
# An SSE comment this often keeps proxies from closing a stream while a long scene renders without events.
_PING_SECONDS = 15.0
_CAPTIONS = {
    "srt": (types_pb2.SUBTITLE_FORMAT_SRT, "application/x-subrip; charset=utf-8"),
    "vtt": (types_pb2.SUBTITLE_FORMAT_WEBVTT, "text/vtt; charset=utf-8"),
}
_STUDIO = Path(__file__).resolve().parent / "studio"
# The studio runs only its own files: no inline script or style, no other origin (it must work with no network),
# and no framing; `blob:` images are the frames it draws from the finished video for scenes without a preview.
_STUDIO_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (a 304 when unchanged), so an upgraded server never runs yesterday's script.
    "Cache-Control": "no-cache",
}
_FORMATS = {
    "markdown": script_service_pb2.DOCUMENT_FORMAT_MARKDOWN,
    "plain": script_service_pb2.DOCUMENT_FORMAT_PLAIN,
}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# A render id as the gateway checks it, declared so that the OpenAPI document tells clients what it accepts.
_ID = rf"[A-Za-z0-9_-]{{1,{MAX_ID_CHARS}}}"
_OPTIONAL_ID = f"^(?:{_ID})?$"
RenderId = Annotated[str, PathParameter(pattern=f"^{_ID}$")]
SceneId = Annotated[str, PathParameter(pattern=f"^{_ID}$")]
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "The request cannot be served; `detail` says why and how to fix it.",
        "content": _PROBLEM_CONTENT,
    },
    "5XX": {
        "description": "The gateway or a service behind it failed; `detail` says what.",
        "content": _PROBLEM_CONTENT,
    },
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


class DraftDocument(BaseModel):
    """A document to draft from: its text, written in Markdown or plain text."""

    model_config = ConfigDict(extra="forbid")

    text: str
    format: Literal["markdown", "plain"]


class DraftBody(BaseModel):
    """What to draft a script from (a `topic`, or a `document`), with the options of `scenecast draft`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    topic: str = ""
    document: DraftDocument | None = None
    # Who the video is for, its tone, its language; empty: the provider's defaults. Language model providers only.
    audience: str = ""
    tone: str = ""
    language: str = ""
    # Length of narration to aim for, in seconds; 0 means 60.
    seconds: int = Field(0, ge=0, le=MAX_TARGET_SECONDS)
    # Script provider; empty: the script service's SCRIPT_PROVIDER.
    provider: str = ""
    # Most the draft may cost, in US dollars; 0 leaves it to the gateway's MAX_RENDER_COST_USD.
    max_cost_usd: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if bool(self.topic) == (self.document is not None):
            raise ValueError("give `topic` (a topic to write about) or `document` (a document's text), not both")
        return self


class DraftCreated(BaseModel):
    """A drafted script: `script` is in the script format, ready to edit and to POST to /v1/renders as JSON."""

    draft_id: str
    provider: str
    model: str
    cost_usd: float
    # The paid calls the provider made (DraftCall in proto3 JSON); empty for the offline outline provider.
    calls: list[dict[str, Any]]
    script: dict[str, Any]


def proto_json(message: Message) -> dict[str, Any]:
    """A gateway message in proto3's JSON mapping, with the .proto field names (as in the contract's comments)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def create_app(settings: WebSettings) -> FastAPI:
    """The app with its own gateway channel, opened and closed with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = Gateway(settings)
        try:
            yield
        finally:
            await app.state.gateway.close()

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
    _add_studio(app)
    return app


class _StudioFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(_STUDIO_HEADERS)
        return response


def _add_studio(app: FastAPI) -> None:
    """The web studio: its page at `/`, its script and stylesheet under `/studio/`."""

    @app.get("/", include_in_schema=False)
    async def studio() -> FileResponse:
        return FileResponse(_STUDIO / "index.html", headers=_STUDIO_HEADERS)

    app.mount("/studio", _StudioFiles(directory=_STUDIO), name="studio")


def _routes(settings: WebSettings) -> APIRouter:
    router = APIRouter(prefix="/v1", responses=_PROBLEMS)

    def gateway(request: Request) -> Gateway:
        return request.app.state.gateway  # type: ignore[no-any-return]

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        return Response(openapi_text(request.app), media_type="application/json")

    @router.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        """Ready when the gateway reports its RenderService SERVING (its media services are up); 503 otherwise."""
        await gateway(request).check_ready()
        return Health(status="ready")

    @router.get("/config")
    async def config(request: Request) -> dict[str, Any]:
        """Providers per media kind (with their defaults and prices), and the gateway's scene limits: GetConfig."""
        return proto_json(await gateway(request).config())

    @router.post("/estimate", openapi_extra={"requestBody": _SCRIPT_BODY})
    async def estimate(request: Request) -> dict[str, Any]:
        """Prices a script (JSON or YAML, the CLI's format) with the providers a render would use now."""
        return proto_json(await gateway(request).estimate(await _script(request, settings.max_body_bytes)))

    @router.post("/renders", status_code=202, response_model=RenderCreated, openapi_extra={"requestBody": _SCRIPT_BODY})
    async def create_render(request: Request, response: Response) -> RenderCreated:
        """Starts rendering a script (JSON or YAML, the CLI's format); answers once the gateway accepted it."""
        state = await gateway(request).renders.start(await _script(request, settings.max_body_bytes))
        base = f"/v1/renders/{state.render_id}"
        response.headers["Location"] = base
        return RenderCreated(render_id=state.render_id, status=base, events=f"{base}/events", video=f"{base}/video.mp4")

    @router.post(
        "/drafts",
        status_code=201,
        response_model=DraftCreated,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DraftBody"}}},
            }
        },
    )
    async def create_draft(request: Request) -> DraftCreated:
        """Drafts a script from a topic or a document (DraftScript): priced and capped like a render, its paid calls
        recorded in the spend ledger under `draft_id`. Not idempotent: a paid draft sent twice is paid twice."""
        body = await _capped_body(request, settings.max_body_bytes, "WEB_MAX_BODY_BYTES")
        try:
            wanted = DraftBody.model_validate_json(body)
        except ValidationError as error:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None
        source: dict[str, Any] = {"topic": wanted.topic}
        if wanted.document is not None:
            document = wanted.document
            source = {"document": script_service_pb2.Document(text=document.text, format=_FORMATS[document.format])}
        answer = await gateway(request).draft(
            script_service_pb2.DraftScriptRequest(
                **source,
                audience=wanted.audience,
                target_seconds=wanted.seconds,
                tone=wanted.tone,
                language=wanted.language,
                provider=wanted.provider,
                max_cost_usd=wanted.max_cost_usd,
            )
        )
        draft = answer.draft
        return DraftCreated(
            draft_id=answer.draft_id,
            provider=draft.provider,
            model=draft.model,
            cost_usd=draft.cost_usd,
            calls=[proto_json(call) for call in draft.calls],
            script=script_data(draft),
        )

    @router.get("/renders/{render_id}", response_model=RenderStatus)
    async def render_status(request: Request, render_id: RenderId) -> RenderStatus:
        """The render's latest progress, and its summary or error once it ended."""
        return status_of(await gateway(request).renders.get(render_id))

    @router.post("/renders/{render_id}/cancel", response_model=CancelResult)
    async def cancel_render(request: Request, render_id: RenderId) -> CancelResult:
        """Stops a running render at once: CancelRender."""
        return CancelResult(cancelled=await gateway(request).cancel(render_id))

    @router.get(
        "/renders/{render_id}/events",
        response_class=Response,
        responses={
            200: {"description": "The render's events, described above.", "content": {"text/event-stream": {}}},
            204: {"description": "No events after Last-Event-ID."},
        },
    )
    async def render_events(
        request: Request,
        render_id: RenderId,
        last_event_id: Annotated[int, Header(alias="Last-Event-ID", ge=0)] = 0,
    ) -> Response:
        """Server-Sent Events: one per progress step (named after its stage: `accepted`, `asset_ready`,
        `scene_encoded`, `muxing`, `streaming`; scene steps carry `scene_index` and `scene_id`), then `summary` or
        `error` (a problem document), then the stream ends.

        Event ids count the render's events from 1 in the order the gateway recorded them, which WatchRender replays
        identically on every call: resuming with `Last-Event-ID: n` sends exactly the events after the n-th. 204 when
        there are none left (the render ended), which tells EventSource to stop reconnecting.
        """
        events = _sse(gateway(request).events(render_id, after=last_event_id))
        # Read up to the first event to send before answering: an unknown render is then a 404, not an empty stream.
        first = await anext(events, None)
        if first is None:
            return Response(status_code=204)
        # no-store and X-Accel-Buffering: no proxy may keep or hold back the events.
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return EventSourceResponse(_with_pings(first, events), headers=headers)

    @router.get(
        "/renders/{render_id}/video.mp4",
        response_class=StreamingResponse,
        responses={200: {"content": {"video/mp4": {}}}, 206: {"content": {"video/mp4": {}}}},
    )
    async def render_video(
        request: Request, render_id: RenderId, range_header: Annotated[str | None, Header(alias="Range")] = None
    ) -> StreamingResponse:
        """The MP4 (waiting for the render to end, like FetchResult), whole or one byte range (206; 416 when the range
        starts past the end). A browser's `<video>` seeks with ranges."""
        summary = await gateway(request).renders.finished(render_id)
        size = summary.size_bytes
        span = byte_range(range_header, size)
        start, end = span if span is not None else (0, size - 1)
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Length": str(end - start + 1),
            "Content-Disposition": f'inline; filename="{summary.render_id}.mp4"',
            # A finished render's MP4 never changes under its id.
            "Cache-Control": "private, max-age=3600",
        }
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return StreamingResponse(
            gateway(request).video(render_id, start, end),
            status_code=206 if span is not None else 200,
            media_type="video/mp4",
            headers=headers,
        )

    @router.get(
        "/renders/{render_id}/scenes/{scene_id}/preview.jpg",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    async def scene_preview(request: Request, render_id: RenderId, scene_id: SceneId) -> Response:
        """A scene's image as a small JPEG (at most 320 pixels on its longer side), there as soon as the image is
        made: the scene's `asset_ready` event names this URL as its `preview`. Waits for it while the render runs;
        404 when the render ended without one (an avatar render, or no such scene)."""
        jpeg = await gateway(request).preview(render_id, scene_id)
        # A scene's preview never changes under its render's id, like the MP4.
        headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    @router.get(
        "/renders/{render_id}/captions.{caption_format}",
        response_class=Response,
        responses={200: {"content": {"application/x-subrip": {}, "text/vtt": {}}}},
    )
    async def render_captions(request: Request, render_id: RenderId, caption_format: Literal["srt", "vtt"]) -> Response:
        """The captions as SRT or WebVTT (waiting for the render to end), exactly as the assembler wrote them."""
        summary = await gateway(request).renders.finished(render_id)
        wanted, media_type = _CAPTIONS[caption_format]
        for subtitle in summary.subtitles:
            if subtitle.format == wanted:
                return Response(subtitle.text.encode("utf-8"), media_type=media_type)
        raise ProblemError(
            404,
            f"render {render_id} has no {caption_format.upper()} captions: it was made without captions, or not "
            f"through this API (which asks for both); add `{caption_format}` to finishing.sidecars",
        )

    @router.post(
        "/music",
        status_code=201,
        openapi_extra={"requestBody": {"required": True, "content": {"audio/*": {"schema": {"format": "binary"}}}}},
    )
    async def upload_music(request: Request) -> dict[str, Any]:
        """Uploads background music (the raw file as the body, Content-Type audio/*, Content-Length set); name the
        returned `upload_id` in the script's `finishing.music.upload`."""
        # Content-Type and Content-Length describe the body, so they are read here rather than declared as
        # parameters: OpenAPI ignores a Content-Type parameter, and a client generated from the document would
        # send a Content-Length of its own instead of the body's.
        mime_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        declared = request.headers.get("content-length", "")
        content_length = int(declared) if declared.isdigit() else None
        # A concrete audio type: the gateway checks the upload against it (a wildcard would come back naming the
        # gRPC field).
        if not mime_type.startswith("audio/") or mime_type == "audio/*":
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
        # The server reads no more than Content-Length bytes, so the cap above bounds the body too.
        return proto_json(await gateway(request).upload_music(mime_type, content_length, request.stream()))

    @router.get("/spend")
    async def spend(
        request: Request,
        group_by: Literal["day", "provider", "render"] = "day",
        # A string of the date's own form, not a `date`: pydantic would also take a number of seconds ("0" is
        # 1970-01-01); the gateway refuses a day that does not exist, naming since_day.
        since_day: Annotated[
            str,
            Query(
                description="First UTC day included, YYYY-MM-DD; omitted means every day.",
                pattern=r"^\d{4}-\d{2}-\d{2}$",
                json_schema_extra={"format": "date"},
            ),
        ] = "",
        render_id: Annotated[str, Query(description="Only this render; empty means all.", pattern=_OPTIONAL_ID)] = "",
    ) -> dict[str, Any]:
        """Recorded provider spend, grouped by day, provider or render: GetSpend."""
        return proto_json(await gateway(request).spend(group_by, since_day, render_id))

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
    """The body as a script in the CLI's format (JSON or YAML, by Content-Type), as a RenderRequest."""
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
        raise ProblemError(400, "the script must be UTF-8 text", field="body") from None
    return render_request(text, kind)


def progress_json(progress: render_service_pb2.RenderProgress) -> dict[str, Any]:
    """A progress event in proto3 JSON, its preview's bytes replaced by the route that serves them (`preview`, only
    when there is one): base64 in every event and status would only bloat them."""
    data = proto_json(progress)
    del data["preview_jpeg"]
    if progress.preview_jpeg:
        data["preview"] = f"/v1/renders/{progress.render_id}/scenes/{progress.scene_id}/preview.jpg"
    return data


def status_of(state: RenderState) -> RenderStatus:
    if state.error is not None:
        cancelled = state.error.problem.grpc_status == grpc.StatusCode.CANCELLED.name
        phase: Literal["running", "succeeded", "failed", "cancelled"] = "cancelled" if cancelled else "failed"
    else:
        phase = "succeeded" if state.summary is not None else "running"
    return RenderStatus(
        render_id=state.render_id,
        state=phase,
        progress=progress_json(state.progress) if state.progress is not None else None,
        summary=proto_json(state.summary) if state.summary is not None else None,
        error=state.error.problem if state.error is not None else None,
    )


async def _sse(events: AsyncIterator[tuple[int, RenderEvent]]) -> AsyncIterator[bytes]:
    """Each render event as an SSE event: named after its stage (or `summary`, `error`), its number as its id."""
    async for number, event in events:
        if isinstance(event, ProblemError):
            data, name = event.problem.model_dump(exclude_none=True), "error"
        elif isinstance(event, render_service_pb2.RenderSummary):
            data, name = proto_json(event), "summary"
        else:
            data = progress_json(event)
            name = render_service_pb2.RenderStage.Name(event.stage).removeprefix("RENDER_STAGE_").lower()
        yield format_sse_event(data_str=json.dumps(data), event=name, id=str(number))


async def _with_pings(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The events, with a comment line whenever none came for a while."""
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


def openapi_text(app: FastAPI) -> str:
    """The OpenAPI document as served and as committed in web/openapi.json, byte for byte."""
    if app.openapi_schema is None:
        document = app.openapi()
        schemas = document["components"]["schemas"]
        # Models no route names as its body or answer: the script (the CLI's model) that the script routes take as
        # JSON or YAML, the problem document of every error, and the draft request (read with the body cap).
        for model in (ScriptModel, Problem, DraftBody):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        # A parameter that does not fit is a 400 problem here (problems.py), not FastAPI's 422.
        for operation in (op for path in document["paths"].values() for op in path.values()):
            operation["responses"].pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
    return json.dumps(app.openapi_schema, indent=2, ensure_ascii=False) + "\n"
