"""What the whole suite needs: the fakes serve provider output from 127.0.0.1, which production refuses to fetch."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# The providers' ALLOW_PRIVATE_OUTPUT_URLS setting (read at start-up); LocalStack's service processes inherit it.
os.environ.setdefault("ALLOW_PRIVATE_OUTPUT_URLS", "true")
# The asset cache answers a repeated request without calling the provider, which would hide the calls (and injected
# faults) that other tests count; tests of the cache set ASSET_CACHE_DIR to their own folder.
os.environ.setdefault("ASSET_CACHE_DIR", "off")
# Likewise the assembler's segment cache would join segments that earlier tests encoded instead of encoding them.
os.environ.setdefault("SEGMENT_CACHE_DIR", "off")

# The user's state and cache folders (results, the spend ledger, caches: services/common/state.py) point into a folder
# of this run, for this process and every service it starts, so that tests never write into the real ~/.local or
# ~/.cache. Set here, before any test module imports the settings, whose defaults are fixed on import.
_USER_FOLDERS = tempfile.mkdtemp(prefix="scenecast-tests-")
os.environ["XDG_STATE_HOME"] = os.path.join(_USER_FOLDERS, "state")
os.environ["XDG_CACHE_HOME"] = os.path.join(_USER_FOLDERS, "cache")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_USER_FOLDERS, ignore_errors=True)


# The throwaway PostgreSQL cluster's session fixture (`postgres`): one cluster for every test that asks for it.
pytest_plugins = ["tests.postgres_server"]
