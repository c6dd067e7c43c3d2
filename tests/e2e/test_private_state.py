"""Private state with the services as processes: default folders made 0700 at start-up in the user's own folders, an
unsafe state folder stops a service at start-up naming its setting, and the CLI never writes through a planted link.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenecast.v1 import render_service_pb2, types_pb2

from scenecast_cli.client import render_to_file, write_sidecars
from scenecast_cli.stack import LocalStack, free_port, wait_until_serving
from services.common.server import LIVENESS
from tests.private_files import mode
from tests.probe import probe_mp4

# Variables that would point the state elsewhere than the defaults under test (tests/conftest.py sets some).
_STATE_VARIABLES = ("XDG_STATE_HOME", "XDG_CACHE_HOME", "RENDER_OUTPUT_DIR", "SPEND_LEDGER_PATH")
_CACHE_VARIABLES = ("ASSET_CACHE_DIR", "SEGMENT_CACHE_DIR")


def _env(home: Path, **extra: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if k not in _STATE_VARIABLES + _CACHE_VARIABLES}
    return {**kept, "HOME": str(home), **extra}


def _start(module: str, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Starts a service from `cwd` (an empty folder, so that no .env file of a checkout is read), logging to
    `cwd/<module>.log`."""
    address = f"127.0.0.1:{free_port()}"
    env = {**env, "LISTEN_ADDRESS": address, "METRICS_PORT": str(free_port())}
    with (cwd / f"{module}.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=cwd, stdout=log, stderr=log)
    return process, address


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_services_make_their_default_state_folders_private_at_start_up(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    home, temp, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for folder in (home, temp, work):
        folder.mkdir()
    for module in ("gateway", "services.image", "services.assembler"):
        process, address = _start(module, _env(home, TMPDIR=str(temp)), work)
        processes.append(process)
        # The gateway is ready only once every media service is; it is up (and has made its folders) before that.
        wait_until_serving(address, 60, process, service=LIVENESS if module == "gateway" else "")
    state, cache = home / ".local" / "state" / "scenecast", home / ".cache" / "scenecast"
    folders = [home / ".local", home / ".local" / "state", state, state / "renders", cache, cache / "assets"]
    assert {str(p.relative_to(home)): mode(p) for p in [*folders, cache / "segments"]} == {
        str(p.relative_to(home)): 0o700 for p in [*folders, cache / "segments"]
    }
    # The spend ledger is created at start-up too, beside the results.
    assert mode(state / "renders" / "spend-ledger.sqlite3") == 0o600
    # Nothing in the shared temp folder.
    assert list((tmp_path / "tmp").iterdir()) == []


def _refused(module: str, env: dict[str, str], cwd: Path) -> str:
    """Starts a service that must refuse to start; returns what it logged."""
    process, _ = _start(module, env, cwd)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{module} started with an unsafe state folder") from None
    assert process.returncode != 0
    return (cwd / f"{module}.log").read_text(errors="replace")


def test_a_symlinked_results_folder_stops_the_gateway_naming_the_setting(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "renders").symlink_to(real)
    log = _refused("gateway", _env(tmp_path, RENDER_OUTPUT_DIR=str(tmp_path / "renders")), tmp_path)
    assert f"RENDER_OUTPUT_DIR={tmp_path / 'renders'} is a symbolic link" in log
    assert list(real.iterdir()) == []  # nothing made through the link (no ledger, no music folder)


def test_a_symlinked_segment_cache_stops_the_assembler_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "segments").symlink_to(tmp_path / "real")
    log = _refused("services.assembler", _env(tmp_path, SEGMENT_CACHE_DIR=str(tmp_path / "segments")), tmp_path)
    assert f"SEGMENT_CACHE_DIR={tmp_path / 'segments'} is a symbolic link" in log


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_an_asset_cache_of_another_user_stops_the_image_service_naming_the_setting(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    log = _refused("services.image", _env(tmp_path, ASSET_CACHE_DIR=str(theirs)), tmp_path)
    assert f"ASSET_CACHE_DIR={theirs} belongs to uid 65534, not to this user (uid 0)" in log


def test_the_cli_never_writes_through_links_planted_at_its_file_names(stack: LocalStack, tmp_path: Path) -> None:
    """`out.mp4.part` (where the MP4 is streamed) and the sidecars' names, planted in the output folder as links to a
    file of the user's: the file is unchanged, and the outputs are fresh files."""
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    for name in ("out.mp4.part", "out.srt", "out.srt.part"):
        (tmp_path / name).symlink_to(victim)
    request = render_service_pb2.RenderRequest(
        scenes=[types_pb2.Scene(id="one", title="Private", narration="Keep your state to yourself.")],
        output=types_pb2.OutputSettings(
            aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=25, quality=types_pb2.QUALITY_DRAFT
        ),
        finishing=types_pb2.Finishing(sidecars=[types_pb2.SUBTITLE_FORMAT_SRT]),
    )
    summary = render_to_file(stack.gateway_address, request, tmp_path / "out.mp4", timeout_seconds=120)
    assert write_sidecars(summary, tmp_path / "out.mp4") == [tmp_path / "out.srt"]
    assert victim.read_text() == "precious"
    assert not any(p.is_symlink() for p in tmp_path.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out.srt", "precious.txt"]
    assert (tmp_path / "out.mp4").stat().st_size == summary.size_bytes and probe_mp4(tmp_path / "out.mp4").width
    assert (tmp_path / "out.srt").read_bytes() == summary.subtitles[0].text.encode()
