"""What the whole suite needs: the fakes serve provider output from 127.0.0.1, which production refuses to fetch."""

from __future__ import annotations

import os

# Read by services.common.download at call time; LocalStack's service processes inherit it from this environment.
os.environ.setdefault("ALLOW_PRIVATE_OUTPUT_URLS", "true")
# The asset cache answers a repeated request without calling the provider, which would hide the calls (and injected
# faults) that other tests count; tests of the cache set ASSET_CACHE_DIR to their own folder.
os.environ.setdefault("ASSET_CACHE_DIR", "off")
# Likewise the assembler's segment cache would join segments that earlier tests encoded instead of encoding them.
os.environ.setdefault("SEGMENT_CACHE_DIR", "off")

# The throwaway PostgreSQL cluster's session fixture (`postgres`): one cluster for every test that asks for it.
pytest_plugins = ["tests.postgres_server"]
