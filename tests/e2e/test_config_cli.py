"""`scenecast config` says what each price is for, as the services declare it (issue 15: it printed bare rates)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scenecast_cli.stack import LocalStack

SCENECAST = Path(sys.executable).parent / "scenecast"


def test_config_prints_each_price_with_what_it_is_for(stack: LocalStack) -> None:
    result = subprocess.run(
        [str(SCENECAST), "config", "--gateway", stack.gateway_address],
        env={**os.environ, "COLUMNS": "400"},  # wide enough that rich keeps every price on one line
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for line in (
        "gpt-image-1-mini: $0.015 per image, 1536x1024 or 1024x1536 at standard quality",
        "gpt-image-1-mini: $0.005 per image, 1024x1024 at draft quality",
        "dall-e-3: $0.12 per image, 1792x1024 or 1024x1792 at hd quality",
        "tts-1: $15 per 1M characters, at draft or standard quality",
        "tts-1-hd: $30 per 1M characters, at hd quality",
        "pillow-slide-v1: $0 per image, offline, on this machine's CPU",
        "edge-tts: $0 per narration, free service of Microsoft's, not for commercial use",
        "ffmpeg-zoompan: $0 per clip, offline, on this machine's CPU",
    ):
        assert line in result.stdout, line
