"""What the tests' real servers (Redis, PostgreSQL) share: a private temp folder, one process, waiting until it
answers, and stopping it."""

from __future__ import annotations

import abc
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import pytest

from scenecast_cli.stack import free_port

_STOP_SECONDS = 15.0


class LocalServer(abc.ABC):
    """A server on a free loopback port with its files in a fresh temp folder; use it as a context manager.

    A missing installation fails the test (it does not skip): `make test` installs the packages, so their absence is
    a broken setup.
    """

    name: str
    start_seconds: float
    # What tells the server to stop at once.
    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self) -> None:
        self.port = free_port()
        # Not pytest's tmp_path: a server run as another user (PostgreSQL, when the tests run as root) must be able to
        # reach its folder, and pytest's base folder is private to root.
        self.folder = Path(tempfile.mkdtemp(prefix=f"scenecast-{self.name}-"))
        self.log = self.folder / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @abc.abstractmethod
    def _launch(self) -> subprocess.Popen[bytes]:
        """Starts the server process (after any set-up, failing the test with the reason when that fails)."""

    @abc.abstractmethod
    def _answers(self) -> bool:
        """Whether the server takes connections yet."""

    def start(self) -> Self:
        self._process = self._launch()
        deadline = time.monotonic() + self.start_seconds
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"{self.name} did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def fail(self, message: str) -> None:
        """Stops what was started and fails the test with `message` and the end of the server's log."""
        self.stop()
        try:
            tail = self.log.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            tail = "(no log)"
        pytest.fail(f"{message}: {tail}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(self.stop_signal)
            try:
                self._process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
