"""The processes a test must see end: found by what their command lines mention."""

from __future__ import annotations

from pathlib import Path


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
