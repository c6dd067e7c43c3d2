"""Any gateway replica serves any call with everything shared, as in a Kubernetes deployment: three gateway processes
on one real Redis (render registry, asset cache, music uploads) and one real PostgreSQL ledger, behind a round-robin
TCP proxy, with the fake OpenAI as the paid image and speech provider. The CLI renders the finished example through
two and three replicas; a replica killed mid-render leaves a script that the survivors finish paying only for the
rest; thirty renders spread over the replicas all end with a good MP4."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
import yaml
from scenecast.v1 import render_service_pb2, render_service_pb2_grpc, types_pb2

from scenecast_cli.client import render_to_file
from scenecast_cli.stack import LocalStack
from tests.fakes.base import Fault
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway_replicas import GatewayReplicas, RoundRobinProxy
from tests.postgres_server import PostgresServer
from tests.probe import probe_mp4
from tests.redis_server import RedisServer

IMAGES, SPEECH = "/v1/images/generations", "/v1/audio/speech"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finished-vertical.yaml"
SMALL = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=180, fps=10, quality=types_pb2.QUALITY_DRAFT
)
# The gateway's default MAX_CONCURRENT_SCENES: the scenes whose assets are being made when the first one is ready.
CONCURRENT_SCENES = 4
# Scenes of the render that is killed: the first CONCURRENT_SCENES are under way, the rest not yet started.
KILLED_SCENES = 6
# The fake answers one image at once and holds every other call of the first scenes this long, so that the replica
# is killed while they are certainly still being made.
HELD_SECONDS = 2.0
RENDERS = 30
# Renders in flight at once: two per replica, which the 2-core machine copes with.
PARALLEL_RENDERS = 6


@dataclass
class Stack:
    """LocalStack's media services and gateway, and `gateway-2` and `gateway-3` beside it."""

    local: LocalStack
    extra: GatewayReplicas
    ledger_url: str

    @property
    def addresses(self) -> list[str]:
        return [self.local.gateway_address, self.extra.addresses["gateway-2"], self.extra.addresses["gateway-3"]]

    def proxy(self, replicas: int) -> RoundRobinProxy:
        """A proxy in front of the first `replicas` gateways."""
        return RoundRobinProxy([int(address.rsplit(":", 1)[1]) for address in self.addresses[:replicas]])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def stack(fake: FakeOpenAI, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ledger_url = postgres.database()
    logs = tmp_path_factory.mktemp("shared-logs")
    with RedisServer() as redis_server:
        env = {
            "RENDER_STATE_URL": redis_server.url,
            "RENDER_LEASE_SECONDS": "3",
            # The gateways keep music uploads there, the image and audio services their asset cache.
            "ASSET_CACHE_URL": redis_server.url,
            "SPEND_LEDGER_URL": ledger_url,
            "RESULTS_DIR": str(tmp_path_factory.mktemp("shared-results")),
            "IMAGE_PROVIDER": "gpt-image-1-mini",
            "TTS_PROVIDER": "openai",
            **fake.service_env(),
        }
        local = LocalStack(env=env, log_dir=logs).start()
        extra = GatewayReplicas(local, env, logs)
        try:
            extra.start("gateway-2")
            extra.start("gateway-3")
            yield Stack(local, extra, ledger_url)
        finally:
            extra.stop()
            local.stop()


Calls = collections.Counter[tuple[str, str]]


@dataclass(frozen=True)
class Mark:
    """Where the provider's request log and the ledger stood, so that a test counts only what came after."""

    calls: Calls
    ledger_id: int


def _calls(fake: FakeOpenAI) -> Calls:
    """Every paid call the fake received: ("image", prompt) or ("speech", text), with how often."""
    images = [("image", r.json()["prompt"]) for r in fake.requests_to(IMAGES, "POST")]
    return collections.Counter(images + [("speech", r.json()["input"]) for r in fake.requests_to(SPEECH, "POST")])


def _mark(fake: FakeOpenAI, stack: Stack) -> Mark:
    with psycopg.connect(stack.ledger_url) as db:
        (last,) = db.execute("SELECT coalesce(max(id), 0) FROM spend").fetchone()  # type: ignore[misc]
    return Mark(_calls(fake), last)


def _calls_since(fake: FakeOpenAI, mark: Mark) -> Calls:
    return _calls(fake) - mark.calls


def _rows_since(stack: Stack, mark: Mark) -> list[tuple[str, str, str, bool]]:
    """(render_id, scene_id, media_kind, cache_hit) of every ledger row written since `mark`, by any replica."""
    with psycopg.connect(stack.ledger_url) as db:
        query = "SELECT render_id, scene_id, media_kind, cache_hit FROM spend WHERE id > %s ORDER BY id"
        return db.execute(query, (mark.ledger_id,)).fetchall()


def _assert_one_row_per_asset(rows: list[tuple[str, str, str, bool]]) -> None:
    keys = [row[:3] for row in rows]
    duplicates = [key for key, count in collections.Counter(keys).items() if count > 1]
    assert not duplicates, f"ledger rows written twice: {duplicates}"


def _small_example(folder: Path) -> Path:
    """examples/finished-vertical.yaml as written (three scenes, cards, crossfades, highlighted captions, sidecars,
    loudness, its music file) but at 320p10 draft: its own 1280p30 would take minutes per render on 2 cores."""
    script = yaml.safe_load(EXAMPLE.read_text())
    script["output"] = {"aspect_ratio": "9:16", "height": 320, "fps": 10, "quality": "draft"}
    music = script["finishing"]["music"]["file"]
    (folder / music).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLE.parent / music, folder / music)
    path = folder / EXAMPLE.name
    path.write_text(yaml.safe_dump(script, sort_keys=False))
    return path


def _cli_render(script: Path, output: Path, gateway: str) -> None:
    """One `scenecast render` process: a new client, so a new connection, which the proxy sends to the next replica
    (channels within one process would share a single connection)."""
    cli = Path(sys.executable).with_name("scenecast")
    done = subprocess.run(
        [str(cli), "render", str(script), "-o", str(output), "--gateway", gateway], capture_output=True, timeout=180
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")[-2000:]


@pytest.mark.parametrize("replicas", [2, 3])
def test_the_cli_renders_the_finished_example_through_any_replica_five_times_of_five(
    stack: Stack, fake: FakeOpenAI, replicas: int, tmp_path: Path
) -> None:
    script = _small_example(tmp_path)
    narrations = [scene["narration"] for scene in yaml.safe_load(script.read_text())["scenes"]]
    mark = _mark(fake, stack)
    proxy = stack.proxy(replicas)
    try:
        for attempt in range(5):
            output = tmp_path / f"finished-{attempt}.mp4"
            _cli_render(script, output, proxy.address)
            probed = probe_mp4(output)
            assert (probed.video_codec, probed.width, probed.height) == ("h264", 180, 320)
            assert probed.audio_codec == "aac"
            assert " ".join(probed.subtitle_texts).split() == " ".join(narrations).split()
            assert output.with_suffix(".srt").stat().st_size > 0
            assert output.with_suffix(".vtt").stat().st_size > 0
    finally:
        proxy.close()
    # Each run of the CLI opened two connections: the music upload, then the render, each to the next replica in
    # turn. So every render used music that another replica had taken in, and every replica served some.
    assert len(proxy.targets) == 2 * 5, proxy.targets
    assert all(upload != render for upload, render in zip(proxy.targets[::2], proxy.targets[1::2], strict=True))
    assert set(proxy.targets) == set(proxy.connections)
    rows = _rows_since(stack, mark)
    assert len(rows) == 5 * 2 * len(narrations), "one row per image and per narration of every render"
    _assert_one_row_per_asset(rows)
    assert sum(not hit for *_, hit in rows) == _calls_since(fake, mark).total()


@dataclass(frozen=True)
class Resumed:
    """What the fake and the ledger saw of a render whose replica was killed, and of the same script rendered again."""

    first_run: Calls
    second_run: Calls
    summary: render_service_pb2.RenderSummary
    rows: list[tuple[str, str, str, bool]]
    calls: int
    video: Path


def _killed_request() -> render_service_pb2.RenderRequest:
    scenes = [
        types_pb2.Scene(id=f"k{index}", narration=f"Killed step {index}.", visual_prompt=f"A crane, view {index}.")
        for index in range(KILLED_SCENES)
    ]
    return render_service_pb2.RenderRequest(scenes=scenes, output=SMALL)


@pytest.fixture(scope="module")
def resumed(stack: Stack, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    """Renders through gateway-2 and SIGKILLs it as soon as the first asset is ready, while the other assets of the
    first scenes are still being made; then renders the same script through the proxy, which the survivors answer.
    gateway-2 is started again afterwards, for the tests that follow."""
    mark = _mark(fake, stack)
    fake.add_fault(Fault(IMAGES, status=0, hang_seconds=0.5))
    for _ in range(CONCURRENT_SCENES - 1):
        fake.add_fault(Fault(IMAGES, status=0, hang_seconds=HELD_SECONDS))
    for _ in range(CONCURRENT_SCENES):
        fake.add_fault(Fault(SPEECH, status=0, hang_seconds=HELD_SECONDS))
    address = stack.extra.addresses["gateway-2"]
    try:
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as died:
            for response in render_service_pb2_grpc.RenderServiceStub(channel).Render(_killed_request(), timeout=60):
                if response.progress.stage == render_service_pb2.RENDER_STAGE_ASSET_READY:
                    stack.extra.kill("gateway-2")
        assert died.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        first_run = _calls_since(fake, mark)
        proxy = stack.proxy(3)  # gateway-2 refuses connections: the proxy skips it, as a Service drops a dead pod
        video = tmp_path_factory.mktemp("resumed") / "resumed.mp4"
        try:
            summary = render_to_file(proxy.address, _killed_request(), video, timeout_seconds=60)
        finally:
            proxy.close()
        calls = _calls_since(fake, mark)
    finally:
        stack.extra.start("gateway-2")
    return Resumed(first_run, calls - first_run, summary, _rows_since(stack, mark), calls.total(), video)


def test_a_script_whose_replica_was_killed_is_finished_by_a_survivor_paying_only_for_the_rest(
    resumed: Resumed,
) -> None:
    every_asset = collections.Counter(
        [("image", scene.visual_prompt) for scene in _killed_request().scenes]
        + [("speech", scene.narration) for scene in _killed_request().scenes]
    )
    # The replica died with calls still under way (the fake held them), and the scenes after the first few unstarted.
    assert 1 < resumed.first_run.total() <= 2 * CONCURRENT_SCENES
    assert resumed.first_run + resumed.second_run == every_asset, "each asset requested once, over both runs"
    hits = sum(s.visual.cache_hit for s in resumed.summary.scenes) + sum(
        s.narration.cache_hit for s in resumed.summary.scenes
    )
    assert hits == resumed.first_run.total(), "what the first run ordered, the second took from the cache"
    probed = probe_mp4(resumed.video)
    assert (probed.video_codec, probed.width, probed.height) == ("h264", 320, 180)
    assert probed.duration_s == pytest.approx(resumed.summary.duration_ms / 1000, abs=0.2)


def test_a_killed_replica_leaves_no_duplicate_ledger_rows(resumed: Resumed) -> None:
    _assert_one_row_per_asset(resumed.rows)
    finished = [row for row in resumed.rows if row[0] == resumed.summary.render_id]
    assert len(finished) == 2 * KILLED_SCENES


def test_a_killed_replica_leaves_a_ledger_row_for_every_provider_call(resumed: Resumed) -> None:
    assert sum(not hit for *_, hit in resumed.rows) == resumed.calls


def test_thirty_renders_spread_over_three_replicas_all_end_with_a_good_mp4(
    stack: Stack, fake: FakeOpenAI, tmp_path: Path
) -> None:
    narrations = [f"Render number {index} is short." for index in range(RENDERS)]
    for index, narration in enumerate(narrations):
        scene = {"id": "only", "narration": narration, "visual": f"A hard hat, {index}."}
        output = {"aspect_ratio": "16:9", "height": 180, "fps": 10, "quality": "draft"}
        (tmp_path / f"{index}.yaml").write_text(yaml.safe_dump({"output": output, "scenes": [scene]}))
    mark = _mark(fake, stack)
    proxy = stack.proxy(3)
    try:
        with ThreadPoolExecutor(PARALLEL_RENDERS) as pool:
            list(
                pool.map(
                    lambda index: _cli_render(tmp_path / f"{index}.yaml", tmp_path / f"{index}.mp4", proxy.address),
                    range(RENDERS),
                )
            )
    finally:
        proxy.close()
    assert proxy.connections == dict.fromkeys(proxy.connections, RENDERS // 3), "every replica took its share"
    for index, narration in enumerate(narrations):
        probed = probe_mp4(tmp_path / f"{index}.mp4")
        assert (probed.video_codec, probed.width, probed.height, probed.audio_codec) == ("h264", 320, 180, "aac")
        assert probed.duration_s == pytest.approx(probed.video_duration_s, abs=0.2)
        assert probed.duration_s == pytest.approx(probed.audio_duration_s, abs=0.2)
        assert probed.subtitle_texts == [narration]
    rows = _rows_since(stack, mark)
    _assert_one_row_per_asset(rows)
    assert len({render_id for render_id, *_ in rows}) == RENDERS
    assert sorted(kind for _, _, kind, hit in rows if not hit) == ["image"] * RENDERS + ["speech"] * RENDERS
    assert _calls_since(fake, mark).total() == 2 * RENDERS
