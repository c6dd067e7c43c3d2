"""Two gateway processes sharing one real redis-server and one real PostgreSQL ledger, as behind a Kubernetes Service
that sends each connection to any replica: music uploaded through one is mixed into a render made through the other,
and renders through both leave one ledger row per provider call, which either replica reports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import psycopg
import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import get_spend, render_to_file, upload_music
from scenecast_cli.stack import SERVICES, LocalStack, free_port, wait_until_serving
from services.common.media import ffmpeg_exe
from tests.fakes.openai_server import FakeOpenAI
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

MUSIC_HZ = 3000
IMAGES = "/v1/images/generations"
REQUEST = render_service_pb2.RenderRequest(
    scenes=[types_pb2.Scene(id="only", title="Ladders", narration="Check the ladder's feet before you climb.")],
    output=types_pb2.OutputSettings(
        aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=180, fps=10, quality=types_pb2.QUALITY_DRAFT
    ),
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    """The image provider, a paid one (the fake OpenAI), so that every render leaves rows in the ledger."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def ledger_url(postgres: PostgresServer) -> str:
    return postgres.database()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI, ledger_url: str) -> Iterator[tuple[str, str]]:
    """The gateway addresses of two replicas: LocalStack's own gateway and a second gateway process beside it, with
    the same media services, each its own output folder, both on one Redis and one PostgreSQL ledger."""
    logs = tmp_path_factory.mktemp("replica-logs")
    with RedisServer() as redis_server:
        env = {
            "ASSET_CACHE_URL": redis_server.url,
            "SPEND_LEDGER_URL": ledger_url,
            "IMAGE_PROVIDER": "gpt-image-1-mini",
            **fake.service_env(),
            "RENDER_OUTPUT_DIR": str(tmp_path_factory.mktemp("replica-a")),
        }
        with LocalStack(env=env, log_dir=logs) as stack:
            address = f"127.0.0.1:{free_port()}"
            variables = {
                **os.environ,
                **env,
                **{variable: stack.addresses[service] for service, (_, variable, _) in SERVICES.items()},
                "RENDER_OUTPUT_DIR": str(tmp_path_factory.mktemp("replica-b")),
                "LISTEN_ADDRESS": address,
            }
            with (logs / "gateway-b.log").open("wb") as log:
                second = subprocess.Popen([sys.executable, "-m", "gateway"], env=variables, stdout=log, stderr=log)
            try:
                wait_until_serving(address, 60, second)
                yield stack.gateway_address, address
            finally:
                second.terminate()
                assert second.wait(timeout=30) == 0, (logs / "gateway-b.log").read_text()[-2000:]


def _music_level_db(path: Path) -> float:
    """The level of the music's frequency over the whole soundtrack (one DFT bin), in dB relative to full scale."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.codec_context.sample_rate)
        samples = np.concatenate(
            [out.to_ndarray().ravel() for frame in container.decode(stream) for out in resampler.resample(frame)]
        )
        rate = stream.codec_context.sample_rate
    phase = np.exp(-2j * np.pi * MUSIC_HZ * np.arange(len(samples)) / rate)
    return float(20 * np.log10(2 * abs(np.dot(samples, phase)) / len(samples) + 1e-12))


def test_music_uploaded_through_one_replica_is_in_the_render_of_another(
    replicas: tuple[str, str], tmp_path: Path
) -> None:
    replica_a, replica_b = replicas
    music = tmp_path / "bed.wav"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"sine=frequency={MUSIC_HZ}:duration=3", str(music)],
        check=True,
        timeout=60,
    )
    uploaded = upload_music(replica_a, music, "audio/wav")

    with_music = render_service_pb2.RenderRequest()
    with_music.CopyFrom(REQUEST)
    with_music.music.upload_id = uploaded.upload_id
    # At the file's own level, not ducked: the music stands well clear of what the voice has at its pitch.
    with_music.finishing.music.CopyFrom(types_pb2.MusicMix(gain_db=0, duck=False))
    render_to_file(replica_b, with_music, tmp_path / "with-music.mp4", timeout_seconds=120)
    render_to_file(replica_b, REQUEST, tmp_path / "without.mp4", timeout_seconds=120)

    # The voice alone has next to nothing at the music's pitch; the mix has the music, under the voice or not.
    assert _music_level_db(tmp_path / "with-music.mp4") > _music_level_db(tmp_path / "without.mp4") + 20


def test_renders_through_both_replicas_leave_one_ledger_row_per_provider_call(
    replicas: tuple[str, str], fake: FakeOpenAI, ledger_url: str, tmp_path: Path
) -> None:
    requests = []
    for index in range(4):
        request = render_service_pb2.RenderRequest()
        request.CopyFrom(REQUEST)
        request.scenes[0].visual_prompt = f"A ladder, view {index}."
        requests.append(request)
    requests.append(requests[0])  # made again: its image is a cache hit, recorded at $0
    with ThreadPoolExecutor(len(requests)) as pool:
        summaries = list(
            pool.map(
                lambda index: render_to_file(
                    replicas[index % 2], requests[index], tmp_path / f"{index}.mp4", timeout_seconds=180
                ),
                range(len(requests)),
            )
        )

    with psycopg.connect(ledger_url) as db:
        rows = db.execute("SELECT render_id, scene_id, media_kind, cache_hit FROM spend").fetchall()
    assert len(rows) == len(set(rows)), "no duplicate rows"
    # The fake counts every image call of the module's renders, as the ledger does.
    assert sum(not hit for *_, hit in rows) == len(fake.requests_to(IMAGES, "POST"))
    ours = {summary.render_id for summary in summaries}
    assert {(render_id, "only", "image") for render_id in ours} == {row[:3] for row in rows if row[0] in ours}
    assert sorted(hit for render_id, *_, hit in rows if render_id in ours) == [False, False, False, False, True]
    # Either replica reports the whole ledger.
    grouping = render_service_pb2.GetSpendRequest(group_by=render_service_pb2.SPEND_GROUPING_RENDER)
    reports = [{row.key: (row.calls, row.cache_hits) for row in get_spend(a, grouping).rows} for a in replicas]
    assert reports[0] == reports[1]
    assert sum(calls for calls, _ in reports[0].values()) == len(rows)
