"""Fixtures of the private-state unit tests (test_state.py, test_state_files.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common umask (022), under which a folder made without care is 0755 and a file 0644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's elsewhere, that a link planted in a state folder points at."""
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_text("precious")
    return path
