"""The Node.js client in clients/node, which loads protos/ at run time, against the five services as processes."""

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

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"

# A script in the shape RenderRequest takes in proto-loader's JSON: camelCase fields, enums by name.
SCRIPT: dict[str, Any] = {
    "title": "Cables",
    "scenes": [
        {
            "id": "trip",
            "title": "Cables trip people",
            "visualPrompt": "A cable across an office walkway.",
            "narration": "Loose cables across a walkway are easy to miss. They cause falls every day.",
        },
        {
            "id": "cover",
            "visualPrompt": "A rubber cable cover taped to the floor.",
            "narration": "Route cables along the wall, or cover them.",
        },
    ],
    "output": {
        "aspectRatio": "ASPECT_RATIO_16_9",
        "height": 360,
        "fps": 25,
        "quality": "QUALITY_DRAFT",
        "captions": True,
    },
    "providers": {"image": "slides", "speech": "piper"},
}


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, once the client's dependencies are installed; missing ones fail the test (CI must have them)."""
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("node is not on PATH: install Node.js 20 or newer to test clients/node")
    if not (CLIENT_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("clients/node/node_modules is missing: run `make test`, or `npm ci --prefix clients/node` first")
    return executable


def _run(node: str, *args: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(CLIENT_DIR / "render.js"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_node_client_renders_a_captioned_narrated_mp4(node: str, stack: LocalStack, tmp_path: Path) -> None:
    script, out = tmp_path / "script.json", tmp_path / "out.mp4"
    script.write_text(json.dumps(SCRIPT))
    result = _run(node, str(script), str(out), "--gateway", stack.gateway_address, timeout=120)
    assert rendered_summary(result, SCRIPT, out)["sizeBytes"] == out.stat().st_size


def test_node_client_reports_invalid_argument_and_leaves_no_file(node: str, stack: LocalStack, tmp_path: Path) -> None:
    script, out = tmp_path / "bad.json", tmp_path / "bad.mp4"
    script.write_text(json.dumps({**SCRIPT, "output": {**SCRIPT["output"], "height": 0}}))
    result = _run(node, str(script), str(out), "--gateway", stack.gateway_address, timeout=60)
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "output.height" in result.stderr
    assert result.stdout == ""
    assert not out.exists() and not (tmp_path / "bad.mp4.part").exists()


def test_node_client_rejects_keys_the_contract_does_not_have(node: str, tmp_path: Path) -> None:
    # protobufjs would drop `visual_prompt` silently; the client names it instead, before any call is made.
    script = tmp_path / "snake.json"
    script.write_text(json.dumps({"scenes": [{"id": "a", "visual_prompt": "A desk.", "narration": "Hello."}]}))
    result = _run(node, str(script), str(tmp_path / "x.mp4"), "--gateway", "127.0.0.1:1", timeout=30)
    assert result.returncode == 2
    assert "scenes[0].visual_prompt: unknown field" in result.stderr


def test_node_client_prints_the_config_from_the_gateway_in_the_environment(node: str, stack: LocalStack) -> None:
    assert_offline_config(_run(node, "--config", timeout=30, env={"SCENECAST_GATEWAY": stack.gateway_address}))
