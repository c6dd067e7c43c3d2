"""The proto contract passes buf lint (standard rules plus comments on every element)."""

import shutil
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
        "// Doc.\nmessage Undocumented {\n  string name = 1;\n}\n"
    )
    (tmp_path / "buf.yaml").write_text((ROOT / "buf.yaml").read_text())
    result = subprocess.run([str(ROOT / "node_modules/.bin/buf"), "lint"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert 'Field "name" should have a non-empty comment' in result.stdout


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_buf_breaking_guards_compatibility(tmp_path: Path) -> None:
    # A copy of the contract in its own repository: compatible changes pass `buf breaking`, breaking ones fail.
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "v1")
    types = tmp_path / "protos" / "scenecast" / "v1" / "types.proto"
    original = types.read_text()

    def breaking() -> subprocess.CompletedProcess[str]:
        command = [str(ROOT / "node_modules/.bin/buf"), "breaking", "--against", ".git#branch=main"]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)

    types.write_text(
        original.replace("  string title = 4;\n}", "  string title = 4;\n  // Added.\n  string note = 5;\n}")
    )
    assert breaking().returncode == 0
    types.write_text(original.replace("  string title = 4;\n", ""))
    result = breaking()
    assert result.returncode != 0
    assert "title" in result.stdout
