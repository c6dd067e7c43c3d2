"""Processes the tests start (one service on its own) and those they must see end (found by their command lines)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scenecast_cli.stack import free_port, wait_until_serving


@contextmanager
def service_process(module: str, env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """`python -m <module>` on free loopback ports, with `env` added to this environment and its output in `log`:
    its address and pid once it serves; terminated on exit."""
    address = f"127.0.0.1:{free_port()}"
    variables = {**os.environ, "LISTEN_ADDRESS": address, "METRICS_PORT": str(free_port()), **env}
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", module], env=variables, stdout=output, stderr=output)
        try:
            wait_until_serving(address, 60, process)
            yield address, process.pid
        finally:
            process.terminate()
            process.wait(30)


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (an FFmpeg working on files under a folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode("utf-8", "replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
