"""The RenderService cases of test_bad_input.py that a script can carry, sent through the HTTP API instead of gRPC.

Each is a script (the CLI's format, which names some fields differently from the contract) that both `/v1/estimate`
and `/v1/renders` must refuse with the same problem document: the right status, the field, and the wording of the
check that caught it (the script model's, or the gateway's gRPC message). Nothing is rendered for any of them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scenecast_cli.stack import LocalStack
from services.common.server import MAX_MESSAGE_BYTES

PROBLEM = "application/problem+json"
SCRIPT: dict[str, Any] = {
    "output": {"height": 144, "fps": 10, "quality": "draft"},
    "scenes": [{"id": "a", "narration": "Mind the gap.", "visual": "A platform edge.", "title": "Gaps"}],
}

Change = Callable[[dict[str, Any]], None]


def at(path: str, value: Any) -> Change:
    """Sets `path` ("output.height", "scenes.0.id") in the script, making the objects on the way."""

    def change(script: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = script
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[int(last) if isinstance(node, list) else last] = value

    return change


def scenes(count: int) -> Change:
    def change(script: dict[str, Any]) -> None:
        script["scenes"] = [{**SCRIPT["scenes"][0], "id": f"s{index}"} for index in range(count)]

    return change


def duplicate_ids(script: dict[str, Any]) -> None:
    script["scenes"].append(dict(SCRIPT["scenes"][0]))


def huge(letter: str) -> str:
    return letter * 100_000


def cut(letter: str) -> str:
    return f"'{letter * 40}'... (100000 characters)"


@dataclass(frozen=True)
class Case:
    id: str
    change: Change
    status: int
    # The field the problem names; None where the gateway's answer is about no field of the request.
    field: str | None
    # Text the detail must contain.
    names: str


STRING_MATCH = "String should match pattern"
CASES = [
    Case("render-no-scenes", scenes(0), 400, "scenes", "scenes: List should have at least 1 item"),
    Case("render-bad-pad-color", at("finishing.pad_color", "red"), 400, "finishing.pad_color", STRING_MATCH),
    Case("render-loud-target", at("finishing.loudness.lufs", 3), 400, "finishing.loudness.lufs", "less than or equal"),
    Case(
        "render-card-without-title",
        at("finishing.end_card", {"subtitle": "Bye"}),
        400,
        "finishing.end_card.title",
        "Field required",
    ),
    Case(
        "render-unknown-transition", at("finishing.transition", "wipe"), 400, "finishing.transition", "Input should be"
    ),
    Case("render-music-unknown-upload", at("finishing.music", {"upload": "0" * 64}), 404, None, "0" * 64),
    Case(
        "render-music-library-traversal",
        at("finishing.music", {"library": "../secrets.mp3"}),
        400,
        None,
        "MUSIC_LIBRARY_DIR",
    ),
    Case("render-too-many-scenes", scenes(51), 400, "scenes", "scenes has 51 entries; the limit is 50"),
    Case("render-empty-narration", at("scenes.0.narration", " \n\t "), 400, "scenes[0].narration", "is empty"),
    Case("render-long-narration", at("scenes.0.narration", "x" * 4001), 400, "scenes[0].narration", "has 4001"),
    Case(
        "render-huge-narration",
        at("scenes.0.narration", "y" * 1_000_000),
        400,
        "scenes[0].narration",
        "scenes[0].narration has 1000000",
    ),
    # Over gRPC this is past the message limit (RESOURCE_EXHAUSTED); over HTTP the body cap stops it first.
    Case(
        "render-over-message-limit",
        at("scenes.0.narration", "z" * (MAX_MESSAGE_BYTES + 1)),
        413,
        "body",
        "(WEB_MAX_BODY_BYTES)",
    ),
    Case("render-narration-bell", at("scenes.0.narration", "Ding\x07 dong."), 400, "scenes[0].narration", "U+0007"),
    Case("render-narration-nul", at("scenes.0.narration", "a\x00b"), 400, "scenes[0].narration", "U+0000"),
    Case("render-narration-c1-csi", at("scenes.0.narration", "red \x9b31m text"), 400, "scenes[0].narration", "U+009B"),
    # The gateway names the contract's field (visual_prompt) for the script's `visual`.
    Case("render-long-prompt", at("scenes.0.visual", "p" * 4001), 400, "scenes[0].visual_prompt", "has 4001"),
    Case("render-long-scene-title", at("scenes.0.title", "t" * 201), 400, "scenes[0].title", "has 201"),
    Case("render-long-title", at("title", "T" * 201), 400, "title", "at most 200 characters"),
    Case("render-title-escape", at("title", "a\x1b[2Jb"), 400, "title", "title contains"),
    Case(
        "render-no-visual",
        lambda s: (at("scenes.0.visual", "")(s), at("scenes.0.title", "")(s)),
        400,
        "scenes[0].visual_prompt",
        "scenes[0].visual_prompt and scenes[0].title are both empty",
    ),
    Case("render-duplicate-ids", duplicate_ids, 400, "scenes[1].id", "scenes[1].id 'a' repeats scenes[0].id"),
    Case("render-id-with-space", at("scenes.0.id", "has space"), 400, "scenes[0].id", STRING_MATCH),
    Case("render-id-empty", at("scenes.0.id", ""), 400, "scenes[0].id", "at least 1 character"),
    Case("render-id-too-long", at("scenes.0.id", "i" * 65), 400, "scenes[0].id", "at most 64 characters"),
    Case("render-id-unicode", at("scenes.0.id", "café"), 400, "scenes[0].id", STRING_MATCH),
    Case("render-huge-scene-id", at("scenes.0.id", huge("i")), 400, "scenes[0].id", "at most 64 characters"),
    Case("render-aspect-99", at("output.aspect_ratio", "99:1"), 400, "output.aspect_ratio", "Input should be"),
    Case("render-quality-42", at("output.quality", 42), 400, "output.quality", "Input should be"),
    Case("render-height-zero", at("output.height", 0), 400, "output.height", "greater than or equal to 144"),
    Case("render-height-odd", at("output.height", 361), 400, "output.height", "output.height must be an even number"),
    Case("render-height-low", at("output.height", 142), 400, "output.height", "greater than or equal to 144"),
    Case("render-height-high", at("output.height", 2162), 400, "output.height", "less than or equal to 2160"),
    Case("render-height-max-uint32", at("output.height", 2**32 - 1), 400, "output.height", "less than or equal"),
    Case("render-height-negative", at("output.height", -2), 400, "output.height", "greater than or equal to 144"),
    Case("render-fps-61", at("output.fps", 61), 400, "output.fps", "less than or equal to 60"),
    Case("render-visual-kind-7", at("scenes.0.show", "video"), 400, "scenes[0].show", "Input should be"),
    Case(
        "render-clip-without-video-provider",
        at("scenes.0.show", "clip"),
        400,
        "scenes[0].visual_kind",
        "scenes[0].visual_kind asks for a clip but no video provider",
    ),
    Case("render-unknown-image", at("providers.image", "midjourney"), 400, "providers.image", "unknown provider"),
    Case("render-unknown-speech", at("providers.speech", "siri"), 400, "providers.speech", "unknown provider"),
    Case("render-unknown-video", at("providers.video", "sora"), 400, "providers.video", "unknown provider 'sora'"),
    Case("render-unknown-avatar", at("providers.avatar", "hal"), 400, "providers.avatar", "unknown provider 'hal'"),
    *(
        Case(
            f"render-huge-{kind}-provider",
            at(f"providers.{kind}", huge(kind[0])),
            400,
            f"providers.{kind}",
            f"providers.{kind}: unknown provider {cut(kind[0])}; valid: ",
        )
        for kind in ("image", "speech", "video", "avatar")
    ),
    Case("render-huge-voice", at("voice", huge("n")), 400, "voice", "voice has 100000 characters; the limit is 200"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-bad-input-results")


@pytest.fixture(scope="module")
def client(results: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The services with the offline defaults whatever the caller's environment says, and the API in front."""
    env = {
        "RENDER_OUTPUT_DIR": str(results),
        "SPEND_LEDGER_PATH": str(tmp_path_factory.mktemp("web-bad-input-ledger") / "spend.sqlite3"),
        "IMAGE_PROVIDER": "slides",
        "TTS_PROVIDER": "piper",
        "VIDEO_PROVIDER": "",
        "AVATAR_PROVIDER": "",
    }
    local = LocalStack(env=env, log_dir=tmp_path_factory.mktemp("web-bad-input-logs"), web=True).start()
    try:
        with httpx.Client(base_url=local.web_url, timeout=60) as http:
            yield http
    finally:
        local.stop()


@pytest.mark.parametrize("route", ["/v1/estimate", "/v1/renders"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_script_is_a_problem_naming_the_field(
    case: Case, route: str, client: httpx.Client, results: Path
) -> None:
    script = copy.deepcopy(SCRIPT)
    case.change(script)
    response = client.post(route, content=json.dumps(script), headers={"Content-Type": "application/json"})
    assert (response.status_code, response.headers["content-type"]) == (case.status, PROBLEM), response.text
    problem = response.json()
    assert problem["status"] == case.status and problem.get("field") == case.field, problem
    assert case.names in problem["detail"], problem["detail"]
    # Refused before anything was rendered: the gateway keeps no result of it.
    assert list(results.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field", "names"),
    [
        # Bytes that are not UTF-8 (the gRPC case sends a broken narration the same way).
        (
            b'{"scenes": [{"id": "a", "narration": "Mind the \xed\xa0\x80 gap."}]}',
            "application/json",
            400,
            "body",
            "UTF-8",
        ),
        (b"scenes: [", "application/yaml", 400, None, "not valid YAML"),
        (b"<scenes/>", "application/xml", 415, "Content-Type", "application/json or application/yaml"),
    ],
    ids=["bad-utf8", "not-yaml", "not-a-script-type"],
)
def test_a_body_that_is_no_script_is_a_problem(
    body: bytes, content_type: str, status: int, field: str | None, names: str, client: httpx.Client
) -> None:
    response = client.post("/v1/renders", content=body, headers={"Content-Type": content_type})
    assert (response.status_code, response.headers["content-type"]) == (status, PROBLEM), response.text
    problem = response.json()
    assert problem.get("field") == field and names in problem["detail"], problem


def test_a_render_id_that_could_name_a_path_is_refused(client: httpx.Client) -> None:
    # render-bad-render-id: a script carries no render id, a URL does. An encoded slash is decoded before routing, so
    # "..%2Fetc" asks for no route of the API at all.
    for method, path, status in (
        ("GET", "/v1/renders/..%2Fetc", 404),
        ("GET", "/v1/renders/has%20space/video.mp4", 400),
        ("POST", f"/v1/renders/{'r' * 65}/cancel", 400),
    ):
        response = client.request(method, path)
        assert (response.status_code, response.headers["content-type"]) == (status, PROBLEM), path
        assert response.json().get("field") == ("render_id" if status == 400 else None), path
