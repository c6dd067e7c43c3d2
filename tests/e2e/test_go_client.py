"""The Go client in clients/go, built offline from Debian's Go toolchain and packages, against the services."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scenecast_cli.stack import LocalStack
from tests.e2e.client_checks import assert_offline_config, rendered_summary

ROOT = Path(__file__).resolve().parents[2]

# RenderRequest in protobuf's JSON form (protojson): camelCase or snake_case field names, enums by name.
SCRIPT: dict[str, Any] = {
    "title": "Spills",
    "scenes": [
        {
            "id": "see",
            "title": "See it",
            "visualPrompt": "A puddle of water on a shop floor.",
            "narration": "A spill you walk past is a fall waiting to happen.",
        },
        {
            "id": "sign",
            "visual_prompt": "A yellow wet floor sign beside a mop.",
            "narration": "Put a sign out, then clean it up.",
        },
    ],
    "output": {"aspectRatio": "ASPECT_RATIO_16_9", "height": 360, "fps": 25, "quality": "QUALITY_DRAFT"},
    "providers": {"image": "slides", "speech": "piper"},
}


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scenecast-go, built by clients/go/build-offline.sh with a build cache private to this run (grpc compiles
    from source: about a minute on 2 cores)."""
    missing = [tool for tool in ("go", "protoc-gen-go", "protoc-gen-go-grpc") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make test-deps` (tools/test-deps.sh) to install them")
    folder = tmp_path_factory.mktemp("go")
    binary = folder / "scenecast-go"
    env = {**os.environ, "GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "gopath"), "TMPDIR": str(folder)}
    build = [str(ROOT / "clients" / "go" / "build-offline.sh"), str(binary)]
    result = subprocess.run(build, capture_output=True, text=True, timeout=900, env=env, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(folder.glob("tmp.*")), "build-offline.sh left its temporary copy behind"
    return binary


def _run(
    binary: Path, *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_go_client_renders_a_captioned_narrated_mp4(go_client: Path, stack: LocalStack, tmp_path: Path) -> None:
    script, out = tmp_path / "script.json", tmp_path / "out.mp4"
    script.write_text(json.dumps(SCRIPT))
    result = _run(go_client, "-gateway", stack.gateway_address, str(script), str(out), timeout=120)
    summary = rendered_summary(result, SCRIPT, out)
    # protojson writes 64-bit integers as strings.
    assert int(summary["sizeBytes"]) == out.stat().st_size


def test_go_client_reports_invalid_argument_and_leaves_no_file(
    go_client: Path, stack: LocalStack, tmp_path: Path
) -> None:
    script, out = tmp_path / "bad.json", tmp_path / "bad.mp4"
    script.write_text(json.dumps({**SCRIPT, "output": {**SCRIPT["output"], "height": 0}}))
    result = _run(go_client, "-gateway", stack.gateway_address, str(script), str(out), timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("INVALID_ARGUMENT: output.height must be an even number of pixels")
    assert result.stdout == ""
    assert not out.exists() and not (tmp_path / "bad.mp4.part").exists()


def test_go_client_rejects_keys_the_contract_does_not_have(go_client: Path, tmp_path: Path) -> None:
    # Checked before any call is made: the gateway's address is a closed port.
    script = tmp_path / "typo.json"
    script.write_text(json.dumps({"scenes": [{"id": "a", "visualPromt": "A desk.", "narration": "Hello."}]}))
    result = _run(go_client, "-gateway", "127.0.0.1:1", str(script), str(tmp_path / "x.mp4"), timeout=30)
    assert result.returncode == 2
    assert f"{script}: " in result.stderr and 'unknown field "visualPromt"' in result.stderr
    assert not (tmp_path / "x.mp4.part").exists()


def test_go_client_prints_the_config_from_the_gateway_in_the_environment(go_client: Path, stack: LocalStack) -> None:
    assert_offline_config(_run(go_client, "-config", timeout=30, env={"SCENECAST_GATEWAY": stack.gateway_address}))
