"""Where state lives by default: the user's own XDG state and cache folders, never fixed names in the shared temp
folder. Read in a fresh process with a test HOME, as each service reads its settings at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Each service's settings, read in a fresh process as at start-up: the defaults are fixed when they are imported.
_DEFAULTS = """
import json
from gateway.config import GatewaySettings
from services.assembler.config import AssemblerSettings
from services.audio.config import AudioSettings
from services.image.config import ImageSettings
from services.video.config import VideoSettings

gateway = GatewaySettings()
print(json.dumps({
    "results": str(gateway.output_dir),
    "ledger": str(gateway.ledger_path),
    "segments": AssemblerSettings().segment_cache_dir,
    "assets": [ImageSettings().asset_cache_dir, AudioSettings().asset_cache_dir, VideoSettings().asset_cache_dir],
}))
"""
_STATE_VARIABLES = (
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "RENDER_OUTPUT_DIR",
    "SPEND_LEDGER_PATH",
    "ASSET_CACHE_DIR",
    "SEGMENT_CACHE_DIR",
)


def _defaults(tmp_path: Path, **env: str) -> dict[str, object]:
    base = {name: value for name, value in os.environ.items() if name not in _STATE_VARIABLES}
    # From an empty folder, so that no .env file of a checkout is read.
    run = subprocess.run(
        [sys.executable, "-c", _DEFAULTS], env={**base, **env}, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout)


def test_state_defaults_to_the_users_own_folders_under_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state, cache = home / ".local" / "state" / "scenecast", home / ".cache" / "scenecast"
    assert _defaults(tmp_path, HOME=str(home)) == {
        "results": str(state / "renders"),
        "ledger": str(state / "renders" / "spend-ledger.sqlite3"),
        "segments": str(cache / "segments"),
        "assets": [str(cache / "assets")] * 3,
    }


def test_state_defaults_follow_xdg_folders(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "st"),
        "XDG_CACHE_HOME": str(tmp_path / "ca"),
    }
    assert _defaults(tmp_path, **env) == {
        "results": str(tmp_path / "st" / "scenecast" / "renders"),
        "ledger": str(tmp_path / "st" / "scenecast" / "renders" / "spend-ledger.sqlite3"),
        "segments": str(tmp_path / "ca" / "scenecast" / "segments"),
        "assets": [str(tmp_path / "ca" / "scenecast" / "assets")] * 3,
    }
