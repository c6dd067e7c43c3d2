"""The script the web tests render, through the HTTP API and through the studio in a browser: two scenes at 360p,
one with a title and no visual, one with a visual and no title."""

from __future__ import annotations

SCRIPT = """\
title: Ladders
output: {height: 360, fps: 25, quality: draft}
scenes:
  - id: check
    title: Check the ladder
    narration: Look at the feet and the rungs before you climb.
  - id: three
    visual: A worker on a ladder holding the rails.
    narration: Keep three points of contact at all times.
"""
