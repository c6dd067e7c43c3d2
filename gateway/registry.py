"""Renders that outlive their calls (AIP-151 style): each runs as a task owned by the gateway, records its progress
and writes its MP4 to disk, so callers can attach, detach and re-attach, and nobody holds a whole video in memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scenecast.v1 import render_service_pb2, types_pb2

from gateway.render import RenderJob
from services.common.chunks import CHUNK_BYTES
from services.common.errors import AlreadyExists, Cancelled, NotFound, ScenecastError

_LOGGER = logging.getLogger(__name__)

# How often expired results are looked for, in seconds.
_JANITOR_SECONDS = 30.0

Event = render_service_pb2.RenderProgress | types_pb2.MediaChunk | render_service_pb2.RenderSummary


@dataclass
class RenderRecord:
    """One render's state as callers see it: progress so far, MP4 bytes written so far, and how it ended."""

    render_id: str
    mp4_path: Path
    progress: list[render_service_pb2.RenderProgress] = field(default_factory=list)
    summary: render_service_pb2.RenderSummary | None = None
    error: ScenecastError | None = None
    size: int = 0
    finished_at: float | None = None
    attached: int = 0
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    async def changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def follow(self, *, progress: bool, chunks: bool, offset: int = 0) -> AsyncIterator[Event]:
        """Yields progress events and/or MP4 chunks (read back from disk) as they come, then the summary.

        Raises the render's error when it failed. The caller counts as attached while it iterates.
        """
        seen = 0 if progress else len(self.progress)
        position = offset
        self.attached += 1
        try:
            while True:
                async with self._changed:
                    while not (
                        (progress and len(self.progress) > seen) or (chunks and self.size > position) or self.done
                    ):
                        await self._changed.wait()
                # Indexes, not slices: events appended while these are sent are picked up, never skipped.
                while progress and seen < len(self.progress):
                    yield self.progress[seen]
                    seen += 1
                if chunks and self.size > position:
                    end = self.size  # the writer may append while these are sent; the rest goes next round
                    for chunk in _read_chunks(self.mp4_path, position, end):
                        yield chunk
                    position = end
                if self.done and (not progress or seen == len(self.progress)) and (not chunks or position >= self.size):
                    if self.error is not None:
                        raise self.error
                    assert self.summary is not None
                    yield self.summary
                    return
        finally:
            self.attached -= 1


def _read_chunks(path: Path, start: int, end: int) -> Iterator[types_pb2.MediaChunk]:
    """The bytes from `start` to `end`, read from disk one chunk at a time as the caller takes them."""
    with path.open("rb") as handle:
        handle.seek(start)
        while start < end:
            data = handle.read(min(CHUNK_BYTES, end - start))
            if not data:
                return
            yield types_pb2.MediaChunk(offset=start, data=data)
            start += len(data)


class RenderRegistry:
    """Runs renders, finds them by id, cancels orphans, and removes results once they expire."""

    def __init__(self, output_dir: Path, result_ttl_seconds: float, orphan_grace_seconds: float) -> None:
        self._output_dir = output_dir
        self._ttl = result_ttl_seconds
        self._grace = orphan_grace_seconds
        self._records: dict[str, RenderRecord] = {}
        self._janitor: asyncio.Task[None] | None = None

    def start(self, job: RenderJob) -> RenderRecord:
        if job.render_id in self._records:
            raise AlreadyExists(
                f"render_id {job.render_id!r} is already in use; re-attach with WatchRender/FetchResult or pick another"
            )
        self._output_dir.mkdir(parents=True, exist_ok=True)
        record = RenderRecord(job.render_id, self._output_dir / f"{job.render_id}.mp4")
        record.task = asyncio.create_task(self._run(record, job))
        self._records[job.render_id] = record
        if self._janitor is None:
            self._janitor = asyncio.create_task(self._expire_results())
        return record

    def get(self, render_id: str) -> RenderRecord:
        record = self._records.get(render_id)
        if record is None:
            raise NotFound(f"render_id {render_id!r} is unknown or its result has expired")
        return record

    def cancel(self, render_id: str) -> bool:
        record = self.get(render_id)
        if record.done or record.task is None:
            return False
        record.task.cancel()
        return True

    async def attach(
        self, record: RenderRecord, *, progress: bool, chunks: bool, offset: int = 0
    ) -> AsyncIterator[Event]:
        """Follows a render; when the last caller leaves it while it runs, starts its orphan timer."""
        events = record.follow(progress=progress, chunks=chunks, offset=offset)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # runs follow()'s finally now, so `attached` is current below
            if record.attached == 0 and not record.done:
                asyncio.get_running_loop().call_later(self._grace, self._cancel_if_orphaned, record)

    def _cancel_if_orphaned(self, record: RenderRecord) -> None:
        if record.attached == 0 and not record.done and record.task is not None:
            _LOGGER.info("render %s: no caller for %.0f s, cancelling", record.render_id, self._grace)
            record.task.cancel()

    async def _run(self, record: RenderRecord, job: RenderJob) -> None:
        try:
            with record.mp4_path.open("wb") as mp4:
                async for response in job.run():
                    kind = response.WhichOneof("payload")
                    if kind == "progress":
                        record.progress.append(response.progress)
                    elif kind == "chunk":
                        mp4.write(response.chunk.data)
                        mp4.flush()
                        record.size += len(response.chunk.data)
                    else:
                        record.summary = response.summary
                    await record.changed()
        except asyncio.CancelledError:
            record.error = Cancelled(f"render {record.render_id} was cancelled")
        except ScenecastError as error:
            record.error = error
        except Exception as error:  # noqa: BLE001 - reported to every caller as INTERNAL, logged once here
            _LOGGER.exception("render %s failed", record.render_id)
            record.error = ScenecastError(f"render {record.render_id} failed: internal error; see gateway logs")
            record.error.__cause__ = error
        finally:
            record.finished_at = time.monotonic()
            if record.error is not None:
                record.mp4_path.unlink(missing_ok=True)
            await record.changed()

    async def _expire_results(self) -> None:
        while True:
            await asyncio.sleep(min(_JANITOR_SECONDS, self._ttl))
            now = time.monotonic()
            for render_id, record in list(self._records.items()):
                if record.finished_at is not None and now - record.finished_at > self._ttl and record.attached == 0:
                    record.mp4_path.unlink(missing_ok=True)
                    del self._records[render_id]

    async def close(self) -> None:
        """Cancels running renders and the janitor (gateway shutdown)."""
        tasks = [r.task for r in self._records.values() if r.task is not None and not r.done]
        if self._janitor is not None:
            tasks.append(self._janitor)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
