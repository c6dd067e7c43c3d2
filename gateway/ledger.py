"""The spend ledger: one SQLite row per provider asset a render used, summed by day, provider and model, or render."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from services.common.state import private_file

Grouping = Literal["day", "provider", "render"]

# The SQL expression of each grouping's key: fixed strings, never built from a request.
_GROUP_KEYS: dict[str, str] = {
    "day": "substr(recorded_at, 1, 10)",
    "provider": "provider || '/' || model",
    "render": "render_id",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY,
    recorded_at TEXT NOT NULL,
    render_id TEXT NOT NULL,
    scene_id TEXT NOT NULL,
    media_kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    units REAL NOT NULL,
    unit TEXT NOT NULL,
    usd REAL NOT NULL,
    cache_hit INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_by_time ON spend (recorded_at);
CREATE INDEX IF NOT EXISTS spend_by_render ON spend (render_id);
"""


_SETUP_ATTEMPTS = 20


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SpendEntry:
    """One asset a provider made for a render, or that the asset cache served in its place (then `usd` is 0).

    `units` counts what the provider bills by, named by `unit`: 1 "image", the narration's "character"s, or the
    clip's or avatar video's "second"s.
    """

    render_id: str
    scene_id: str
    media_kind: str  # "image", "speech", "video" or "avatar"
    provider: str
    model: str
    units: float
    unit: str
    usd: float
    cache_hit: bool
    recorded_at: datetime = field(default_factory=_now)


@dataclass(frozen=True)
class SpendGroup:
    """The entries that share a day ("2026-11-28", UTC), a "provider/model" or a render id."""

    key: str
    calls: int
    cache_hits: int
    usd: float


class SpendLedger:
    """Appends entries to a SQLite file and sums them.

    Every call opens its own connection in a worker thread, so the event loop never waits on the disk. The file is
    in WAL mode (readers never block the writer) and each connection waits up to `busy_timeout_seconds` for another
    writer's lock, so several gateway processes on one host may share it; WAL needs shared memory, so not over a
    network file system.
    """

    def __init__(self, path: Path, busy_timeout_seconds: float = 30.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout_seconds
        self._local = threading.local()
        # Created 0600 in a private folder, and never opened through a link: SQLite opens the file by name (its WAL
        # and shared-memory files take the same mode).
        private_file(path, "SPEND_LEDGER_PATH")
        # A connection of its own, closed at once: switching a new file to WAL needs it to be the only one open,
        # and SQLite answers "locked" at once (no busy wait) when two gateways create the file at the same moment.
        for attempt in range(_SETUP_ATTEMPTS):
            db = sqlite3.connect(path, timeout=busy_timeout_seconds)
            try:
                with db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == _SETUP_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
            finally:
                db.close()

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

    async def record(self, entry: SpendEntry) -> None:
        await asyncio.to_thread(self._insert, entry)

    async def render_total(self, render_id: str) -> float:
        """US dollars recorded for one render."""
        return await asyncio.to_thread(self._render_total, render_id)

    async def summarise(self, group_by: Grouping, since: date | None = None, render_id: str = "") -> list[SpendGroup]:
        """Entries grouped by `group_by`, sorted by key; `since` keeps UTC days from that one on, `render_id` one
        render."""
        return await asyncio.to_thread(self._groups, group_by, since, render_id)

    def _insert(self, entry: SpendEntry) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO spend (recorded_at, render_id, scene_id, media_kind, provider, model, units, unit, usd,"
                " cache_hit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.recorded_at.astimezone(UTC).isoformat(timespec="milliseconds"),
                    entry.render_id,
                    entry.scene_id,
                    entry.media_kind,
                    entry.provider,
                    entry.model,
                    entry.units,
                    entry.unit,
                    entry.usd,
                    int(entry.cache_hit),
                ),
            )

    def _render_total(self, render_id: str) -> float:
        with self._connect() as db:
            (total,) = db.execute(
                "SELECT COALESCE(SUM(usd), 0) FROM spend WHERE render_id = ?", (render_id,)
            ).fetchone()
        return float(total)

    def _groups(self, group_by: Grouping, since: date | None, render_id: str) -> list[SpendGroup]:
        conditions, parameters = [], []
        if since is not None:
            # Timestamps are ISO 8601 in UTC, so they sort as text: every one on or after that day is >= "YYYY-MM-DD".
            conditions.append("recorded_at >= ?")
            parameters.append(since.isoformat())
        if render_id:
            conditions.append("render_id = ?")
            parameters.append(render_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        query = (
            f"SELECT {_GROUP_KEYS[group_by]} AS key, COUNT(*), SUM(cache_hit), SUM(usd) FROM spend {where} "
            "GROUP BY key ORDER BY key"
        )
        with self._connect() as db:
            rows = db.execute(query, parameters).fetchall()
        return [SpendGroup(key, calls, hits, float(usd)) for key, calls, hits, usd in rows]
