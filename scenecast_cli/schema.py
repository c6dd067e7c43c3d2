"""The script format's JSON Schema, generated from the pydantic model so it never drifts from what the CLI loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.common.script_format import ScriptModel

# Committed so YAML editors (yaml-language-server, via the first line of each example) can check and complete
# scripts without installing scenecast; tests/unit/test_script_schema.py fails when it differs from the model.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "script.schema.json"


def script_schema_text() -> str:
    """The schema as it is committed: JSON, two-space indents, keys in the model's order, a final newline."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **ScriptModel.model_json_schema(),
        "title": "scenecast script",
        "description": "A script for `scenecast render` (YAML or JSON). Generated from "
        "services/common/script_format.py by `make schema`; do not edit. The CLI also checks what a schema cannot "
        "(finishing options that depend on each other, music files beside the script) and the gateway the limits it "
        "is configured with.",
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    """`python -m scenecast_cli.schema [PATH]` writes the schema to PATH (default: the committed file)."""
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_PATH
    target.write_text(script_schema_text(), encoding="utf-8")


if __name__ == "__main__":
    main()
