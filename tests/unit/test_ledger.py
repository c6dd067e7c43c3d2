"""The spend ledger on both backends, a real SQLite file and a real PostgreSQL server: what it records, how it groups
and filters, that a repeated write is stored once, schema migrations, and several replicas writing at once."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr, ValidationError

from gateway.config import GatewaySettings
from gateway.ledger import PostgresLedger, SpendEntry, SpendGroup, SpendLedger, SqliteLedger, open_ledger
from scenecast_cli.stack import free_port
from services.common.errors import ProviderUnavailable
from tests.postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
DAY_1 = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
DAY_2 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
COLUMNS = "recorded_at, render_id, scene_id, media_kind, provider, model, units, unit, usd, cache_hit"


def _entry(render_id: str, provider: str, model: str, usd: float, when: datetime, hit: bool = False) -> SpendEntry:
    kind, unit, units = ("speech", "character", 42.0) if provider == "openai" else ("image", "image", 1.0)
    return SpendEntry(render_id, "s0", kind, provider, model, units, unit, usd, hit, recorded_at=when)


def _settings(location: str) -> GatewaySettings:
    """The gateway's settings for a ledger at `location`: a PostgreSQL URL, or a SQLite file."""
    if location.startswith("postgresql://"):
        return GatewaySettings(spend_ledger_url=SecretStr(location))
    return GatewaySettings(spend_ledger_path=location)


def _raw_rows(location: str, columns: str = COLUMNS) -> list[tuple[Any, ...]]:
    """The table as the database holds it, in the order it was written."""
    return _query(location, f"SELECT {columns} FROM spend ORDER BY id")


def _versions(location: str) -> list[int]:
    """The schema migrations the database has had."""
    return [version for (version,) in _query(location, "SELECT version FROM spend_migrations ORDER BY version")]


def _query(location: str, query: str) -> list[tuple[Any, ...]]:
    """Rows read with the database's own driver."""
    if location.startswith("postgresql://"):
        with psycopg.connect(location) as db:
            return db.execute(query).fetchall()
    with closing(sqlite3.connect(location)) as db:
        return db.execute(query).fetchall()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new, empty ledger lives: a SQLite file, or a database of the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger" / "spend.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database()


@pytest.fixture
def opened(location: str) -> Iterator[Callable[[], SpendLedger]]:
    """Opens ledgers at `location` as the gateway does (several stand for several replicas); closed at the end."""
    ledgers: list[SpendLedger] = []

    def open_one() -> SpendLedger:
        ledger = open_ledger(_settings(location))
        assert ledger is not None
        ledgers.append(ledger)
        return ledger

    yield open_one
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
async def ledger(opened: Callable[[], SpendLedger]) -> SpendLedger:
    ledger = opened()
    for entry in (
        _entry("r1", "gpt-image-1-mini", "gpt-image-1-mini", 0.015, DAY_1),
        _entry("r1", "openai", "tts-1", 0.00063, DAY_1),
        _entry("r2", "gpt-image-1-mini", "gpt-image-1-mini", 0.0, DAY_2, hit=True),
        _entry("r2", "openai", "tts-1", 0.0, DAY_2, hit=True),
        _entry("r3", "flux", "black-forest-labs/flux-dev", 0.025, DAY_2),
    ):
        await ledger.record(entry)
    return ledger


async def test_every_field_of_an_entry_is_stored(ledger: SpendLedger, location: str) -> None:
    rows = _raw_rows(location)
    if isinstance(ledger, SqliteLedger):
        with closing(sqlite3.connect(location)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        recorded_at: object = "2026-11-27T09:30:00.000+00:00"
        hit, no_hit = 1, 0
    else:
        recorded_at, hit, no_hit = DAY_1, True, False
    assert rows[1] == (recorded_at, "r1", "s0", "speech", "openai", "tts-1", 42.0, "character", 0.00063, no_hit)
    assert rows[2][-1] == hit and rows[2][-2] == 0.0
    assert len(rows) == 5


async def test_grouping_by_day_provider_and_render(ledger: SpendLedger) -> None:
    assert await ledger.summarise("day") == [
        SpendGroup("2026-11-27", 2, 0, pytest.approx(0.01563)),
        SpendGroup("2026-11-28", 3, 2, pytest.approx(0.025)),
    ]
    assert await ledger.summarise("provider") == [
        SpendGroup("flux/black-forest-labs/flux-dev", 1, 0, pytest.approx(0.025)),
        SpendGroup("gpt-image-1-mini/gpt-image-1-mini", 2, 1, pytest.approx(0.015)),
        SpendGroup("openai/tts-1", 2, 1, pytest.approx(0.00063)),
    ]
    assert [(g.key, g.calls, g.cache_hits) for g in await ledger.summarise("render")] == [
        ("r1", 2, 0),
        ("r2", 2, 2),
        ("r3", 1, 0),
    ]
    assert await ledger.render_total("r1") == pytest.approx(0.01563)
    assert await ledger.render_total("r2") == 0.0
    assert await ledger.render_total("unknown") == 0.0


async def test_filters_by_first_day_and_render(ledger: SpendLedger) -> None:
    assert [g.key for g in await ledger.summarise("render", since=date(2026, 11, 28))] == ["r2", "r3"]
    assert [g.key for g in await ledger.summarise("day", since=date(2026, 11, 29))] == []
    assert await ledger.summarise("provider", render_id="r1") == [
        SpendGroup("gpt-image-1-mini/gpt-image-1-mini", 1, 0, pytest.approx(0.015)),
        SpendGroup("openai/tts-1", 1, 0, pytest.approx(0.00063)),
    ]
    assert await ledger.summarise("day", since=date(2026, 11, 28), render_id="r1") == []


async def test_times_are_kept_in_utc(opened: Callable[[], SpendLedger]) -> None:
    ledger = opened()
    # 23:30 in New York on the 28th is already the 29th in UTC.
    late = datetime(2026, 11, 28, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    await ledger.record(_entry("r1", "openai", "tts-1", 0.001, late))
    assert [g.key for g in await ledger.summarise("day")] == ["2026-11-29"]
    assert [g.key for g in await ledger.summarise("day", since=date(2026, 11, 29))] == ["2026-11-29"]


async def test_a_repeated_write_is_stored_once(opened: Callable[[], SpendLedger], location: str) -> None:
    """A write sent again (a retry after a lost reply, on this replica or another) leaves one row; a separate call
    for the same render, scene and kind is a row of its own."""
    replica_a, replica_b = opened(), opened()
    entry = _entry("r1", "openai", "tts-1", 0.001, DAY_1)
    await replica_a.record(entry)
    await asyncio.gather(replica_a.record(entry), replica_b.record(entry), replica_b.record(entry))
    another_call = SpendEntry(**{**entry.__dict__, "call_id": "another"})
    await replica_b.record(another_call)
    rows = _raw_rows(location, "render_id, scene_id, media_kind, call_id")
    assert rows == [("r1", "s0", "speech", entry.call_id), ("r1", "s0", "speech", "another")]
    assert await replica_a.render_total("r1") == pytest.approx(0.002)


async def test_a_provider_call_has_one_paid_row_however_many_renders_receive_its_asset(
    opened: Callable[[], SpendLedger], location: str
) -> None:
    """The paid row of a provider call is kept once, by call id, whichever render or replica writes it; hit rows that
    name the same call are rows of their own."""
    replica_a, replica_b = opened(), opened()
    paid = SpendEntry(**{**_entry("r1", "openai", "tts-1", 0.001, DAY_1).__dict__, "provider_call": "call-1"})
    hit = SpendEntry(**{**_entry("r2", "openai", "tts-1", 0.0, DAY_2, hit=True).__dict__, "provider_call": "call-1"})
    # A later render (r2) that got the asset from the cache writes the call's paid row for r1 again, as the gateway
    # does on every hit, under another write key: refused.
    paid_again = SpendEntry(**{**paid.__dict__, "scene_id": "s9", "call_id": "call-1"})
    await replica_a.record(paid)
    await asyncio.gather(replica_b.record(paid_again), replica_b.record(hit), replica_a.record(hit))
    rows = _raw_rows(location, "render_id, scene_id, usd, provider_call")
    assert rows == [("r1", "s0", 0.001, "call-1"), ("r2", "s0", 0.0, "call-1")]
    # Without a call id (older services, offline providers) every paid row stays a row of its own.
    unnamed = _entry("r3", "openai", "tts-1", 0.002, DAY_2)
    await replica_a.record(unnamed)
    await replica_a.record(SpendEntry(**{**unnamed.__dict__, "call_id": "another"}))
    assert await replica_a.render_total("r3") == pytest.approx(0.004)


async def test_a_write_waits_for_another_writer_without_blocking_the_event_loop(
    opened: Callable[[], SpendLedger], location: str
) -> None:
    ledger = opened()
    # Another replica holds the write lock: SQLite's database lock, or PostgreSQL's lock on the table.
    if isinstance(ledger, SqliteLedger):
        other: Any = sqlite3.connect(location, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    else:
        other = psycopg.connect(location)
        other.execute("LOCK TABLE spend IN EXCLUSIVE MODE")
    write = asyncio.create_task(ledger.record(_entry("r1", "openai", "tts-1", 0.001, DAY_1)))

    async def ticks() -> None:
        for _ in range(25):
            await asyncio.sleep(0.01)

    # A write that blocked the event loop would hold these ticks until the lock is given up, which happens only below:
    # the wait would then end in the database's lock timeout, not in the ticks.
    await asyncio.wait_for(ticks(), 20)
    assert not write.done(), "the write waits for the lock"
    other.commit() if isinstance(other, psycopg.Connection) else other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(write, 5)
    assert await ledger.render_total("r1") == pytest.approx(0.001)


WRITER = """
import asyncio, sys
from datetime import UTC, datetime
from gateway.config import GatewaySettings
from gateway.ledger import SpendEntry, open_ledger

async def main() -> None:
    location, render_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    key = "spend_ledger_url" if location.startswith("postgresql://") else "spend_ledger_path"
    ledger = open_ledger(GatewaySettings(**{key: location}))
    entries = [
        SpendEntry(render_id, f"s{i}", "image", "flux", "flux-dev", 1.0, "image", 0.025, False, datetime.now(UTC))
        for i in range(count)
    ]
    # Every entry is sent twice at once, as a write retried after its reply was lost would be.
    await asyncio.gather(*(ledger.record(entry) for entry in entries + entries))
    ledger.close()

asyncio.run(main())
"""


def test_gateway_replicas_write_at_once_and_lose_or_repeat_nothing(location: str) -> None:
    """Three processes open the same new ledger at the same moment (all migrate it) and write at once."""
    count = 150
    replicas = ("replica-a", "replica-b", "replica-c")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, location, render_id, str(count)], cwd=ROOT)
        for render_id in replicas
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0]
    ledger = open_ledger(_settings(location))
    assert ledger is not None
    groups = asyncio.run(ledger.summarise("render"))
    ledger.close()
    assert [(g.key, g.calls) for g in groups] == [(replica, count) for replica in replicas]
    assert sum(g.usd for g in groups) == pytest.approx(len(replicas) * count * 0.025)
    assert _versions(location) == [1, 2, 3]


async def test_the_schema_is_migrated_once_and_versions_are_recorded(
    opened: Callable[[], SpendLedger], location: str
) -> None:
    opened()
    opened()
    assert _versions(location) == [1, 2, 3]


OLD_SCHEMA = """
CREATE TABLE spend (
    id INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, render_id TEXT NOT NULL, scene_id TEXT NOT NULL,
    media_kind TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, units REAL NOT NULL, unit TEXT NOT NULL,
    usd REAL NOT NULL, cache_hit INTEGER NOT NULL
);
CREATE INDEX spend_by_time ON spend (recorded_at);
CREATE INDEX spend_by_render ON spend (render_id);
INSERT INTO spend (recorded_at, render_id, scene_id, media_kind, provider, model, units, unit, usd, cache_hit)
VALUES ('2026-11-27T09:30:00.000+00:00', 'old', 's0', 'image', 'flux', 'flux-dev', 1.0, 'image', 0.025, 0);
"""


async def test_a_ledger_file_from_before_versioning_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(OLD_SCHEMA)
    ledger = SqliteLedger(path)
    entry = _entry("new", "openai", "tts-1", 0.001, DAY_2)
    await ledger.record(entry)
    await ledger.record(entry)
    assert [(g.key, g.calls) for g in await ledger.summarise("render")] == [("new", 1), ("old", 1)]
    assert _raw_rows(str(path), "render_id, call_id") == [("old", None), ("new", entry.call_id)]
    assert _versions(str(path)) == [1, 2, 3]


async def test_a_ledger_carries_on_when_postgresql_closes_its_connections(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """A server restart or failover drops every connection; the next writes reconnect and none is lost."""
    url = postgres.database()
    ledger = PostgresLedger(url, pool_size=2)
    try:
        await asyncio.gather(*(ledger.record(_entry("r1", "flux", "flux-dev", 0.025, DAY_1)) for _ in range(4)))
        with psycopg.connect(url, autocommit=True) as admin:
            closed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'scenecast-gateway' AND datname = current_database()"
            ).fetchone()
        assert closed is not None and closed[0] >= 1
        await asyncio.gather(*(ledger.record(_entry("r1", "flux", "flux-dev", 0.025, DAY_2)) for _ in range(4)))
        assert [(g.key, g.calls) for g in await ledger.summarise("day")] == [("2026-11-27", 4), ("2026-11-28", 4)]
    finally:
        ledger.close()


async def test_a_replica_opens_at_most_spend_ledger_pool_size_connections(postgres: PostgresServer) -> None:
    url = postgres.database()
    ledger = open_ledger(GatewaySettings(spend_ledger_url=SecretStr(url), spend_ledger_pool_size=2))
    assert ledger is not None
    with psycopg.connect(url) as other:
        other.execute("LOCK TABLE spend IN EXCLUSIVE MODE")  # every write waits, holding its connection
        writes = [asyncio.create_task(ledger.record(_entry("r1", "flux", "flux-dev", 0.025, DAY_1))) for _ in range(6)]
        ours = "FROM pg_stat_activity WHERE application_name = 'scenecast-gateway' AND datname = current_database()"
        with psycopg.connect(url, autocommit=True) as observer:
            for _ in range(100):  # until both pooled connections wait on the lock
                if observer.execute(f"SELECT count(*) {ours} AND wait_event_type = 'Lock'").fetchone() == (2,):
                    break
                await asyncio.sleep(0.05)
            connections = observer.execute(f"SELECT count(*) {ours}").fetchone()
        other.commit()
    await asyncio.gather(*writes)
    ledger.close()
    assert connections == (2,)
    assert len(_raw_rows(url, "call_id")) == 6


async def test_a_postgresql_that_goes_down_makes_the_ledger_unavailable_not_broken() -> None:
    server = PostgresServer().start()
    ledger = PostgresLedger(server.database(), pool_size=2)
    try:
        await ledger.record(_entry("r1", "flux", "flux-dev", 0.025, DAY_1))
        server.stop()
        with pytest.raises(ProviderUnavailable) as error:  # after the pool's wait for a connection (5 s)
            await ledger.summarise("day")
        assert str(error.value) == "the spend ledger is unavailable; try again"
    finally:
        ledger.close()
        server.stop()


async def test_a_sqlite_file_locked_too_long_makes_the_ledger_unavailable(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "spend.sqlite3", busy_timeout_seconds=0.2)
    with closing(sqlite3.connect(ledger.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(ProviderUnavailable) as error:
            await ledger.record(_entry("r1", "openai", "tts-1", 0.001, DAY_1))
        other.execute("ROLLBACK")
    assert str(error.value) == "the spend ledger is unavailable; try again"


def test_an_unreachable_postgresql_stops_the_gateway_at_start_up_without_showing_the_password() -> None:
    url = f"postgresql://scenecast:hunter2@127.0.0.1:{free_port()}/spend"
    settings = GatewaySettings(spend_ledger_url=SecretStr(url))
    assert "hunter2" not in repr(settings)
    with pytest.raises(psycopg.OperationalError) as error:
        open_ledger(settings)
    assert "Connection refused" in str(error.value) and "hunter2" not in str(error.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"spend_ledger_url": "postgresql://u:hunter2@db/spend", "spend_ledger_path": "/var/spend.sqlite3"},
            "SPEND_LEDGER_URL and SPEND_LEDGER_PATH are both set",
        ),
        ({"spend_ledger_url": "mysql://u:hunter2@db/spend"}, "SPEND_LEDGER_URL must be a postgresql://"),
        ({"spend_ledger_url": "postgresql://u:hunter2@[db/spend"}, "SPEND_LEDGER_URL is not a valid postgresql://"),
        ({"spend_ledger_pool_size": 0}, "SPEND_LEDGER_POOL_SIZE must be at least 1"),
    ],
)
def test_ledger_settings_are_checked_at_start_up_and_never_echo_the_url(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        GatewaySettings(**settings)
    assert message in str(error.value) and "hunter2" not in str(error.value)
