"""Calls the gateway: renders a script to a file while reporting progress, uploads music, fetches the configuration
and the recorded spend."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import grpc
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, script_service_pb2, types_pb2

from services.common.chunks import iter_file_chunks
from services.common.errors import ORIGIN_KEY
from services.common.server import MAX_MESSAGE_BYTES
from services.common.tls import client_channel

ProgressCallback = Callable[[render_service_pb2.RenderProgress], None]


def _channel(address: str) -> grpc.Channel:
    """A channel to the gateway, with TLS and a bearer token when the environment asks for them.

    SCENECAST_TLS (system CAs), SCENECAST_CA_FILE, SCENECAST_CERT_FILE / SCENECAST_KEY_FILE (mTLS) and
    SCENECAST_SERVER_NAME choose TLS; SCENECAST_TOKEN is sent as `authorization: Bearer` (an environment variable,
    not a flag, so it never shows in `ps`).
    """
    env = os.environ
    return client_channel(
        address,
        tls=env.get("SCENECAST_TLS", "").lower() in ("1", "true", "yes"),
        ca_file=env.get("SCENECAST_CA_FILE") or None,
        cert_file=env.get("SCENECAST_CERT_FILE") or None,
        key_file=env.get("SCENECAST_KEY_FILE") or None,
        server_name=env.get("SCENECAST_SERVER_NAME") or None,
        token=env.get("SCENECAST_TOKEN") or None,
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )


# A dropped connection is re-attached to this many times, waiting a little longer each time (seconds).
REATTACH_ATTEMPTS = 8
REATTACH_FIRST_WAIT_SECONDS = 0.5


def render_to_file(
    address: str,
    request: render_service_pb2.RenderRequest,
    output: Path,
    on_progress: ProgressCallback | None = None,
    timeout_seconds: float | None = None,
) -> render_service_pb2.RenderSummary:
    """Streams the MP4 to `output` as it arrives; the file appears only when complete (written beside, then renamed).

    If the connection drops (UNAVAILABLE) after the render started, the render is still running on the gateway: this
    re-attaches with WatchRender (progress) and FetchResult (the MP4 from the bytes already written), several times
    with growing waits.
    """
    partial = output.with_name(output.name + ".part")
    deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
    render_id = ""

    def left() -> float | None:
        return max(0.1, deadline - time.monotonic()) if deadline else None

    def write(handle: BinaryIO, chunk: types_pb2.MediaChunk) -> None:
        if chunk.offset != handle.tell():
            raise RuntimeError(f"MP4 chunk at offset {chunk.offset}, expected {handle.tell()}")
        handle.write(chunk.data)

    def progress(event: render_service_pb2.RenderProgress) -> None:
        nonlocal render_id
        render_id = event.render_id or render_id
        if on_progress is not None:
            on_progress(event)

    try:
        with _create_fresh(partial) as handle:
            try:
                with _channel(address) as channel:
                    for response in render_service_pb2_grpc.RenderServiceStub(channel).Render(request, timeout=left()):
                        kind = response.WhichOneof("payload")
                        if kind == "progress":
                            progress(response.progress)
                        elif kind == "chunk":
                            write(handle, response.chunk)
                        elif kind == "summary":
                            summary = response.summary
                            break
                    else:
                        raise RuntimeError("the render stream ended without a summary")
            except grpc.RpcError as error:
                if not render_id or not connection_lost(error):
                    raise
                summary = _reattach(address, render_id, handle, progress, write, left)
        os.replace(partial, output)
        return summary
    finally:
        partial.unlink(missing_ok=True)


_SIDECAR_SUFFIXES = {types_pb2.SUBTITLE_FORMAT_SRT: ".srt", types_pb2.SUBTITLE_FORMAT_WEBVTT: ".vtt"}


def write_sidecars(summary: render_service_pb2.RenderSummary, video: Path) -> list[Path]:
    """Writes each subtitle file the render delivered beside the video (out.mp4: out.srt, out.vtt), as the summary
    carries it: UTF-8, line endings untouched."""
    written = []
    for subtitle in summary.subtitles:
        suffix = _SIDECAR_SUFFIXES.get(subtitle.format)
        if suffix is None:
            continue  # a format from a newer contract than this client knows
        path = video.with_suffix(suffix)
        partial = path.with_name(path.name + ".part")
        try:
            with _create_fresh(partial) as handle:
                handle.write(subtitle.text.encode("utf-8"))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        written.append(path)
    return written


def credits_text(summary: render_service_pb2.RenderSummary) -> str:
    """The credits of the stock media in a render, as plain text in the libraries' own wording: a line per piece of
    media ("Video by Jane Doe on Pexels (its page)") with its author's page below it, then each library's link and
    licence. Empty when nothing shown needs credit."""
    lines = []
    for credit in summary.credits:
        lines.append(f"{credit.attribution} ({credit.source_url})" if credit.source_url else credit.attribution)
        if credit.author_url:
            lines.append(f"  {credit.author}: {credit.author_url}")
    licenses = list(dict.fromkeys(credit.license for credit in summary.credits if credit.license))
    return "\n".join([*lines, "", *licenses]) + "\n" if lines else ""


def write_credits(summary: render_service_pb2.RenderSummary, video: Path) -> Path | None:
    """Writes the render's credits beside the video (out.mp4: out.credits.txt), as the libraries' licences ask;
    None, and no file, when nothing shown needs credit. The file belongs to the video at that name: one left by an
    earlier video there is removed, since it would credit media the new video does not show."""
    text = credits_text(summary)
    path = video.with_suffix(".credits.txt")
    if not text:
        path.unlink(missing_ok=True)
        return None
    partial = path.with_name(path.name + ".part")
    try:
        with _create_fresh(partial) as handle:
            handle.write(text.encode("utf-8"))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _create_fresh(partial: Path) -> BinaryIO:
    """Creates a `.part` file afresh: a leftover of an earlier run is removed first, and the file is made with
    O_EXCL | O_NOFOLLOW, so a link planted at that name (say, in a shared folder) is never written through and its
    target stays as it was; the rename that completes the file then replaces a link at the final name, too.

    Made with the user's umask (0644 typically), not 0600 like scenecast's state: the video is the user's own file,
    made where they asked, and should read like any other file they create there.
    """
    partial.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(partial, flags, 0o666), "wb")


def connection_lost(error: grpc.RpcError) -> bool:
    """UNAVAILABLE from the transport, not a status the gateway sent (those carry its origin marker): only then is
    the render still running and worth re-attaching to."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
        return False
    return not any(key == ORIGIN_KEY for key, _ in (error.trailing_metadata() or ()))  # type: ignore[attr-defined]


def _reattach(
    address: str,
    render_id: str,
    handle: BinaryIO,
    progress: ProgressCallback,
    write: Callable[[BinaryIO, types_pb2.MediaChunk], None],
    left: Callable[[], float | None],
) -> render_service_pb2.RenderSummary:
    wait = REATTACH_FIRST_WAIT_SECONDS
    for attempt in range(1, REATTACH_ATTEMPTS + 1):
        time.sleep(wait)
        try:
            with _channel(address) as channel:
                stub = render_service_pb2_grpc.RenderServiceStub(channel)
                for response in stub.WatchRender(
                    render_service_pb2.WatchRenderRequest(render_id=render_id), timeout=left()
                ):
                    if response.HasField("progress"):
                        progress(response.progress)
                fetch = render_service_pb2.FetchResultRequest(render_id=render_id, offset=handle.tell())
                for response in stub.FetchResult(fetch, timeout=left()):
                    if response.HasField("chunk"):
                        write(handle, response.chunk)
                    else:
                        return response.summary
                raise RuntimeError("the result stream ended without a summary")
        except grpc.RpcError as error:
            if not connection_lost(error) or attempt == REATTACH_ATTEMPTS:
                raise
            wait = min(wait * 2, 8.0)
    raise AssertionError("unreachable")


def get_config(address: str, timeout_seconds: float = 30.0) -> render_service_pb2.GetConfigResponse:
    with _channel(address) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        return stub.GetConfig(render_service_pb2.GetConfigRequest(), timeout=timeout_seconds)


def estimate_cost(
    address: str, request: render_service_pb2.RenderRequest, timeout_seconds: float = 30.0
) -> render_service_pb2.EstimateCostResponse:
    with _channel(address) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        return stub.EstimateCost(render_service_pb2.EstimateCostRequest(render=request), timeout=timeout_seconds)


def upload_music(
    address: str, path: Path, mime_type: str, timeout_seconds: float = 300.0
) -> render_service_pb2.UploadMusicResponse:
    """Streams a music file to the gateway a chunk at a time; the returned id names it in `RenderRequest.music`."""

    def requests() -> Iterator[render_service_pb2.UploadMusicRequest]:
        yield render_service_pb2.UploadMusicRequest(
            start=render_service_pb2.UploadMusicStart(mime_type=mime_type, size_bytes=path.stat().st_size)
        )
        for chunk in iter_file_chunks(path):
            yield render_service_pb2.UploadMusicRequest(chunk=chunk)

    with _channel(address) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        return stub.UploadMusic(requests(), timeout=timeout_seconds)


def get_spend(
    address: str, request: render_service_pb2.GetSpendRequest, timeout_seconds: float = 30.0
) -> render_service_pb2.GetSpendResponse:
    with _channel(address) as channel:
        return render_service_pb2_grpc.RenderServiceStub(channel).GetSpend(request, timeout=timeout_seconds)


def draft_script(
    address: str, request: script_service_pb2.DraftScriptRequest, timeout_seconds: float = 600.0
) -> render_service_pb2.RenderServiceDraftScriptResponse:
    """One DraftScript call, never repeated: a paid draft that was answered would be paid again."""
    with _channel(address) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        return stub.DraftScript(
            render_service_pb2.RenderServiceDraftScriptRequest(request=request), timeout=timeout_seconds
        )
