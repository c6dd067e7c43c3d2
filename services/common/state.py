"""Where scenecast keeps state by default, and how it creates it: folders 0700, files 0600, never through a link.

Results and the spend ledger are state ($XDG_STATE_HOME/scenecast, else ~/.local/state/scenecast); the asset and
segment caches are caches ($XDG_CACHE_HOME/scenecast, else ~/.cache/scenecast). Both are the user's own, unlike fixed
names in the shared temp folder, where any local user could read what is kept or plant a file or link there first.
A folder set in a setting (a container's volume, say) replaces the default and gets the same checks.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Literal

import platformdirs

_LOGGER = logging.getLogger(__name__)

_APP = "scenecast"
# Creating a file: exclusive (never an existing file, nor the target of a link planted at its name), not inherited by
# FFmpeg and other children.
PRIVATE_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeStateLocation(ValueError):
    """A state folder or file that scenecast will not use; raised at start-up, naming the setting to change."""


def state_path(name: str) -> Path:
    """The default location of `name` among state that outlives a restart (results, the spend ledger)."""
    return platformdirs.user_state_path(_APP) / name


def cache_path(name: str) -> Path:
    """The default location of `name` among caches (entries that can be made again)."""
    return platformdirs.user_cache_path(_APP) / name


def private_dir(path: Path, setting: str) -> Path:
    """Makes `path` a folder that only this user can enter, and returns it.

    Missing folders on the way are created 0700. An existing folder must be a real folder (not a link) owned by this
    user; one that others could read or enter is tightened to 0700. Anything else is refused, naming `setting`: what
    another user owns, they can empty, read or fill with links to files of ours.
    """
    _make_missing(path, setting)
    _own(path, setting, "folder")
    return path


def _make_missing(path: Path, setting: str) -> None:
    """Creates the missing folders of `path`, outermost first, each 0700 (the umask can only narrow that)."""
    missing = [folder for folder in (path, *path.parents) if not os.path.lexists(folder)]
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass  # another process (a replica starting beside this one) made it first; checked like any other
        except OSError as error:
            raise UnsafeStateLocation(
                f"{setting}={path}: cannot create {folder} ({error.strerror}); set {setting} to a folder this user "
                "can write"
            ) from None


def create_private_file(path: Path) -> BinaryIO:
    """Creates `path` for writing, 0600, and returns it open.

    Raises FileExistsError when anything is at that name already, a link included, rather than writing through it:
    callers write to a fresh name (see `write_private_file`) or remove a leftover of their own first.
    """
    return os.fdopen(os.open(path, PRIVATE_CREATE_FLAGS, 0o600), "wb")


def write_private_file(path: Path, data: bytes) -> None:
    """Replaces `path` with `data` at once: written under a fresh name beside it, then renamed over it (a rename
    replaces a link at `path`; it never writes to the link's target). Readers see the old file or the new one."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with create_private_file(temp) as file:
            file.write(data)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def private_file(path: Path, setting: str) -> Path:
    """Makes `path` a regular file of this user's, 0600, in a private folder (created empty when missing), for a
    library that opens files by name (SQLite): it must find neither a link there nor a file that others can read."""
    private_dir(path.parent, setting)
    with contextlib.suppress(FileExistsError):
        create_private_file(path).close()
    _own(path, setting, "file")
    return path


def _own(path: Path, setting: str, kind: Literal["folder", "file"]) -> None:
    """Checks that `path` is a folder or regular file of this user's, not a link, and narrows it to 0700 / 0600.

    Opened without following a link (and without waiting, should it be a FIFO), then checked and narrowed through
    the descriptor: what is checked is what is changed, even if the name is swapped meanwhile.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if kind == "folder" else 0)
    try:
        handle = os.open(path, flags)
    except OSError as error:
        # A link is ELOOP, or ENOTDIR when a folder was asked for (the link itself is no folder).
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise UnsafeStateLocation(
                f"{setting}={path} is a symbolic link; scenecast never keeps state through a link, which could point "
                f"it anywhere; set {setting} to the {kind} itself"
            ) from None
        if error.errno == errno.ENOTDIR:
            raise UnsafeStateLocation(f"{setting}={path} is not a folder; set {setting} to a folder") from None
        raise UnsafeStateLocation(f"{setting}={path}: cannot open the {kind} ({error.strerror})") from None
    try:
        info = os.fstat(handle)
        if kind == "file" and not stat.S_ISREG(info.st_mode):
            raise UnsafeStateLocation(f"{setting}={path} is not a regular file; set {setting} to a file name")
        if info.st_uid != os.geteuid():
            raise UnsafeStateLocation(
                f"{setting}={path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}), so others "
                f"could read or replace what scenecast keeps there; set {setting} to a {kind} of this user's own (a "
                "missing one is created, private)"
            )
        private = 0o700 if kind == "folder" else 0o600
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(handle, private)
            _LOGGER.warning(
                "%s=%s was open to other users (mode %o); made it private (%o)",
                setting,
                path,
                stat.S_IMODE(info.st_mode),
                private,
            )
    finally:
        os.close(handle)
