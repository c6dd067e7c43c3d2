"""`make demo` is never flaky (issue 19): every process of a local stack binds port 0 itself and reports the ports it
got, so no other process can take a port between its choice and its bind (the race free_port's probe had)."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scenecast_cli import stack as stack_module
from scenecast_cli.stack import LocalStack

# The thief makes the old race fail on every start, so a few starts in a row prove it; each costs seconds of the suite.
_STARTS = 8


@pytest.fixture
def port_thief(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Another program on a busy machine that binds each port free_port hands out right after its probe releases it:
    the race that made `make demo` fail, won by the other side every time."""
    stolen: list[socket.socket] = []
    original = stack_module.free_port

    def free_port_then_steal() -> int:
        port = original()
        listener = socket.create_server(("127.0.0.1", port))
        stolen.append(listener)
        return port

    monkeypatch.setattr(stack_module, "free_port", free_port_then_steal)
    yield
    for listener in stolen:
        listener.close()


def _start_and_check(logs: Path, index: int, failures: list[str]) -> None:
    (logs / str(index)).mkdir()
    local = LocalStack(log_dir=logs / str(index), web=True)
    try:
        with local:
            # Every service, the gateway and the web API, each on its own port.
            assert len(set(local.addresses.values())) == len(stack_module.SERVICES) + 2, local.addresses
            for name, port in local.metrics_ports.items():
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    assert b"scenecast_rpcs_in_flight" in response.read(), name
            assert httpx.get(f"{local.web_url}/v1/health", timeout=10).status_code == 200
    except Exception as error:  # noqa: BLE001 - every failed start is collected and reported with its logs
        failures.append(f"start {index}: {error!r}")


def test_every_one_of_many_starts_works_while_others_take_free_ports(tmp_path: Path, port_thief: None) -> None:
    # Two stacks start side by side, as two `make demo` runs or test sessions on one machine would.
    failures: list[str] = []
    for first in range(0, _STARTS, 2):
        pair = [
            threading.Thread(target=_start_and_check, args=(tmp_path, index, failures)) for index in (first, first + 1)
        ]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()
    assert failures == [], failures
