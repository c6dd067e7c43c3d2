"""The five services as separate processes on loopback, shared by the end-to-end tests that need the defaults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scenecast_cli.stack import LocalStack
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    logs = tmp_path_factory.mktemp("logs")
    local = LocalStack(log_dir=logs).start()
    yield local
    local.stop()
    # SIGTERM is a graceful shutdown: every service drains and exits cleanly.
    assert {name: p.returncode for name, p in local.processes.items()} == dict.fromkeys(local.processes, 0), [
        (path.name, path.read_text()[-2000:]) for path in logs.iterdir()
    ]


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI API per test module: the stacks a module starts point at it (`FakeOpenAI.service_env`)."""
    with FakeOpenAI() as fake:
        yield fake
