"""A real redis-server on a free loopback port in a temp folder, for the tests of the shared asset cache."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from tests.local_server import LocalServer


class RedisServer(LocalServer):
    """Debian's `redis-server` with no persistence, bound to 127.0.0.1 only."""

    name = "redis"
    start_seconds = 10.0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def _launch(self) -> subprocess.Popen[bytes]:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; install Debian's redis-server package (make test does)")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        argv += ["--save", "", "--appendonly", "no", "--logfile", str(self.log)]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _answers(self) -> bool:
        with self.client() as client:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False
