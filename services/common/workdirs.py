"""Per-call work folders, and the start-up sweep that removes those a killed process left behind.

A folder is named `<prefix><pid>-<random>` and, while its call runs, its owner holds an exclusive `flock` on it. The
kernel drops the lock when the owner dies, SIGKILL included, so a folder whose lock can be taken has no live owner.
The pid closes the one gap, between creating a folder and locking it: a folder found unlocked is removed only when
its pid is gone, or is this very process (which, at start-up, has made none yet: in a container every restart is
pid 1 again). A folder of a live other process that is being created is left alone; so is, until the next start-up,
one whose pid was reused by another process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_LOGGER = logging.getLogger(__name__)


@contextlib.contextmanager
def work_folder(prefix: str, root: str | None) -> Iterator[Path]:
    """A new private (0700) folder under `root` (the system temp folder when None), removed when the block ends."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(descriptor)


def sweep(prefix: str, root: str | None) -> list[Path]:
    """Removes the folders named `<prefix><pid>-*` under `root` that no live process owns; returns them."""
    folder = Path(root or tempfile.gettempdir())
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = pattern.match(entry.name)
        if match is None or not _owned_directory(entry):
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _alive(pid):
            # A live other process: its folder is in use (locked), or being created. Only a reused pid is missed.
            continue
        try:
            descriptor = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry, ignore_errors=True)
        except BlockingIOError:
            continue  # locked: a call of this process is using it
        finally:
            os.close(descriptor)
        removed.append(entry)
    if removed:
        _LOGGER.info("removed %d work folders left by stopped processes in %s", len(removed), folder)
    return removed


def _owned_directory(path: Path) -> bool:
    """A real folder (not a link) of this user: never remove what another user or a planted link points at."""
    try:
        status = path.lstat()
    except OSError:
        return False
    return path.is_dir() and not path.is_symlink() and status.st_uid == os.getuid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
