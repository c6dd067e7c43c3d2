"""A newcomer's first run with the real `scenecast` command (issue 19): quiet `--start-services` with the logs in a
named private file, a progress bar that knows its length from the start, a one-scene draft preview, and
`--start-services` on every command that needs a gateway."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.probe import probe_mp4

SCENECAST = Path(sys.executable).parent / "scenecast"

SCRIPT = """\
title: Preview
output:
  height: 720
finishing:
  title_card:
    title: Preview
scenes:
  - id: first
    narration: The first scene talks about apples.
    visual: A bowl of apples
  - id: second
    narration: The second scene talks about bananas.
    visual: A bunch of bananas
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    return subprocess.run(
        [str(SCENECAST), *(str(script) if arg == "SCRIPT" else arg for arg in args)],
        cwd=tmp_path,  # no developer .env
        # FORCE_COLOR: rich draws the live progress bar as on a terminal, so every frame it shows is in stderr.
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "FORCE_COLOR": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_start_services_is_quiet_and_names_the_private_file_with_the_logs(tmp_path: Path) -> None:
    result = _run(tmp_path, "render", "SCRIPT", "-o", str(tmp_path / "all.mp4"), "--start-services")
    assert result.returncode == 0, result.stderr
    # No service log line reaches the terminal, and the bar never shows an unknown length.
    assert '"level"' not in result.stderr and "/None" not in result.stderr, result.stderr
    named = re.search(r"starting the services; their logs: (\S+)\n", result.stderr)
    assert named, result.stderr
    log = Path(named.group(1))
    assert log.parent == tmp_path / "state" / "scenecast" / "logs"
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700 and stat.S_IMODE(log.stat().st_mode) == 0o600
    services = {json.loads(line)["service"] for line in log.read_text().splitlines()}
    assert services == {"image", "audio", "video", "assembler", "script", "gateway"}


def test_a_draft_of_one_scene_is_its_own_short_low_video(tmp_path: Path) -> None:
    output = tmp_path / "second.mp4"
    result = _run(tmp_path, "render", "SCRIPT", "-o", str(output), "--start-services", "--scene", "second", "--draft")
    assert result.returncode == 0, result.stderr
    video = probe_mp4(output)
    assert video.height == 360
    # Only the scene asked for, and no title card before it.
    assert "bananas" in " ".join(video.subtitle_texts) and "apples" not in " ".join(video.subtitle_texts)
    assert video.subtitle_starts_s[0] < 1.0


@pytest.mark.parametrize(("command", "printed"), [("estimate", "estimated cost (USD)"), ("config", "providers")])
def test_every_command_that_needs_a_gateway_can_start_one(tmp_path: Path, command: str, printed: str) -> None:
    args = [command, "SCRIPT"] if command == "estimate" else [command]
    result = _run(tmp_path, *args, "--start-services")
    assert result.returncode == 0, result.stderr
    assert printed in result.stdout
    assert '"level"' not in result.stderr, result.stderr


def test_verbose_shows_the_service_logs_on_the_terminal(tmp_path: Path) -> None:
    result = _run(tmp_path, "config", "--start-services", "-v")
    assert result.returncode == 0, result.stderr
    assert '"service": "gateway"' in result.stderr and "their logs:" not in result.stderr
    assert not (tmp_path / "state" / "scenecast" / "logs").exists()
