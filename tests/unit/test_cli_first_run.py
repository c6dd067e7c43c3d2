"""The offline half of a newcomer's first run (issue 19), with the real `scenecast` command: `--version`, help for
every argument, `validate` with line numbers, a bad `--scene`, and what to do when no gateway answers."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from scenecast_cli.main import build_parser
from scenecast_cli.stack import free_port

SCENECAST = Path(sys.executable).parent / "scenecast"

SCRIPT = """\
title: Checked
output:
  height: 100
  colour: blue
scenes:
  - id: fine
    narration: This scene is fine.
    visual: A field
  - id: not fine
    visual: A storm
"""


def _scenecast(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCENECAST), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, env={"COLUMNS": "300"}
    )


def test_version_is_the_installed_one(tmp_path: Path) -> None:
    result = _scenecast(tmp_path, "--version")
    assert (result.returncode, result.stdout) == (0, f"scenecast {version('scenecast')}\n")


def test_every_argument_of_every_command_has_help() -> None:
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        for action in command._actions:
            assert action.help, f"scenecast {name} {action.dest} has no help text"


def test_validate_prints_every_problem_with_its_line(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    result = _scenecast(tmp_path, "validate", str(script))
    assert result.returncode == 2, result.stderr
    assert result.stdout == (
        f"{script}:3: output.height: Input should be greater than or equal to 144\n"
        f"{script}:4: output.colour: Extra inputs are not permitted\n"
        f"{script}:9: scenes.1.id: String should match pattern '^[A-Za-z0-9_-]+$'\n"
        f"{script}:9: scenes.1.narration: Field required\n"
    )
    # What the model takes but the gateway refuses is found offline too.
    script.write_text("scenes:\n  - id: a\n    narration: Hi.\n    visual: A sky\n  - id: b\n    narration: Hello.\n")
    result = _scenecast(tmp_path, "validate", str(script))
    assert (result.returncode, result.stdout) == (
        2,
        f"{script}:5: scenes[1].visual_prompt and scenes[1].title are both empty; give at least one\n",
    )
    example = Path(__file__).parents[2] / "examples" / "safety-ladder.yaml"
    valid = _scenecast(tmp_path, "validate", str(example))
    assert (valid.returncode, valid.stdout) == (0, f"{example}: valid\n")


def test_an_unknown_scene_names_the_scenes_there_are(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "safety-ladder.yaml"
    result = _scenecast(tmp_path, "render", str(example), "-o", "x.mp4", "--scene", "outro", "--start-services")
    assert result.returncode == 2
    assert "--scene outro: the script has no scene with that id (its scenes: intro, inspect, setup, climb, reach)" in (
        result.stderr
    )
    assert not (tmp_path / "x.mp4").exists()


def test_no_gateway_says_how_to_start_one(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    for command in (["config"], ["spend"], ["render", "../script.yaml", "-o", "x.mp4"]):
        (tmp_path / "script.yaml").write_text("scenes:\n  - id: a\n    narration: Hello.\n    visual: A sky\n")
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        result = _scenecast(work, *command, "--gateway", nowhere)
        assert result.returncode == 1
        assert "UNAVAILABLE" in result.stderr
        assert (
            f"no gateway answers at {nowhere}: run `scenecast serve` in another terminal, or add --start-services to "
            "start the services for this command only" in result.stderr
        ), result.stderr
