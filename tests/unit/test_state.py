"""Private state: default locations, folders 0700 and files 0600, and nothing written through a planted link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.common.state import (
    UnsafeStateLocation,
    create_private_file,
    private_dir,
    private_file,
    write_private_file,
)
from tests.private_files import mode

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")


# Under the common umask (022), where a folder made without care is 0755 and a file 0644.
pytestmark = pytest.mark.usefixtures("usual_umask")


def test_missing_folders_are_created_private(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "renders"
    assert private_dir(folder, "RENDER_OUTPUT_DIR") == folder
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", folder)] == [0o700, 0o700, 0o700]


def test_an_open_folder_of_ours_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    private_dir(folder, "ASSET_CACHE_DIR")
    assert mode(folder) == 0o700


def test_a_symlinked_state_folder_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    real.chmod(0o755)
    link = tmp_path / "renders"
    link.symlink_to(real)
    with pytest.raises(UnsafeStateLocation, match=r"RENDER_OUTPUT_DIR=.*renders is a symbolic link"):
        private_dir(link, "RENDER_OUTPUT_DIR")
    assert mode(real) == 0o755  # not tightened through the link either


def test_a_file_where_a_folder_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("")
    with pytest.raises(UnsafeStateLocation, match=r"ASSET_CACHE_DIR=.*cache is not a folder; set ASSET_CACHE_DIR"):
        private_dir(tmp_path / "cache", "ASSET_CACHE_DIR")


@needs_root
def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o755)
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(UnsafeStateLocation, match=rf"SEGMENT_CACHE_DIR=.*theirs belongs to uid {NOBODY}, not to this"):
        private_dir(folder, "SEGMENT_CACHE_DIR")


def test_a_folder_that_cannot_be_created_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(
        UnsafeStateLocation, match=r"SPEND_LEDGER_PATH=.*: cannot create .*file/sub \(Not a directory\)"
    ):
        private_dir(tmp_path / "file" / "sub", "SPEND_LEDGER_PATH")


def test_a_new_file_is_0600_and_a_planted_link_is_not_written_through(tmp_path: Path, victim: Path) -> None:
    with create_private_file(tmp_path / "new") as file:
        file.write(b"x")
    assert mode(tmp_path / "new") == 0o600
    (tmp_path / "planted").symlink_to(victim)
    with pytest.raises(FileExistsError):
        create_private_file(tmp_path / "planted")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        create_private_file(tmp_path / "dangling")
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()


def test_write_private_file_replaces_a_planted_link_not_its_target(tmp_path: Path, victim: Path) -> None:
    path = tmp_path / "summary.json"
    path.symlink_to(victim)
    write_private_file(path, b"{}")
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and path.read_bytes() == b"{}" and mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "summary.json"]  # no temp file left


def test_private_file_creates_an_empty_0600_file_in_a_private_folder(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spend.sqlite3"
    assert private_file(path, "SPEND_LEDGER_PATH") == path
    assert (mode(path.parent), mode(path), path.read_bytes()) == (0o700, 0o600, b"")


def test_private_file_tightens_a_readable_file_and_keeps_its_content(tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite3"
    path.write_bytes(b"rows")
    path.chmod(0o644)
    private_file(path, "SPEND_LEDGER_PATH")
    assert (mode(path), path.read_bytes()) == (0o600, b"rows")


@pytest.mark.parametrize("target", ["existing", "missing"])
def test_private_file_refuses_a_planted_link(tmp_path: Path, victim: Path, target: str) -> None:
    path = tmp_path / "spend.sqlite3"
    path.symlink_to(victim if target == "existing" else tmp_path / "nowhere")
    with pytest.raises(UnsafeStateLocation, match=r"SPEND_LEDGER_PATH=.*spend.sqlite3 is a symbolic link"):
        private_file(path, "SPEND_LEDGER_PATH")
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()


def test_private_file_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "spend.sqlite3")
    with pytest.raises(UnsafeStateLocation, match=r"spend.sqlite3 is not a regular file; set SPEND_LEDGER_PATH"):
        private_file(tmp_path / "spend.sqlite3", "SPEND_LEDGER_PATH")


@needs_root
def test_private_file_refuses_a_file_of_another_user(tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite3"
    path.write_bytes(b"")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(UnsafeStateLocation, match=rf"belongs to uid {NOBODY}"):
        private_file(path, "SPEND_LEDGER_PATH")
