"""schemas/script.schema.json: generated from the script model, valid JSON Schema, and what the examples follow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from scenecast_cli.schema import SCHEMA_PATH, script_schema_text
from services.common.script_format import ScriptModel

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema="


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_committed_schema_is_what_the_model_generates() -> None:
    # Raw text, so a hand edit, a stale file or a formatting change all fail; `make schema` rewrites it.
    assert SCHEMA_PATH.read_text(encoding="utf-8") == script_schema_text(), "schema is stale: run `make schema`"


def test_the_module_writes_the_committed_file(tmp_path: Path) -> None:
    # What `make schema` runs, into a copy.
    target = tmp_path / "script.schema.json"
    subprocess.run([sys.executable, "-m", "scenecast_cli.schema", str(target)], check=True, cwd=ROOT, timeout=60)
    assert target.read_bytes() == SCHEMA_PATH.read_bytes()


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_names_the_schema_on_its_first_line(example: Path) -> None:
    # yaml-language-server (VS Code's YAML extension, and other editors) reads this line; the path is relative.
    first = example.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(MODELINE)
    assert (example.parent / first.removeprefix(MODELINE)).resolve() == SCHEMA_PATH


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_validates_against_the_schema(example: Path, validator: Draft202012Validator) -> None:
    script = yaml.safe_load(example.read_text(encoding="utf-8"))
    assert [error.message for error in validator.iter_errors(script)] == []


SCENE = {"id": "a", "narration": "Hello."}


@pytest.mark.parametrize(
    ("script", "path", "message"),
    [
        ({"scenes": []}, ["scenes"], "should be non-empty"),
        ({"title": "No scenes"}, [], "'scenes' is a required property"),
        ({"scenes": [{"id": "a"}]}, ["scenes", 0], "'narration' is a required property"),
        ({"scenes": [{**SCENE, "visual_prompt": "A desk."}]}, ["scenes", 0], "('visual_prompt' was unexpected)"),
        ({"scenes": [{**SCENE, "id": "a b"}]}, ["scenes", 0, "id"], "does not match '^[A-Za-z0-9_-]+$'"),
        ({"scenes": [SCENE], "output": {"height": 100}}, ["output", "height"], "100 is less than the minimum of 144"),
        ({"scenes": [SCENE], "output": {"aspect_ratio": "4:3"}}, ["output", "aspect_ratio"], "'4:3' is not one of"),
        ({"scenes": [SCENE], "finishing": {"loudness": "loud"}}, ["finishing", "loudness"], "'loud' is not valid"),
        ({"scenes": [SCENE], "max_cost_usd": -1}, ["max_cost_usd"], "-1 is less than the minimum of 0"),
    ],
    ids=["no-scenes", "scenes-missing", "no-narration", "unknown-key", "bad-id", "low", "aspect", "loudness", "cost"],
)
def test_a_bad_script_fails_the_schema_at_its_field(
    script: dict[str, Any], path: list[str | int], message: str, validator: Draft202012Validator
) -> None:
    errors = list(validator.iter_errors(script))
    assert [list(error.absolute_path) for error in errors] == [path]
    assert message in errors[0].message
    with pytest.raises(ValidationError):  # the model the CLI loads with refuses it too
        ScriptModel.model_validate(script)


def test_loudness_off_is_valid_as_yaml_1_1_and_1_2_read_it(validator: Draft202012Validator) -> None:
    # PyYAML (the CLI) reads `loudness: off` as false; YAML 1.2 editors read the string "off". Both are accepted.
    for loudness in ("off", False):
        script = {"scenes": [SCENE], "finishing": {"loudness": loudness}}
        assert list(validator.iter_errors(script)) == []
        assert ScriptModel.model_validate(script).finishing.loudness == "off"
