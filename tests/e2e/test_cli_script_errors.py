"""Scripts the CLI cannot use: the real `scenecast` command names the file and the problem and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCENECAST = Path(sys.executable).parent / "scenecast"
SCENE = "scenes:\n  - id: a\n    narration: Mind the gap.\n"


def _scenecast(*args: str) -> subprocess.CompletedProcess[str]:
    # No gateway is running: every case must be refused while the script is read, before any call.
    return subprocess.run(
        [str(SCENECAST), *args, "--gateway", "127.0.0.1:9"], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("deep.yaml", "title: " + "[" * 20_000 + "]" * 20_000 + "\n" + SCENE, "not valid YAML: nested too deeply"),
        ("deep.json", "[" * 200_000 + "]" * 200_000, "not valid JSON: nested too deeply"),
        ("long.json", '{"max_cost_usd": ' + "9" * 5000 + "}", "not valid JSON: a number has 5000 characters"),
        ("long.yaml", "max_cost_usd: " + "9" * 5000 + "\n" + SCENE, "not valid YAML: a number has 5000 characters"),
        (
            "twice.yaml",
            SCENE + "    narration: Mind the step.\n",
            "not valid YAML: the key 'narration' appears twice in one mapping\n  in \"<unicode string>\", line 4",
        ),
        (
            "twice.json",
            '{"scenes": [{"id": "a", "narration": "Mind the gap.", "narration": "Mind the step."}]}',
            "not valid JSON: the key 'narration' appears twice in one object",
        ),
        ("nan.yaml", "max_cost_usd: .nan\n" + SCENE, "max_cost_usd: Input should be a finite number"),
        ("inf.json", '{"max_cost_usd": 1e400, ' + '"scenes": [{"id": "a", "narration": "x"}]}', "finite number"),
    ],
)
@pytest.mark.parametrize("command", ["render", "estimate"])
def test_a_bad_script_is_named_with_its_problem_and_exit_2(
    tmp_path: Path, name: str, text: str, problem: str, command: str
) -> None:
    script = tmp_path / name
    script.write_text(text, encoding="utf-8")
    args = (command, str(script), "-o", str(tmp_path / "out.mp4")) if command == "render" else (command, str(script))
    result = _scenecast(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"bad script: {script}: ")
    assert problem in result.stderr
    assert "recursion" not in result.stderr and "Traceback" not in result.stderr


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    """Refusing repeated keys must not refuse `<<: *scene`, whose keys the merging mapping may override."""
    script = tmp_path / "merge.yaml"
    script.write_text("scenes:\n  - &first {id: a, narration: Mind the gap.}\n  - <<: *first\n    id: b\n")
    result = _scenecast("estimate", str(script))
    # The script is accepted; the CLI then fails to reach the (absent) gateway.
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("UNAVAILABLE: ")
