"""A real throwaway PostgreSQL cluster on a free loopback port in a temp folder, for the spend ledger's tests."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.local_server import LocalServer

# PostgreSQL refuses to run as root; the tests do run as root in CI and containers, so there the cluster belongs to
# this existing unprivileged account (tests must not create users).
_UNPRIVILEGED_USER = "nobody"


class PostgresServer(LocalServer):
    """Debian's PostgreSQL binaries (`initdb`, `postgres`): a fresh cluster, trust authentication for loopback only
    (it listens on 127.0.0.1 and a Unix socket inside its private folder, nowhere else), fsync off for speed.
    `database()` gives each test an empty database of its own."""

    name = "postgres"
    start_seconds = 30.0
    # PostgreSQL's "fast" shutdown: it disconnects clients (SIGTERM would wait for them to leave).
    stop_signal = signal.SIGINT

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

    def _launch(self) -> subprocess.Popen[bytes]:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name))
        if not binaries:
            pytest.fail("PostgreSQL is not installed; install Debian's postgresql package (make test does)")
        bin_dir = Path(binaries[-1])
        as_owner = self._as_owner()
        data = self.folder / "data"
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]
        result = subprocess.run([*as_owner, *initdb], capture_output=True, timeout=120)
        if result.returncode != 0:
            self.log.write_bytes(result.stderr)
            self.fail("initdb failed")
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port)]
        for setting in (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.folder}",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            f"log_directory={self.folder}",
        ):
            argv += ["-c", setting]
        with self.log.open("wb") as output:
            return subprocess.Popen([*as_owner, *argv], stdout=output, stderr=subprocess.STDOUT)

    def _answers(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _as_owner(self) -> list[str]:
        """The command prefix that runs the binaries as the cluster's owner: nothing when not root."""
        if os.geteuid() != 0:
            return []
        account = pwd.getpwnam(_UNPRIVILEGED_USER)
        os.chown(self.folder, account.pw_uid, account.pw_gid)
        return [
            "setpriv",
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--clear-groups",
            "--reset-env",
        ]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One cluster for the whole test session (registered in tests/conftest.py); tests take databases from it."""
    with PostgresServer() as server:
        yield server
