"""The spend ledger on a real SQLite file: what it records, how it groups and filters, and sharing the file."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.ledger import SpendEntry, SpendGroup, SpendLedger

ROOT = Path(__file__).resolve().parents[2]
DAY_1 = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
DAY_2 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


def _entry(render_id: str, provider: str, model: str, usd: float, when: datetime, hit: bool = False) -> SpendEntry:
    kind, unit, units = ("speech", "character", 42.0) if provider == "openai" else ("image", "image", 1.0)
    return SpendEntry(render_id, "s0", kind, provider, model, units, unit, usd, hit, recorded_at=when)


@pytest.fixture
async def ledger(tmp_path: Path) -> SpendLedger:
    ledger = SpendLedger(tmp_path / "ledger" / "spend.sqlite3")
    for entry in (
        _entry("r1", "gpt-image-1-mini", "gpt-image-1-mini", 0.015, DAY_1),
        _entry("r1", "openai", "tts-1", 0.00063, DAY_1),
        _entry("r2", "gpt-image-1-mini", "gpt-image-1-mini", 0.0, DAY_2, hit=True),
        _entry("r2", "openai", "tts-1", 0.0, DAY_2, hit=True),
        _entry("r3", "flux", "black-forest-labs/flux-dev", 0.025, DAY_2),
    ):
        await ledger.record(entry)
    return ledger


async def test_every_field_of_an_entry_is_stored(ledger: SpendLedger) -> None:
    with closing(sqlite3.connect(ledger.path)) as db:
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
        rows = db.execute(
            "SELECT recorded_at, render_id, scene_id, media_kind, provider, model, units, unit, usd, cache_hit "
            "FROM spend ORDER BY id"
        ).fetchall()
    assert mode == "wal"
    assert rows[1] == (
        "2026-11-27T09:30:00.000+00:00",
        "r1",
        "s0",
        "speech",
        "openai",
        "tts-1",
        42.0,
        "character",
        0.00063,
        0,
    )
    assert rows[2][-1] == 1 and rows[2][-2] == 0.0
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


async def test_times_are_kept_in_utc(tmp_path: Path) -> None:
    ledger = SpendLedger(tmp_path / "spend.sqlite3")
    # 23:30 in New York on the 28th is already the 29th in UTC.
    late = datetime(2026, 11, 28, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    await ledger.record(_entry("r1", "openai", "tts-1", 0.001, late))
    assert [g.key for g in await ledger.summarise("day")] == ["2026-11-29"]


async def test_a_write_waits_for_another_writer_without_blocking_the_event_loop(tmp_path: Path) -> None:
    ledger = SpendLedger(tmp_path / "spend.sqlite3")
    other = sqlite3.connect(ledger.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another replica holds the write lock
    write = asyncio.create_task(ledger.record(_entry("r1", "openai", "tts-1", 0.001, DAY_1)))
    ticks = 0
    started = time.monotonic()
    while time.monotonic() - started < 0.5:
        await asyncio.sleep(0.01)
        ticks += 1
    assert not write.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(write, 5)
    assert ticks >= 25, "the loop kept running while the write waited for the lock"
    assert await ledger.render_total("r1") == pytest.approx(0.001)


WRITER = """
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
from gateway.ledger import SpendEntry, SpendLedger

async def main() -> None:
    ledger = SpendLedger(Path(sys.argv[1]))
    entries = [
        SpendEntry(sys.argv[2], f"s{i}", "image", "flux", "flux-dev", 1.0, "image", 0.025, False, datetime.now(UTC))
        for i in range(int(sys.argv[3]))
    ]
    await asyncio.gather(*(ledger.record(entry) for entry in entries))

asyncio.run(main())
"""


def test_two_gateway_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    count = 150
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), render_id, str(count)], cwd=ROOT)
        for render_id in ("replica-a", "replica-b")
    ]
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0]
    groups = asyncio.run(SpendLedger(path).summarise("render"))
    assert [(g.key, g.calls) for g in groups] == [("replica-a", count), ("replica-b", count)]
    assert sum(g.usd for g in groups) == pytest.approx(2 * count * 0.025)
