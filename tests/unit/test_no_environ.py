"""Configuration comes from settings objects: nothing under services/ or gateway/ reads os.environ while serving.

pydantic-settings reads .env into the settings object, not into the environment, so code that reads the environment
misses what .env says (issue 15: IMAGE_PROVIDER from .env took effect, OPENAI_API_KEY from the same file did not).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Uses of the environment that are not configuration, with the reason.
ALLOWED: dict[str, str] = {}


def environment_reads(source: str) -> list[int]:
    """Lines that touch os.environ, os.environb or os.getenv, however imported (`from os import environ` too)."""
    tree = ast.parse(source)
    names = {"environ", "environb", "getenv", "getenvb"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in names for a in node.names):
            lines.append(node.lineno)
    return lines


def test_nothing_reads_the_environment_outside_settings() -> None:
    found = {}
    for path in sorted([*ROOT.joinpath("services").rglob("*.py"), *ROOT.joinpath("gateway").rglob("*.py")]):
        name = path.relative_to(ROOT).as_posix()
        if name in ALLOWED:
            continue
        if lines := environment_reads(path.read_text()):
            found[name] = lines
    assert not found, f"read the settings object instead of the environment: {found}"


def test_the_lists_name_only_modules_that_still_read_it() -> None:
    """An entry whose module no longer reads the environment goes, so the lists cannot hide a new read later."""
    stale = [name for name in ALLOWED if not environment_reads((ROOT / name).read_text())]
    assert not stale


def test_the_walker_sees_every_form() -> None:
    source = "import os\nfrom os import getenv\na = os.environ['A']\nb = os.getenv('B')\nc = os.environ.get('C')\n"
    assert environment_reads(source) == [2, 3, 4, 5]
