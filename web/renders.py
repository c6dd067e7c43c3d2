"""What this process knows of renders: each one it started or was asked about is followed with WatchRender, which
also keeps it attached on the gateway (not an orphan), so status and downloads are answered without a new call."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field

import grpc
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc

from web.problems import ProblemError

# Renders remembered at once; beyond it the oldest ended one is forgotten (asking for it again re-reads it from the
# gateway, which keeps results for its RESULT_TTL_SECONDS), so memory stays bounded however many renders are made.
MAX_REMEMBERED = 1000
# Statuses a WatchRender answers for an id that names no render; any other error is the render's own ending.
_NO_SUCH_RENDER = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


@dataclass
class RenderState:
    """The latest of a render's events as this process has read them."""

    render_id: str
    progress: render_service_pb2.RenderProgress | None = None
    summary: render_service_pb2.RenderSummary | None = None
    error: ProblemError | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, response: render_service_pb2.WatchRenderResponse) -> None:
        if response.HasField("progress"):
            self.progress = response.progress
        else:
            self.summary = response.summary


class RenderBook:
    """Starts renders and follows them; one follower per render, cancelled by `close`."""

    def __init__(self, stub: render_service_pb2_grpc.RenderServiceStub) -> None:
        self._stub = stub
        self._states: OrderedDict[str, RenderState] = OrderedDict()
        self._followers: set[asyncio.Task[None]] = set()

    async def start(self, request: render_service_pb2.RenderRequest) -> RenderState:
        """Starts a render and returns once the gateway accepted it (or raises its refusal, before anything is spent).

        The Render call would stream the whole MP4 here for nothing: once WatchRender follows the render, the call is
        dropped (the render belongs to the gateway, not to the call), and downloads use FetchResult.
        """
        call = self._stub.Render(request)
        try:
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("progress"):
                raise ProblemError(502, "the gateway ended the render stream before accepting the render")
            return await self._follow(first.progress.render_id)
        finally:
            call.cancel()

    async def get(self, render_id: str) -> RenderState:
        """The render's state; NOT_FOUND (as a problem) when the gateway has no such render."""
        state = self._states.get(render_id)
        return state if state is not None else await self._follow(render_id)

    async def finished(self, render_id: str) -> render_service_pb2.RenderSummary:
        """Waits for the render to end, like FetchResult does; raises its error if it failed."""
        state = await self.get(render_id)
        await state.ended.wait()
        if state.error is not None:
            raise state.error
        assert state.summary is not None
        return state.summary

    async def close(self) -> None:
        for task in self._followers:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._followers, return_exceptions=True)

    async def _follow(self, render_id: str) -> RenderState:
        watch = self._stub.WatchRender(render_service_pb2.WatchRenderRequest(render_id=render_id))
        state = RenderState(render_id)
        try:
            first = await watch.read()
        except grpc.aio.AioRpcError as error:
            problem = ProblemError.from_rpc(error)
            if error.code() in _NO_SUCH_RENDER or problem.problem.status == 502:
                raise problem from None
            state.error = problem  # it exists, and already ended with this error
            state.ended.set()
        else:
            if first is grpc.aio.EOF:
                raise ProblemError(502, "the gateway ended the progress stream without a summary")
            state.apply(first)
            task = asyncio.create_task(self._read_rest(state, watch))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)
        self._remember(state)
        return state

    async def _read_rest(self, state: RenderState, watch: grpc.aio.UnaryStreamCall) -> None:
        try:
            while state.summary is None and (response := await watch.read()) is not grpc.aio.EOF:
                state.apply(response)
            if state.summary is None:
                state.error = ProblemError(502, "the gateway ended the progress stream without a summary")
        except asyncio.CancelledError:
            # This process is stopping; whoever waits on the render learns it rather than getting nothing.
            state.error = ProblemError(503, "the web service is stopping; ask again in a moment")
            raise
        except grpc.aio.AioRpcError as error:
            state.error = ProblemError.from_rpc(error)
            if state.error.problem.status == 502 and self._states.get(state.render_id) is state:
                # The connection to the gateway was lost, not the render: the next question follows it afresh.
                del self._states[state.render_id]
        finally:
            state.ended.set()

    def _remember(self, state: RenderState) -> None:
        self._states[state.render_id] = state
        self._states.move_to_end(state.render_id)
        if len(self._states) > MAX_REMEMBERED:
            ended = next((key for key, value in self._states.items() if value.ended.is_set()), None)
            if ended is not None:
                del self._states[ended]
