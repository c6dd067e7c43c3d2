"""The assembler's rooms: the servicer keeps the stream protocol, plan.py the scene plan; the work lives elsewhere."""

from __future__ import annotations

import ast
from pathlib import Path

ASSEMBLER = Path(__file__).resolve().parents[2] / "services" / "assembler"


def _imports(module: str) -> set[str]:
    """Every module and name `module` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse((ASSEMBLER / module).read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module or ""} | {alias.name for alias in node.names}
    return names


def test_the_servicer_runs_no_ffmpeg_and_plans_nothing_itself() -> None:
    work = {
        # Running FFmpeg, probing and drawing: encoding.py, mux.py and timeline.py do it.
        "run_ffmpeg",
        "probe",
        "render_card",
        # Command builders and the segment cache: encoding.py and mux.py use them.
        "services.assembler.ffmpeg",
        "segments",
        "captions",
        # Planning and caption layout: timeline.py and plan.py.
        "plan_scene",
        "caption_runs",
        "services.assembler.caption_layout",
    }
    assert _imports("servicer.py") & work == set()


def test_plan_leaves_caption_layout_and_word_timing_to_their_modules() -> None:
    # Measuring text (fonts) is caption layout; matching written to spoken words (difflib) is word timing.
    assert _imports("plan.py") & {"services.common.fonts", "difflib", "unicodedata"} == set()
    assert "services.common.fonts" in _imports("caption_layout.py")
    assert "difflib" in _imports("word_timing.py")
