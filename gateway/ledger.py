"""The spend ledger: one row per provider asset a render used, in a SQLite file (embedded, the default) or a PostgreSQL
database that every gateway replica shares (SPEND_LEDGER_URL), summed by day, provider and model, or render."""

from __future__ import annotations

import abc
import asyncio
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as day_start
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import QueryCanceled
from psycopg_pool import ConnectionPool, PoolTimeout
from tenacity import (
    retry,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from services.common.errors import ProviderUnavailable
from services.common.state import private_file

if TYPE_CHECKING:
    from gateway.config import GatewaySettings

_LOGGER = logging.getLogger(__name__)

Grouping = Literal["day", "provider", "render"]
T = TypeVar("T")

# Numbered schema changes, applied in order at start-up and noted in `spend_migrations`. Released ones are never
# edited (a database keeps the version it reached), only followed by new ones, and only additive ones, so that a
# replica of the previous release, still running during a rolling update, keeps working on the newer schema. The two
# lists say the same in each database's dialect. Hand-written rather than a migration library (Alembic, yoyo): two
# short steps, and one function applies them on both backends.
_SQLITE_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the table as it was before versioning; IF NOT EXISTS, so that files made then adopt version 1 as they are.
    (
        "CREATE TABLE IF NOT EXISTS spend (id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, render_id TEXT NOT NULL,"
        " scene_id TEXT NOT NULL, media_kind TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,"
        " units REAL NOT NULL, unit TEXT NOT NULL, usd REAL NOT NULL, cache_hit INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS spend_by_time ON spend (recorded_at)",
        "CREATE INDEX IF NOT EXISTS spend_by_render ON spend (render_id)",
    ),
    # 2: the write key, so a repeated write is stored once; rows from before it have none (NULL, equal to no other).
    (
        "ALTER TABLE spend ADD COLUMN call_id TEXT",
        "CREATE UNIQUE INDEX spend_once ON spend (render_id, scene_id, media_kind, call_id)",
    ),
    # 3: the provider call that made the asset (the media service's id), paid for once: a second paid row for the
    # same call is refused, however many renders receive the asset.
    (
        "ALTER TABLE spend ADD COLUMN provider_call TEXT",
        "CREATE UNIQUE INDEX spend_paid_once ON spend (provider_call) WHERE NOT cache_hit",
    ),
)
_POSTGRES_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE spend (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, recorded_at TIMESTAMPTZ NOT NULL,"
        " render_id TEXT NOT NULL, scene_id TEXT NOT NULL, media_kind TEXT NOT NULL, provider TEXT NOT NULL,"
        " model TEXT NOT NULL, units DOUBLE PRECISION NOT NULL, unit TEXT NOT NULL, usd DOUBLE PRECISION NOT NULL,"
        " cache_hit BOOLEAN NOT NULL)",
        "CREATE INDEX spend_by_time ON spend (recorded_at)",
        "CREATE INDEX spend_by_render ON spend (render_id)",
    ),
    _SQLITE_MIGRATIONS[1],
    _SQLITE_MIGRATIONS[2],
)
_COLUMNS = (
    "recorded_at, render_id, scene_id, media_kind, provider, model, units, unit, usd, cache_hit, call_id, provider_call"
)
_GROUP_KEYS = {"provider": "provider || '/' || model", "render": "render_id"}

_SETUP_ATTEMPTS = 20
# Attempts of one PostgreSQL statement when its connection fails (a server restart or failover, a dropped
# connection). A write whose commit reached the server just before the connection broke is sent again: its call_id
# makes the repeat a no-op.
_ATTEMPTS = 3
# Longest a statement waits for a pooled connection, in seconds: statements are short, so a longer wait means the
# server is down (the pool keeps reconnecting in the background) and the call had better fail soon.
_POOL_TIMEOUT_SECONDS = 5.0
_CONNECT_TIMEOUT_SECONDS = 5
# Longest one statement may run (waiting for a lock included), as SQLite's busy timeout bounds a write there: a
# stuck database fails the write (the render logs it and goes on) instead of holding the render.
_STATEMENT_TIMEOUT = "10s"
# pg_advisory_xact_lock's key, the same in every gateway: one replica at a time brings the schema up to date.
_MIGRATION_LOCK = 0x5CE_1ED6


def _now() -> datetime:
    return datetime.now(UTC)


def _new_call_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class SpendEntry:
    """One asset a provider made for a render, or that the asset cache served in its place (then `usd` is 0).

    `units` counts what the provider bills by, named by `unit`: 1 "image", the narration's "character"s, or the
    clip's or avatar video's "second"s. `call_id` tells apart the provider calls of one render, scene and media kind:
    the same entry written again (a retry after a lost reply) is stored once. Its default, a fresh random id, makes
    every entry created a call of its own. `provider_call` is the media service's id of the call that made the asset
    (empty when it gave none): the ledger keeps one paid row per provider call.
    """

    render_id: str
    scene_id: str
    media_kind: str  # "image", "speech", "video", "avatar" or "script" (a draft's call, its units tokens)
    provider: str
    model: str
    units: float
    unit: str
    usd: float
    cache_hit: bool
    recorded_at: datetime = field(default_factory=_now)
    call_id: str = field(default_factory=_new_call_id)
    provider_call: str = ""


@dataclass(frozen=True)
class SpendGroup:
    """The entries that share a day ("2026-11-28", UTC), a "provider/model" or a render id."""

    key: str
    calls: int
    cache_hits: int
    usd: float


class _Connection(Protocol):
    """What both drivers' connections offer: `execute` returning a cursor."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


class SpendLedger(abc.ABC):
    """Appends entries and sums them, in a worker thread per call, so the event loop never waits on the database.

    Two backends, `SqliteLedger` and `PostgresLedger`; `open_ledger` picks the one the settings ask for.
    """

    # Where the entries go, for log lines: a file, or a server and database (never a password).
    location: str
    # The driver's placeholder for a statement's parameters.
    _param: str
    # The SQL expression of the "day" grouping's key (UTC): fixed strings, never built from a request.
    _day_key: str

    async def record(self, entry: SpendEntry) -> None:
        await self._in_thread(self._insert, entry)

    async def render_total(self, render_id: str) -> float:
        """US dollars recorded for one render."""
        return await self._in_thread(self._render_total, render_id)

    async def summarise(self, group_by: Grouping, since: date | None = None, render_id: str = "") -> list[SpendGroup]:
        """Entries grouped by `group_by`, sorted by key; `since` keeps UTC days from that one on, `render_id` one
        render."""
        return await self._in_thread(self._groups, group_by, since, render_id)

    async def _in_thread(self, function: Callable[..., T], *arguments: Any) -> T:
        """Runs a database call in a worker thread; a database that is down or locked is UNAVAILABLE to callers (the
        driver's message, which may name hosts and files, goes to the log)."""
        try:
            return await asyncio.to_thread(function, *arguments)
        except (sqlite3.OperationalError, psycopg.OperationalError) as error:
            _LOGGER.warning("spend ledger %s failed: %s", self.location, error)
            raise ProviderUnavailable("the spend ledger is unavailable; try again") from error

    @abc.abstractmethod
    def close(self) -> None:
        """Lets go of the database's connections."""

    @abc.abstractmethod
    def _run(self, query: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Runs one statement in a transaction of its own; returns its rows (none for a write)."""

    @abc.abstractmethod
    def _moment(self, when: datetime) -> Any:
        """A time as this backend stores it."""

    def _insert(self, entry: SpendEntry) -> None:
        values = ", ".join([self._param] * len(_COLUMNS.split(",")))
        self._run(
            # The unique keys, (render, scene, kind, call_id) and a paid row's provider call, turn a repeated write
            # into nothing, on both backends.
            f"INSERT INTO spend ({_COLUMNS}) VALUES ({values}) ON CONFLICT DO NOTHING",
            (
                self._moment(entry.recorded_at),
                entry.render_id,
                entry.scene_id,
                entry.media_kind,
                entry.provider,
                entry.model,
                entry.units,
                entry.unit,
                entry.usd,
                entry.cache_hit,
                entry.call_id,
                entry.provider_call or None,  # NULL, equal to no other, where the service named no call
            ),
        )

    def _render_total(self, render_id: str) -> float:
        query = f"SELECT COALESCE(SUM(usd), 0) FROM spend WHERE render_id = {self._param}"
        ((total,),) = self._run(query, (render_id,))
        return float(total)

    def _groups(self, group_by: Grouping, since: date | None, render_id: str) -> list[SpendGroup]:
        conditions, parameters = [], []
        if since is not None:
            conditions.append(f"recorded_at >= {self._param}")
            parameters.append(self._moment(datetime.combine(since, day_start(), UTC)))
        if render_id:
            conditions.append(f"render_id = {self._param}")
            parameters.append(render_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        key = self._day_key if group_by == "day" else _GROUP_KEYS[group_by]
        rows = self._run(
            f"SELECT {key} AS key, COUNT(*), COUNT(*) FILTER (WHERE cache_hit), SUM(usd) FROM spend {where} "
            "GROUP BY key ORDER BY key",
            parameters,
        )
        return [SpendGroup(key, calls, hits, float(usd)) for key, calls, hits, usd in rows]

    def _migrate(self, db: _Connection, migrations: tuple[tuple[str, ...], ...]) -> None:
        """Brings the schema to the newest version, inside the caller's transaction, which must hold the database's
        migration lock."""
        db.execute(
            "CREATE TABLE IF NOT EXISTS spend_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        (current,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM spend_migrations").fetchone()
        if current > len(migrations):
            # Migrations are additive, so the newer schema of a later release (mid rolling update, or rolled back)
            # still serves this one.
            _LOGGER.warning(
                "spend ledger %s: schema version %d is newer than this gateway's %d; carrying on",
                self.location,
                current,
                len(migrations),
            )
        for version in range(current + 1, len(migrations) + 1):
            for statement in migrations[version - 1]:
                db.execute(statement)
            db.execute(
                f"INSERT INTO spend_migrations (version, applied_at) VALUES ({self._param}, {self._param})",
                (version, _now().isoformat(timespec="seconds")),
            )
            _LOGGER.info("spend ledger %s: schema migrated to version %d", self.location, version)


class SqliteLedger(SpendLedger):
    """Entries in a SQLite file.

    The file is in WAL mode (readers never block the writer) and each connection waits up to `busy_timeout_seconds`
    for another writer's lock, so several gateway processes on one host may share it; WAL needs shared memory, so not
    over a network file system (replicas on several hosts share a PostgreSQL ledger instead).
    """

    _param = "?"
    # Timestamps are ISO 8601 in UTC, so their first ten characters are the day, and they sort as text.
    _day_key = "substr(recorded_at, 1, 10)"

    def __init__(self, path: Path, busy_timeout_seconds: float = 30.0) -> None:
        self.path = path
        self.location = str(path)
        self._busy_timeout = busy_timeout_seconds
        self._local = threading.local()
        # Created 0600 in a private folder, and never opened through a link: SQLite opens the file by name (its WAL
        # and shared-memory files take the same mode).
        private_file(path, "SPEND_LEDGER_PATH")
        # A connection of its own, closed at once: switching a new file to WAL needs it to be the only one open,
        # and SQLite answers "locked" at once (no busy wait) when two gateways create the file at the same moment.
        for attempt in range(_SETUP_ATTEMPTS):
            try:
                with closing(sqlite3.connect(path, timeout=busy_timeout_seconds, isolation_level=None)) as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    # BEGIN IMMEDIATE takes the write lock, which is the migration lock: one process migrates.
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        self._migrate(db, _SQLITE_MIGRATIONS)
                        db.execute("COMMIT")
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == _SETUP_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, whose statements commit together when the block ends (or roll back on error).

        One connection per worker thread, kept: opening one per call was a third of the gateway's CPU in the fan-out
        benchmark (py-spy), for a few inserts per scene.
        """
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=self._busy_timeout)
            # With WAL, NORMAL syncs at checkpoints instead of at every commit (the commit's fsync was the rest of
            # the ledger's cost): a crash of the gateway loses nothing; a power cut may lose the last few rows.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        with db:
            yield db

    def close(self) -> None:
        """Nothing to do: each worker thread's connection closes when its thread ends."""

    def _run(self, query: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._connect() as db:
            return db.execute(query, parameters).fetchall()

    def _moment(self, when: datetime) -> str:
        return when.astimezone(UTC).isoformat(timespec="milliseconds")


class PostgresLedger(SpendLedger):
    """Entries in a PostgreSQL database that any number of gateway replicas write to at once.

    Each replica keeps a pool of up to `pool_size` connections (its worker threads take turns on them); each write is
    a transaction of its own, and a write whose connection failed is retried on a fresh connection. Construction
    checks the database answers and migrates its schema, so a wrong URL or an unreachable server stops the gateway at
    start-up with the reason.
    """

    _param = "%s"
    _day_key = "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def __init__(self, url: str, pool_size: int) -> None:
        self.location = postgres_location(url)
        options: dict[str, Any] = {"connect_timeout": _CONNECT_TIMEOUT_SECONDS, "application_name": "scenecast-gateway"}
        with psycopg.connect(url, **options) as db:  # commits when the block ends, releasing the lock
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self._migrate(db, _POSTGRES_MIGRATIONS)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=options,
            timeout=_POOL_TIMEOUT_SECONDS,
            # A connection that a server restart closed is found out and replaced before a statement is lost on it.
            check=ConnectionPool.check_connection,
            configure=_configure,
            name="spend-ledger",
            open=True,
        )

    def close(self) -> None:
        self._pool.close()

    @retry(
        # Not retried: a statement that ran out of time (it waited on a lock that is still held), or a wait for a
        # connection that timed out (the pool kept reconnecting meanwhile): trying again would only wait again.
        retry=retry_if_exception_type(psycopg.OperationalError)
        & retry_if_not_exception_type((QueryCanceled, PoolTimeout)),
        stop=stop_after_attempt(_ATTEMPTS),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        before_sleep=lambda state: _LOGGER.warning(
            "spend ledger %s: %s; trying again", state.args[0].location, state.outcome and state.outcome.exception()
        ),
        reraise=True,
    )
    def _run(self, query: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as db:  # one transaction: committed when the block ends
            cursor = db.execute(query, parameters)
            return cursor.fetchall() if cursor.description is not None else []

    def _moment(self, when: datetime) -> datetime:
        return when


def _configure(db: psycopg.Connection[Any]) -> None:
    """Sets up each new pooled connection."""
    db.execute(f"SET statement_timeout = '{_STATEMENT_TIMEOUT}'")
    db.commit()  # the pool takes connections back only when idle


def postgres_location(url: str) -> str:
    """The server and database of a PostgreSQL URL, without its user or password; ValueError when it is no URL."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ValueError("not a valid PostgreSQL URL") from None
    return f"postgresql://{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def open_ledger(settings: GatewaySettings) -> SpendLedger | None:
    """The ledger the settings ask for: PostgreSQL at SPEND_LEDGER_URL, else the SQLite file (None when "off")."""
    url = settings.spend_ledger_url.get_secret_value()
    if url:
        ledger: SpendLedger = PostgresLedger(url, settings.spend_ledger_pool_size)
    elif (path := settings.ledger_path) is not None:
        ledger = SqliteLedger(path)
    else:
        _LOGGER.info("spend ledger: off")
        return None
    _LOGGER.info("spend ledger: %s", ledger.location)
    return ledger
