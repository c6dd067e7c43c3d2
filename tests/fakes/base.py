"""Runs an aiohttp app on 127.0.0.1 in a background thread, records requests, and injects scripted faults."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    """A canned answer given instead of the real one to the next request whose path starts with `path_prefix`.

    `status` 0 with `hang_seconds` makes the server wait before answering normally (a slow provider); `held` makes
    it wait until the test sets that event (a provider slow for exactly as long as the test needs); `reset` closes
    the connection without an answer.
    """

    path_prefix: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang_seconds: float = 0.0
    reset: bool = False
    method: str | None = None
    held: threading.Event | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeServer:
    """Subclasses add routes in `routes()`; `start()` returns the base URL (http, or https with `ssl_context`)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        # Nonzero: every request is answered with this status and a body that echoes the credentials it carried,
        # as a vendor or a proxy in front of it may do (see `echo_credentials`).
        self.echo_key_status = 0
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix) and method in (None, r.method)]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self.echo_key_status = 0

    def start(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self.base_url

    async def _start(self) -> None:
        # A short shutdown: a fault that hangs a request must not hold up the end of the test session.
        app = web.Application(middlewares=[self._record_and_inject], client_max_size=64 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @web.middleware
    async def _record_and_inject(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.requests.append(
                RecordedRequest(request.method, request.path, dict(request.query), dict(request.headers), body)
            )
            fault = next(
                (
                    f
                    for f in self.faults
                    if request.path.startswith(f.path_prefix) and f.method in (None, request.method)
                ),
                None,
            )
            if fault is not None:
                self.faults.remove(fault)
        if self.echo_key_status:
            return echo_credentials(request, self.echo_key_status)
        if fault is not None:
            if fault.reset:
                assert request.transport is not None
                request.transport.close()
                raise web.HTTPInternalServerError()
            if fault.hang_seconds:
                await asyncio.sleep(fault.hang_seconds)
            if fault.held is not None:
                await asyncio.to_thread(fault.held.wait)
            if fault.status:
                if isinstance(fault.body, (bytes, str)):
                    return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        return await handler(request)


# Headers that carry a vendor's credentials: OpenAI and Replicate `Authorization: Bearer`, Synthesia a bare
# `Authorization`, HeyGen `X-Api-Key`, a self-hosted server behind Basic auth `Authorization: Basic`.
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")


class VideoFilesServer(FakeServer):
    """A vendor that serves the videos it made from its own /files/{name} path, as vendors serve pre-signed links.

    `failing_downloads` (that many downloads answer 503) is restored by reset(), which also forgets the files.
    """

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, bytes] = {}
        self.failing_downloads = 0

    def reset(self) -> None:
        super().reset()
        self.files.clear()
        self.failing_downloads = 0

    def downloads(self) -> list[RecordedRequest]:
        return self.requests_to("/files/", "GET")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        data = self.files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        if self.failing_downloads > 0:
            self.failing_downloads -= 1
            return web.Response(status=503, text="Service Unavailable")
        return web.Response(body=data, content_type="video/mp4")


def echo_credentials(request: web.Request, status: int) -> web.Response:
    """An error whose every text field repeats the request's credentials: raw, without their scheme, and (for Basic
    auth) decoded, in the fields each vendor's client reads (`error.message`, `detail`, `title`, `message`)."""
    echoed = []
    for name in _CREDENTIAL_HEADERS:
        value = request.headers.get(name)
        if value is None:
            continue
        scheme, _, credential = value.partition(" ")
        echoed += [f"{name}: {value}", credential or scheme]
        if scheme.lower() == "basic":
            echoed.append(base64.b64decode(credential).decode())
    message = f"Incorrect API key provided: {' | '.join(echoed)}"
    body = {
        "error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"},
        "detail": message,
        "title": message,
        "message": message,
    }
    return web.json_response(body, status=status)
