"""The spend ledger end to end, in SQLite and in PostgreSQL: every asset a cloud provider served is recorded once,
cache hits at $0, and the render summary, GetSpend and `scenecast spend` agree with what the fake provider served."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import estimate_cost, get_spend, render_to_file
from scenecast_cli.main import main
from scenecast_cli.stack import LocalStack
from tests import prices
from tests.fakes.openai_server import FakeOpenAI
from tests.postgres_server import PostgresServer

IMAGES, SPEECH = "/v1/images/generations", "/v1/audio/speech"
NARRATIONS = ["Check the ladder's feet.", "Set it on level ground.", "Keep three points of contact."]
REQUEST = render_service_pb2.RenderRequest(
    scenes=[
        types_pb2.Scene(id=f"s{index}", narration=text, visual_prompt=f"A ladder, view {index}.")
        for index, text in enumerate(NARRATIONS)
    ],
    output=types_pb2.OutputSettings(
        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=180, fps=10, quality=types_pb2.QUALITY_STANDARD
    ),
)
IMAGE_USD = prices.GPT_IMAGE_1_MINI_STANDARD_WIDE
# What the fake's calls for one render of REQUEST cost: an image and a narration per scene.
PRICED = sum(IMAGE_USD + prices.tts_1(len(text)) for text in NARRATIONS)


@pytest.fixture(scope="module")
def fake(ledger_location: str) -> Iterator[FakeOpenAI]:
    """One per ledger backend, so that each counts only the calls of its own stack."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ledger_location(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The gateway's ledger: a SQLite file, or a new database of the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("ledger") / "spend.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database()


@pytest.fixture(scope="module")
def stack(fake: FakeOpenAI, ledger_location: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    postgresql = ledger_location.startswith("postgresql://")
    env = {
        "IMAGE_PROVIDER": "gpt-image-1-mini",
        "TTS_PROVIDER": "openai",
        **fake.service_env(),
        "ASSET_CACHE_DIR": str(tmp_path_factory.mktemp("asset-cache")),
        "SPEND_LEDGER_URL" if postgresql else "SPEND_LEDGER_PATH": ledger_location,
    }
    with LocalStack(env=env, log_dir=tmp_path_factory.mktemp("spend-logs")) as local:
        yield local


def _ledger_table(location: str) -> list[tuple[Any, ...]]:
    """The ledger's rows as the database holds them, read with its own driver."""
    query = "SELECT render_id, scene_id, media_kind, provider, model, units, unit, usd, cache_hit FROM spend"
    if location.startswith("postgresql://"):
        with psycopg.connect(location) as db:
            return db.execute(query).fetchall()
    with closing(sqlite3.connect(location)) as db:
        return db.execute(query).fetchall()


def _ledger_rows(render_id: str, hit: int, image_model: str, speech_model: str) -> set[tuple[object, ...]]:
    """The rows one render of REQUEST must leave (USD rounded, to compare sets): an image and a narration per scene."""
    rows: set[tuple[object, ...]] = set()
    for index, text in enumerate(NARRATIONS):
        image_usd = 0.0 if hit else round(IMAGE_USD, 9)
        speech_usd = 0.0 if hit else round(prices.tts_1(len(text)), 9)
        scene = (render_id, f"s{index}")
        rows.add((*scene, "image", "gpt-image-1-mini", image_model, 1.0, "image", image_usd, hit))
        rows.add((*scene, "speech", "openai", speech_model, float(len(text)), "character", speech_usd, hit))
    return rows


def test_the_ledger_records_what_the_provider_served_and_cache_hits_at_zero(
    stack: LocalStack, fake: FakeOpenAI, ledger_location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = stack.gateway_address
    estimate = estimate_cost(address, REQUEST).total_usd
    first = render_to_file(address, REQUEST, tmp_path / "first.mp4", timeout_seconds=120)
    served = [len(fake.requests_to(IMAGES, "POST")), len(fake.requests_to(SPEECH, "POST"))]
    second = render_to_file(address, REQUEST, tmp_path / "second.mp4", timeout_seconds=120)

    assert served == [len(NARRATIONS), len(NARRATIONS)]
    assert [len(fake.requests_to(IMAGES, "POST")), len(fake.requests_to(SPEECH, "POST"))] == served, "all cached"
    assert first.recorded_spend_usd == pytest.approx(PRICED)
    assert first.pre_render_estimate_usd == pytest.approx(estimate) and estimate == pytest.approx(PRICED)
    assert second.recorded_spend_usd == 0.0
    assert second.pre_render_estimate_usd == pytest.approx(estimate), "the estimate foresees no cache hits"

    rows = _ledger_table(ledger_location)
    recorded = {(*row[:7], round(row[7], 9), int(row[8])) for row in rows}
    assert len(rows) == len(recorded) == 4 * len(NARRATIONS), "one row per asset, no duplicates"
    models = (first.scenes[0].visual.model, first.scenes[0].narration.model)
    assert recorded == _ledger_rows(first.render_id, 0, *models) | _ledger_rows(second.render_id, 1, *models)

    grouping = render_service_pb2.GetSpendRequest(group_by=render_service_pb2.SPEND_GROUPING_RENDER)
    by_render = {row.key: row for row in get_spend(address, grouping).rows}
    assets = 2 * len(NARRATIONS)
    assert (by_render[first.render_id].calls, by_render[first.render_id].cache_hits) == (assets, 0)
    assert (by_render[second.render_id].calls, by_render[second.render_id].cache_hits) == (assets, assets)
    assert by_render[first.render_id].usd == pytest.approx(PRICED) and by_render[second.render_id].usd == 0.0
    today = datetime.now(UTC).date()
    later = get_spend(address, render_service_pb2.GetSpendRequest(since_day=(today + timedelta(days=1)).isoformat()))
    assert list(later.rows) == []

    assert main(["spend", "--by", "provider", "--since", today.isoformat(), "--gateway", address]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]] for line in lines if "│" in line}
    image_key, speech_key = f"gpt-image-1-mini/{models[0]}", f"openai/{models[1]}"
    speech_usd = PRICED - len(NARRATIONS) * IMAGE_USD
    assert cells[image_key] == [str(assets), str(len(NARRATIONS)), f"{len(NARRATIONS) * IMAGE_USD:.4f}"]
    assert cells[speech_key] == [str(assets), str(len(NARRATIONS)), f"{speech_usd:.4f}"]
    assert cells["all"] == [str(2 * assets), str(assets), f"{PRICED:.4f}"]
    assert main(["spend", "--render", first.render_id, "--by", "render", "--gateway", address]) == 0
    table = capsys.readouterr().out
    assert first.render_id in table and second.render_id not in table


def test_the_cli_render_prints_the_estimate_against_the_recorded_spend(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "ladder.yaml"
    scenes = [f"  - {{id: s{i}, visual: 'A ladder, view {i}.', narration: \"{t}\"}}" for i, t in enumerate(NARRATIONS)]
    script.write_text("output: {aspect_ratio: '16:9', height: 180, fps: 10}\nscenes:\n" + "\n".join(scenes) + "\n")
    out = tmp_path / "ladder.mp4"
    assert main(["render", str(script), "-o", str(out), "--gateway", stack.gateway_address, "--no-cache"]) == 0
    printed = " ".join(capsys.readouterr().err.split())
    assert f"spend: estimated ${PRICED:.4f} before the render, ${PRICED:.4f} recorded" in printed
    assert out.stat().st_size > 0
