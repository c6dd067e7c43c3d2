"""The proto contract passes buf lint (standard rules plus comments on every element)."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_buf_lint_is_clean() -> None:
    result = subprocess.run([str(ROOT / "node_modules/.bin/buf"), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_a_missing_comment(tmp_path: Path) -> None:
    # Proves the check is live: an undocumented field fails it.
    protos = tmp_path / "protos" / "scenecast" / "v1"
    protos.mkdir(parents=True)
    (protos / "types.proto").write_text(
        'syntax = "proto3";\n\n// Doc.\npackage scenecast.v1;\n\n'
        '// Doc.\nmessage Undocumented {\n  string name = 1;\n}\n'
    )
    (tmp_path / "buf.yaml").write_text((ROOT / "buf.yaml").read_text())
    result = subprocess.run([str(ROOT / "node_modules/.bin/buf"), "lint"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert 'Field "name" should have a non-empty comment' in result.stdout
