"""Renders that outlive their calls (AIP-151 style) and any one gateway replica.

A render runs as a task on the replica that accepted it (its owner), which writes the MP4 to the results folder and
appends to the render's log in a `RenderStore`: its progress events, the bytes written so far, and how it ended. Any
replica answers WatchRender and FetchResult by replaying that log (and reading the MP4 from the results folder, a
shared volume when there are several replicas), and CancelRender by setting a flag in the store.

Two stores behind one interface: `MemoryRenderStore` (one gateway, the default) and `RedisRenderStore`
(RENDER_STATE_URL, shared by every replica). Each owner renews a lease on its running renders every tick and reads
their cancel flags in the same round trip: a flag, not pub/sub, so a cancel sent just after the render was accepted,
before its owner ever looked, is still seen (pub/sub drops messages nobody is subscribed to yet). An owner that dies
stops renewing; the first replica that then looks at the render ends it UNAVAILABLE, so nothing stays "running".

The MP4 is written to `<render_id>.<token>.mp4.part` (created exclusively, 0600, never through a link) and renamed to
`<render_id>.mp4` when whole, then a JSON sidecar `<render_id>.json` (summary, progress, expiry) is written beside it.
At start-up and every janitor round, temp files of renders running nowhere are removed, finished results are
re-indexed from their sidecars (FetchResult works after a restart) and expired ones removed.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import redis.asyncio as aioredis
from google.protobuf import json_format
from redis.exceptions import RedisError
from scenecast.v1 import render_service_pb2, types_pb2

from gateway.config import GatewaySettings
from gateway.render import RenderJob
from services.common.chunks import CHUNK_BYTES
from services.common.errors import AlreadyExists, NotFound, ProviderUnavailable, ScenecastError
from services.common.limits import MAX_ID_CHARS
from services.common.observability import RENDERS_IN_FLIGHT
from services.common.state import PRIVATE_CREATE_FLAGS, create_private_file, private_dir

_LOGGER = logging.getLogger(__name__)

# How often expired results and stale temp files are looked for, in seconds.
_JANITOR_SECONDS = 30.0
# Longest an owner waits between lease renewals (and cancel checks), and a watcher between looks at its render.
_TICK_SECONDS = 1.0
# A result file's name, or a temp file's: the render id comes first (ids have no dots).
_RESULT_NAME = re.compile(rf"(?P<id>[A-Za-z0-9_-]{{1,{MAX_ID_CHARS}}})\.(?:mp4|json|[0-9a-f]+\.(?:mp4|json)\.part)")

Event = render_service_pb2.RenderProgress | types_pb2.MediaChunk | render_service_pb2.RenderSummary


@dataclass(frozen=True)
class Ending:
    """How a render ended: its summary, or the status its callers get."""

    summary: render_service_pb2.RenderSummary | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""

    def error(self) -> ScenecastError:
        return RenderFailed(self.code, self.message)


class RenderFailed(ScenecastError):
    """A render's recorded failure, raised to every caller that follows it, on any replica."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _gone(render_id: str) -> Ending:
    return Ending(
        code=grpc.StatusCode.UNAVAILABLE,
        message=f"render {render_id} stopped: the gateway replica running it went away; run the script again "
        "(assets already made are reused from the asset cache when it is on)",
    )


# One entry of a render's log: a progress event, the MP4 bytes written so far, or the ending (always last).
Entry = render_service_pb2.RenderProgress | int | Ending
START = "0"


@dataclass(frozen=True)
class Page:
    """Log entries after a cursor, the cursor after them, and the temp file the MP4 is being written to."""

    entries: list[Entry]
    cursor: str
    part: str


@dataclass(frozen=True)
class Signals:
    """What an owner learns about one of its running renders when it renews the lease."""

    # False when another replica already ended it (this owner's lease had run out): stop working on it.
    alive: bool
    cancel: bool
    # Some caller, on any replica, followed it within ORPHAN_GRACE_SECONDS.
    watched: bool


class RenderStore(abc.ABC):
    """Where renders' state lives. `lease_seconds`: how long an owner that stopped renewing keeps its renders;
    `grace_seconds`: how long a render stays watched after its last caller looked (ORPHAN_GRACE_SECONDS);
    `ttl_seconds`: how long an ended render is kept (RESULT_TTL_SECONDS)."""

    def __init__(self, lease_seconds: float, grace_seconds: float, ttl_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self.grace_seconds = grace_seconds
        self.ttl_seconds = ttl_seconds

    @abc.abstractmethod
    async def create(self, render_id: str, owner: str, part: str, lifetime_seconds: float) -> None:
        """Records a running render, watched and leased; AlreadyExists if the id is known. `lifetime_seconds`
        bounds how long its state is kept if nobody ever ends it."""

    @abc.abstractmethod
    async def append(self, render_id: str, entry: render_service_pb2.RenderProgress | int) -> None: ...

    @abc.abstractmethod
    async def finish(self, render_id: str, ending: Ending, expires_at: float) -> Ending | None:
        """Ends a running render, kept until `expires_at` (epoch seconds). A requested cancel beats success. Returns
        the ending recorded, or None when the render had already been ended elsewhere (its lease had run out)."""

    @abc.abstractmethod
    async def restore(self, render_id: str, entries: list[Entry], expires_at: float) -> None:
        """Records a finished render found on disk, unless the id is already known."""

    @abc.abstractmethod
    async def read(self, render_id: str, cursor: str, wait: float) -> Page:
        """Entries after `cursor`, waiting up to `wait` seconds for one; NotFound for an unknown or expired id."""

    @abc.abstractmethod
    async def renew(self, render_ids: list[str]) -> dict[str, Signals]: ...

    @abc.abstractmethod
    async def watch(self, render_id: str) -> None:
        """Marks the render watched for `grace_seconds`."""

    @abc.abstractmethod
    async def request_cancel(self, render_id: str) -> bool:
        """Flags a running render for cancelling; False when it has ended. NotFound for an unknown id."""

    @abc.abstractmethod
    async def running(self, render_id: str) -> bool:
        """Whether some live owner is running it (its temp file is in use)."""


def _not_found(render_id: str) -> NotFound:
    return NotFound(f"render_id {render_id!r} is unknown or its result has expired")


# ---------------------------------------------------------------- one gateway


@dataclass
class _MemoryRecord:
    entries: list[Entry]
    part: str = ""
    cancel: bool = False
    watched_until: float = 0.0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def ended(self) -> bool:
        return bool(self.entries) and isinstance(self.entries[-1], Ending)


class MemoryRenderStore(RenderStore):
    """Renders in this process's memory: one gateway. Its owner is always this process, so leases never run out."""

    def __init__(self, lease_seconds: float, grace_seconds: float, ttl_seconds: float) -> None:
        super().__init__(lease_seconds, grace_seconds, ttl_seconds)
        self._records: dict[str, _MemoryRecord] = {}

    def _get(self, render_id: str) -> _MemoryRecord:
        record = self._records.get(render_id)
        if record is None:
            raise _not_found(render_id)
        return record

    def _expire_at(self, render_id: str, record: _MemoryRecord, expires_at: float) -> None:
        def forget() -> None:
            if self._records.get(render_id) is record:
                del self._records[render_id]

        asyncio.get_running_loop().call_later(max(0.0, expires_at - time.time()), forget)

    async def create(self, render_id: str, owner: str, part: str, lifetime_seconds: float) -> None:
        if render_id in self._records:
            raise _in_use(render_id)
        self._records[render_id] = _MemoryRecord([], part, watched_until=time.monotonic() + self.grace_seconds)

    async def append(self, render_id: str, entry: render_service_pb2.RenderProgress | int) -> None:
        record = self._get(render_id)
        if record.ended:
            return  # as in Redis: nothing follows the ending
        record.entries.append(entry)
        async with record.changed:
            record.changed.notify_all()

    async def finish(self, render_id: str, ending: Ending, expires_at: float) -> Ending | None:
        record = self._get(render_id)
        if record.ended:
            return None
        if record.cancel and ending.summary is not None:
            ending = _cancelled(render_id)
        record.entries.append(ending)
        record.part = ""
        self._expire_at(render_id, record, expires_at)
        async with record.changed:
            record.changed.notify_all()
        return ending

    async def restore(self, render_id: str, entries: list[Entry], expires_at: float) -> None:
        if render_id not in self._records:
            record = self._records[render_id] = _MemoryRecord(list(entries))
            self._expire_at(render_id, record, expires_at)

    async def read(self, render_id: str, cursor: str, wait: float) -> Page:
        record = self._get(render_id)
        seen = int(cursor)
        if len(record.entries) == seen and not record.ended:
            async with record.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(record.changed.wait(), wait)
        return Page(record.entries[seen:], str(len(record.entries)), record.part)

    async def renew(self, render_ids: list[str]) -> dict[str, Signals]:
        now = time.monotonic()
        signals = {}
        for render_id in render_ids:
            record = self._records.get(render_id)
            alive = record is not None and not record.ended
            signals[render_id] = Signals(
                alive,
                alive and record.cancel,
                alive and record.watched_until > now,  # type: ignore[union-attr]
            )
        return signals

    async def watch(self, render_id: str) -> None:
        self._get(render_id).watched_until = time.monotonic() + self.grace_seconds

    async def request_cancel(self, render_id: str) -> bool:
        record = self._get(render_id)
        if record.ended:
            return False
        record.cancel = True
        return True

    async def running(self, render_id: str) -> bool:
        record = self._records.get(render_id)
        return record is not None and not record.ended


def _in_use(render_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"render_id {render_id!r} is already in use; re-attach with WatchRender/FetchResult or pick another"
    )


def _cancelled(render_id: str) -> Ending:
    return Ending(code=grpc.StatusCode.CANCELLED, message=f"render {render_id} was cancelled")


# ---------------------------------------------------------------- every replica


# KEYS: record, log, lease, watched. Each log entry is one field: p (progress), n (size), s (summary), e (error).
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'owner', ARGV[1], 'part', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
return 1
"""
_APPEND_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('XADD', KEYS[2], '*', ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
return 1
"""
# ARGV: field, value, expires_at_ms, cancelled-error value. Returns the field and value recorded, or nothing.
_FINISH_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return nil end
local name, value = ARGV[1], ARGV[2]
if name == 's' and redis.call('HGET', KEYS[1], 'cancel') == '1' then name, value = 'e', ARGV[4] end
redis.call('XADD', KEYS[2], '*', name, value)
redis.call('HSET', KEYS[1], 'status', 'ended', 'part', '')
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3], KEYS[4])
return {name, value}
"""
# Ends a render whose owner's lease ran out. ARGV: error value, expires_at_ms.
_ABANDON_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'ended', 'part', '')
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
return 1
"""
# ARGV: expires_at_ms, then one field and value per entry.
_RESTORE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'ended', 'part', '')
for i = 2, #ARGV, 2 do redis.call('XADD', KEYS[2], '*', ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[1])
return 1
"""
_CANCEL_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status ~= 'running' or redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 1
"""
# Most log entries fetched in one round trip.
_READ_COUNT = 1000


def _encode(entry: Entry) -> tuple[str, bytes]:
    if isinstance(entry, render_service_pb2.RenderProgress):
        return "p", entry.SerializeToString()
    if isinstance(entry, int):
        return "n", str(entry).encode()
    if entry.summary is not None:
        return "s", entry.summary.SerializeToString()
    return "e", f"{entry.code.name}\n{entry.message}".encode()


def _decode(name: bytes, value: bytes) -> Entry:
    if name == b"p":
        return render_service_pb2.RenderProgress.FromString(value)
    if name == b"n":
        return int(value)
    if name == b"s":
        return Ending(summary=render_service_pb2.RenderSummary.FromString(value))
    code, _, message = value.decode().partition("\n")
    return Ending(code=grpc.StatusCode[code], message=message)


Result = TypeVar("Result")


def _shared_state(method: Callable[..., Awaitable[Result]]) -> Callable[..., Awaitable[Result]]:
    """A Redis that does not answer is UNAVAILABLE (worth a retry), not INTERNAL; its URL may hold a password, so
    the message names only the setting."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Result:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as error:
            _LOGGER.warning("render state store: %s", type(error).__name__)
            raise ProviderUnavailable("the render state store (RENDER_STATE_URL) did not answer; try again") from None

    return wrapper


class RedisRenderStore(RenderStore):
    """Renders in a Redis server that every gateway replica shares (RENDER_STATE_URL).

    Per render, under `prefix` + id: a hash (`status` running/ended, `owner`, `part`, `cancel`), `:log` (a stream:
    XREAD BLOCK lets a watcher wait for the next entry), `:lease` (the owner's, renewed every tick) and `:watched`
    (set by each caller following it). Every change that depends on the status is one script, so two replicas never
    both end a render. For a standalone Redis, not Redis Cluster (the scripts name keys they are not given).
    """

    def __init__(
        self, client: aioredis.Redis, lease_seconds: float, grace_seconds: float, ttl_seconds: float, prefix: str
    ) -> None:
        super().__init__(lease_seconds, grace_seconds, ttl_seconds)
        self._client = client
        self._prefix = prefix
        self._create = client.register_script(_CREATE_LUA)
        self._append = client.register_script(_APPEND_LUA)
        self._finish = client.register_script(_FINISH_LUA)
        self._abandon = client.register_script(_ABANDON_LUA)
        self._restore = client.register_script(_RESTORE_LUA)
        self._cancel = client.register_script(_CANCEL_LUA)

    @classmethod
    def from_url(cls, url: str, lease_seconds: float, grace_seconds: float, ttl_seconds: float) -> RedisRenderStore:
        # The socket timeout must outlast a blocking XREAD (one tick).
        client = aioredis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=2.0)
        return cls(client, lease_seconds, grace_seconds, ttl_seconds, "scenecast:render:")

    def _keys(self, render_id: str) -> list[str]:
        record = self._prefix + render_id
        return [record, f"{record}:log", f"{record}:lease", f"{record}:watched"]

    def _ms(self, seconds: float) -> int:
        return max(1, round(seconds * 1000))

    @_shared_state
    async def create(self, render_id: str, owner: str, part: str, lifetime_seconds: float) -> None:
        args = [owner, part, self._ms(self.lease_seconds), self._ms(self.grace_seconds), self._ms(lifetime_seconds)]
        if not await self._create(keys=self._keys(render_id), args=args):
            raise _in_use(render_id)

    @_shared_state
    async def append(self, render_id: str, entry: render_service_pb2.RenderProgress | int) -> None:
        await self._append(keys=self._keys(render_id), args=list(_encode(entry)))

    @_shared_state
    async def finish(self, render_id: str, ending: Ending, expires_at: float) -> Ending | None:
        cancelled = _encode(_cancelled(render_id))[1]
        args = [*_encode(ending), round(expires_at * 1000), cancelled]
        recorded = await self._finish(keys=self._keys(render_id), args=args)
        if not recorded:
            return None
        result = _decode(recorded[0], recorded[1])
        assert isinstance(result, Ending)
        return result

    @_shared_state
    async def restore(self, render_id: str, entries: list[Entry], expires_at: float) -> None:
        args: list[object] = [round(expires_at * 1000)]
        for entry in entries:
            args.extend(_encode(entry))
        await self._restore(keys=self._keys(render_id), args=args)

    @_shared_state
    async def read(self, render_id: str, cursor: str, wait: float) -> Page:
        keys = self._keys(render_id)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hmget(keys[0], "status", "part")
            pipe.exists(keys[2])
            pipe.xread({keys[1]: cursor}, count=_READ_COUNT)
            (status, part), leased, found = await pipe.execute()
        if status is None:
            raise _not_found(render_id)
        if not found and status == b"running":
            if not leased:
                # Its owner stopped renewing: end it for everyone; the next read returns that ending.
                ending = _encode(_gone(render_id))[1]
                expires_ms = round((time.time() + self.ttl_seconds) * 1000)
                await self._abandon(keys=keys, args=[ending, expires_ms])
            else:
                found = await self._client.xread({keys[1]: cursor}, count=_READ_COUNT, block=self._ms(wait))
        entries: list[Entry] = []
        for _, messages in found or ():
            for message_id, fields in messages:
                cursor = message_id.decode()
                entries.extend(_decode(name, value) for name, value in fields.items())
        return Page(entries, cursor, (part or b"").decode())

    @_shared_state
    async def renew(self, render_ids: list[str]) -> dict[str, Signals]:
        if not render_ids:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for render_id in render_ids:
                record, _, lease, watched = self._keys(render_id)
                pipe.set(lease, "1", xx=True, px=self._ms(self.lease_seconds))
                pipe.hget(record, "cancel")
                pipe.exists(watched)
            results = await pipe.execute()
        return {
            render_id: Signals(bool(results[3 * i]), results[3 * i + 1] == b"1", bool(results[3 * i + 2]))
            for i, render_id in enumerate(render_ids)
        }

    @_shared_state
    async def watch(self, render_id: str) -> None:
        await self._client.set(self._keys(render_id)[3], "1", px=self._ms(self.grace_seconds))

    @_shared_state
    async def request_cancel(self, render_id: str) -> bool:
        flagged = await self._cancel(keys=self._keys(render_id))
        if flagged == -1:
            raise _not_found(render_id)
        return bool(flagged)

    @_shared_state
    async def running(self, render_id: str) -> bool:
        return bool(await self._client.exists(self._keys(render_id)[2]))


# ---------------------------------------------------------------- the registry


class RenderRegistry:
    """Runs this replica's renders, follows any replica's, cancels orphans, and keeps the results folder tidy.

    Built inside the event loop (as the gRPC server is): it starts re-indexing the results folder at once, and every
    call waits for that to finish.
    """

    def __init__(self, store: RenderStore, results_dir: Path) -> None:
        self._store = store
        self._dir = results_dir
        self._ttl = store.ttl_seconds
        self._owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._tick = min(_TICK_SECONDS, store.lease_seconds / 3, store.grace_seconds / 3)
        self._running: dict[str, asyncio.Task[None]] = {}
        # Why a render's task was cancelled; a cancel with no reason is this process stopping.
        self._cancel_reasons: dict[str, Ending] = {}
        self._background: list[asyncio.Task[None]] = []
        self._opened = asyncio.get_running_loop().create_task(self._open())

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RenderRegistry:
        """Redis at RENDER_STATE_URL when set (every replica shares it), else this process's memory."""
        times = settings.render_lease_seconds, settings.orphan_grace_seconds, settings.result_ttl_seconds
        url = settings.render_state_url.get_secret_value()
        store = RedisRenderStore.from_url(url, *times) if url else MemoryRenderStore(*times)
        _LOGGER.info("render registry: %s", "shared, in Redis (RENDER_STATE_URL)" if url else "in memory (one gateway)")
        return cls(store, settings.output_dir)

    async def _ready(self) -> None:
        """Waits for start-up; one that failed (Redis unreachable) is tried again by the next call."""
        if self._opened.done() and self._opened.exception() is not None:
            self._opened = asyncio.create_task(self._open())
        await self._opened

    async def _open(self) -> None:
        # Private: results are the callers' videos (a link or another user's folder is refused).
        private_dir(self._dir, "RENDER_OUTPUT_DIR")
        await self._sweep()
        self._background = [
            asyncio.create_task(self._renew_leases()),
            asyncio.create_task(self._janitor()),
        ]

    async def start(self, job: RenderJob) -> None:
        await self._ready()
        render_id = job.render_id
        part = self._dir / f"{render_id}.{secrets.token_hex(8)}.mp4.part"
        fd = os.open(part, PRIVATE_CREATE_FLAGS, 0o600)
        # Held while the file is written: another gateway on this results folder (a second `scenecast serve`, replicas
        # without Redis) knows from the lock that the render is alive, though its registry does not know the render.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            lifetime = max(0.0, job.deadline - time.monotonic()) + self._ttl
            await self._store.create(render_id, self._owner, part.name, lifetime)
        except BaseException:
            os.close(fd)
            part.unlink(missing_ok=True)
            raise
        self._running[render_id] = asyncio.create_task(self._run(job, part, fd))

    async def drain(self, seconds: float) -> None:
        """Waits up to `seconds` for the renders this process runs, whoever follows them: a caller here, or one that
        left and follows (or will fetch) the render through another replica. What is still running afterwards ends
        UNAVAILABLE when the process stops."""
        running = list(self._running.values())
        if running:
            _LOGGER.info("waiting up to %.1f s for %d running render(s) to finish", seconds, len(running))
            await asyncio.wait(running, timeout=seconds)

    async def cancel(self, render_id: str) -> bool:
        await self._ready()
        accepted = await self._store.request_cancel(render_id)
        if accepted:
            self._cancel_local(render_id, _cancelled(render_id))  # the owner elsewhere sees the flag within a tick
        return accepted

    def _cancel_local(self, render_id: str, reason: Ending) -> None:
        task = self._running.get(render_id)
        if task is not None:
            self._cancel_reasons.setdefault(render_id, reason)
            task.cancel()

    async def follow(self, render_id: str, *, progress: bool, chunks: bool, offset: int = 0) -> AsyncIterator[Event]:
        """Yields a render's progress events and/or MP4 chunks (read from the results folder) as they come, then the
        summary; raises its error when it failed. Keeps the render watched (not an orphan) while iterating."""
        await self._ready()
        cursor, size, part, ending = START, 0, "", None
        watch_again = 0.0
        while True:
            if time.monotonic() >= watch_again:
                await self._store.watch(render_id)
                watch_again = time.monotonic() + self._store.grace_seconds / 3
            page = await self._store.read(render_id, cursor, self._tick)
            cursor, part = page.cursor, page.part or part
            for entry in page.entries:
                if isinstance(entry, render_service_pb2.RenderProgress):
                    if progress:
                        yield entry
                elif isinstance(entry, int):
                    size = entry
                else:
                    ending = entry
            if ending is not None and ending.summary is not None:
                size = ending.summary.size_bytes
            if chunks and size > offset and (ending is None or ending.summary is not None):
                path = self._dir / (f"{render_id}.mp4" if ending is not None else part)
                try:
                    for chunk in _read_chunks(path, offset, size):
                        yield chunk
                        offset += len(chunk.data)
                except FileNotFoundError:
                    if ending is not None:
                        raise _not_found(render_id) from None
                    continue  # just renamed to its final name: the next read brings the ending
            if ending is not None:
                if ending.summary is None:
                    raise ending.error()
                yield ending.summary
                return

    async def _run(self, job: RenderJob, part: Path, fd: int) -> None:
        render_id = job.render_id
        progress: list[render_service_pb2.RenderProgress] = []
        summary = None
        RENDERS_IN_FLIGHT.inc()
        try:
            with os.fdopen(fd, "wb") as mp4:
                async for response in job.run():
                    kind = response.WhichOneof("payload")
                    if kind == "progress":
                        progress.append(response.progress)
                        await self._store.append(render_id, response.progress)
                    elif kind == "chunk":
                        mp4.write(response.chunk.data)
                        mp4.flush()
                        await self._store.append(render_id, mp4.tell())
                    else:
                        summary = response.summary
                # Whole on the (possibly shared) volume before any replica is told it is.
                os.fsync(mp4.fileno())
                if summary is None:
                    raise ScenecastError(f"render {render_id} ended without a summary; see gateway logs")
                expires_at = time.time() + self._ttl
                # Still open, so still locked: no other gateway's sweep takes it for a dead render's leftover.
                self._publish(render_id, part, progress, summary, expires_at)
            ending = Ending(summary=summary)
        except asyncio.CancelledError:
            ending = self._cancel_reasons.get(render_id) or _gone(render_id)
        except ScenecastError as error:
            ending = Ending(code=error.code, message=str(error))
        except Exception:  # noqa: BLE001 - reported to every caller as INTERNAL, logged once here
            _LOGGER.exception("render %s failed", render_id)
            ending = Ending(
                code=grpc.StatusCode.INTERNAL, message=f"render {render_id} failed: internal error; see gateway logs"
            )
        finally:
            del self._running[render_id]  # no cancel may interrupt the bookkeeping below
            RENDERS_IN_FLIGHT.dec()
            self._cancel_reasons.pop(render_id, None)
        if ending.summary is None:
            expires_at = time.time() + self._ttl  # how long callers are told how it failed
        try:
            recorded = await self._store.finish(render_id, ending, expires_at)
        except Exception:  # noqa: BLE001 - the lease runs out and another look ends the render for everyone
            _LOGGER.exception("render %s: could not record its end", render_id)
            recorded = None
        if recorded is None or recorded.summary is None:
            for path in (part, self._dir / f"{render_id}.mp4", self._dir / f"{render_id}.json"):
                path.unlink(missing_ok=True)

    def _publish(
        self,
        render_id: str,
        part: Path,
        progress: list[render_service_pb2.RenderProgress],
        summary: render_service_pb2.RenderSummary,
        expires_at: float,
    ) -> None:
        """Moves the finished MP4 to its name, then writes its sidecar (the janitor removes an MP4 without one only
        once it is older than the TTL, so it never races this)."""
        os.replace(part, self._dir / f"{render_id}.mp4")
        sidecar = {
            "render_id": render_id,
            "expires_at": expires_at,
            "summary": json_format.MessageToDict(summary),
            "progress": [json_format.MessageToDict(event) for event in progress],
        }
        # Named like the MP4's temp file, so the sweep removes it should the gateway die before the rename, and locked
        # like it until renamed, so that another gateway's sweep does not take it for such a leftover.
        temp = self._dir / f"{render_id}.{secrets.token_hex(8)}.json.part"
        with create_private_file(temp) as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            handle.write(json.dumps(sidecar).encode())
            handle.flush()
            os.replace(temp, self._dir / f"{render_id}.json")

    async def _sweep(self) -> None:
        """Removes temp files of renders running nowhere and expired or damaged results; re-indexes the others."""
        now = time.time()
        for path in sorted(self._dir.iterdir()):
            match = _RESULT_NAME.fullmatch(path.name)
            if match is None:
                continue  # the music folder, the spend ledger, the operator's own files
            render_id = match["id"]
            if path.name.endswith(".part"):
                if not await self._store.running(render_id) and not _being_written(path):
                    _LOGGER.info("removing %s: its render is running nowhere", path.name)
                    path.unlink(missing_ok=True)
            elif path.suffix == ".json":
                await self._reindex(render_id, path, now)
            elif not path.with_suffix(".json").exists() and now - _mtime(path) > self._ttl:
                _LOGGER.info("removing %s: a result with no record, older than RESULT_TTL_SECONDS", path.name)
                path.unlink(missing_ok=True)

    async def _reindex(self, render_id: str, sidecar: Path, now: float) -> None:
        mp4 = sidecar.with_suffix(".mp4")
        try:
            saved = json.loads(sidecar.read_text())
            expires_at = float(saved["expires_at"])
            entries: list[Entry] = [
                json_format.ParseDict(event, render_service_pb2.RenderProgress()) for event in saved["progress"]
            ]
            summary = json_format.ParseDict(saved["summary"], render_service_pb2.RenderSummary())
        except (OSError, ValueError, KeyError, TypeError, json_format.ParseError) as error:
            _LOGGER.warning("removing result %s: its sidecar is unreadable (%s)", render_id, error)
            expires_at, entries, summary = 0.0, [], None
        if summary is None or expires_at <= now or not mp4.exists():
            mp4.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            return
        await self._store.restore(render_id, [*entries, Ending(summary=summary)], expires_at)

    async def _renew_leases(self) -> None:
        """Keeps this replica's renders leased; stops those cancelled (from any replica) or orphaned."""
        while True:
            await asyncio.sleep(self._tick)
            try:
                signals = await self._store.renew(list(self._running))
            except Exception:  # noqa: BLE001 - try again next tick; the leases outlast several ticks
                _LOGGER.exception("could not renew render leases")
                continue
            for render_id, signal in signals.items():
                if not signal.alive:
                    self._cancel_local(render_id, _gone(render_id))
                elif signal.cancel:
                    self._cancel_local(render_id, _cancelled(render_id))
                elif not signal.watched:
                    _LOGGER.info("render %s: no caller for %.0f s, cancelling", render_id, self._store.grace_seconds)
                    self._cancel_local(render_id, _cancelled(render_id))

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(min(_JANITOR_SECONDS, self._ttl))
            try:
                await self._sweep()
            except Exception:  # noqa: BLE001 - tidying up must not stop; next round tries again
                _LOGGER.exception("could not tidy the results folder %s", self._dir)


def _being_written(path: Path) -> bool:
    """Whether a live gateway holds the lock its render takes on its temp file (see `start`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # gone already, or a link planted there: not a writer's
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _mtime(path: Path) -> float:
    """When a file last changed; one already removed (by its sidecar's sweep, or another replica) counts as new."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


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
