"""A real redis-server on a free loopback port in a temp folder, for the tests of the shared asset cache."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from scenecast_cli.stack import free_port

_START_SECONDS = 10.0
_STOP_SECONDS = 10.0


class RedisServer:
    """Starts Debian's `redis-server` with no persistence, bound to 127.0.0.1 only; use it as a context manager.

    A missing binary fails the test (it does not skip): CI installs the package, so its absence is a broken setup.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._folder = Path(tempfile.mkdtemp(prefix="scenecast-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; install Debian's redis-server package (.ci/run does)")
        log = self._folder / "redis.log"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._folder)]
        argv += ["--save", "", "--appendonly", "no", "--logfile", str(log)]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_SECONDS
        with self.client() as client:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        pytest.fail(f"redis-server did not start on port {self.port}: {_tail(log)}")
                    time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except FileNotFoundError:
        return "(no log)"
