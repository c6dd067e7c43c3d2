"""A real throwaway PostgreSQL cluster on a free loopback port in a temp folder, for the spend ledger's tests."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from scenecast_cli.stack import free_port

_START_SECONDS = 30.0
_STOP_SECONDS = 15.0
# PostgreSQL refuses to run as root; the tests do run as root in CI and containers, so there the cluster belongs to
# this existing unprivileged account (tests must not create users).
_UNPRIVILEGED_USER = "nobody"


class PostgresServer:
    """Debian's PostgreSQL binaries (`initdb`, `postgres`): a fresh cluster, trust authentication for loopback only
    (it listens on 127.0.0.1 and a Unix socket inside its private folder, nowhere else), fsync off for speed. Use it as
    a context manager; `database()` gives each test an empty database of its own.

    A missing installation fails the test (it does not skip): `make test` installs the package, so its absence is a
    broken setup.
    """

    def __init__(self) -> None:
        self.port = free_port()
        # Not pytest's tmp_path: when running as root the cluster's owner must be able to reach its folder, and
        # pytest's base folder is private to root.
        self._folder = Path(tempfile.mkdtemp(prefix="scenecast-postgres-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The cluster's own `postgres` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new, empty database, by URL."""
        name = f"test_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> PostgresServer:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name))
        if not binaries:
            pytest.fail("PostgreSQL is not installed; install Debian's postgresql package (make test does)")
        bin_dir = Path(binaries[-1])
        as_owner = self._as_owner()
        data, log = self._folder / "data", self._folder / "postgres.log"
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]
        result = subprocess.run([*as_owner, *initdb], capture_output=True, timeout=120)
        if result.returncode != 0:
            self.stop()
            pytest.fail(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port)]
        for setting in (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self._folder}",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            f"log_directory={self._folder}",
        ):
            argv += ["-c", setting]
        with log.open("wb") as output:
            self._process = subprocess.Popen([*as_owner, *argv], stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_SECONDS
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"PostgreSQL did not start on port {self.port}: {_tail(log)}")
                time.sleep(0.1)

    def _as_owner(self) -> list[str]:
        """The command prefix that runs the binaries as the cluster's owner: nothing when not root."""
        if os.geteuid() != 0:
            return []
        account = pwd.getpwnam(_UNPRIVILEGED_USER)
        os.chown(self._folder, account.pw_uid, account.pw_gid)
        return [
            "setpriv",
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--clear-groups",
            "--reset-env",
        ]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: it disconnects clients (SIGTERM would wait for them to leave).
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One cluster for the whole test session (registered in tests/conftest.py); tests take databases from it."""
    with PostgresServer() as server:
        yield server


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except FileNotFoundError:
        return "(no log)"
