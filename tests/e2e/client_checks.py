"""What the polyglot clients (clients/go, clients/node) must print, checked alike for each."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.probe import probe_mp4


def rendered_summary(result: subprocess.CompletedProcess[str], script: dict[str, Any], out: Path) -> dict[str, Any]:
    """The summary a client printed for rendering `script` (at 360p, 16:9) to `out`, checked against the MP4."""
    assert result.returncode == 0, result.stderr
    # stdout is the summary as one JSON line; stderr has the progress, from acceptance to streaming.
    [line] = result.stdout.splitlines()
    summary = json.loads(line)
    assert [scene["sceneId"] for scene in summary["scenes"]] == [scene["id"] for scene in script["scenes"]]
    assert summary["durationMs"] > 0 and (summary["width"], summary["height"]) == (640, 360)
    assert not out.with_name(f"{out.name}.part").exists()
    progress = result.stderr.splitlines()
    assert progress[0].startswith("RENDER_STAGE_ACCEPTED 0/6")
    assert progress[-1].startswith("RENDER_STAGE_STREAMING 6/6")

    probed = probe_mp4(out)
    assert (probed.video_codec, (probed.width, probed.height)) == ("h264", (640, 360))
    assert (probed.audio_codec, probed.audio_rate) == ("aac", 48000)
    assert abs(probed.duration_s - summary["durationMs"] / 1000) < 0.2
    assert " ".join(probed.subtitle_texts).split() == " ".join(s["narration"] for s in script["scenes"]).split()
    return summary


def assert_offline_config(result: subprocess.CompletedProcess[str]) -> None:
    """A client's printed GetConfig, from a gateway with the default (offline) providers."""
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    defaults = {provider_set["kind"]: provider_set["defaultProvider"] for provider_set in config["providerSets"]}
    assert defaults == {
        "MEDIA_KIND_IMAGE": "slides",
        "MEDIA_KIND_SPEECH": "piper",
        "MEDIA_KIND_VIDEO": "",
        "MEDIA_KIND_AVATAR": "",
        "MEDIA_KIND_SCRIPT": "outline",
    }
    names = {provider["name"] for provider_set in config["providerSets"] for provider in provider_set["providers"]}
    assert "slides" in names
