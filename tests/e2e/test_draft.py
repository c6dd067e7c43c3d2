"""`scenecast draft` end to end: a Markdown document drafted offline and rendered; a topic drafted by a chat model
(the fake OpenAI) through the gateway, validated, capped by the budget, recorded in the spend ledger, and rendered
with Pexels clips (the fake Pexels)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scenecast.v1 import render_service_pb2, script_service_pb2

from scenecast_cli.client import draft_script, get_spend
from scenecast_cli.main import main
from scenecast_cli.stack import LocalStack
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.pexels_server import KEY as PEXELS_KEY
from tests.fakes.pexels_server import FakePexels
from tests.probe import probe_mp4

CHAT = "/v1/chat/completions"
KEY = "sk-draft-e2e-0123456789"
OPERATOR_CAP = 0.05
# gpt-4.1-mini's published price, USD per 1M tokens (input, output).
USD_IN, USD_OUT = 0.40, 1.60
DOCUMENT = """# Tides

![The Moon above a calm sea at night](moon.png)

The Moon pulls on the oceans. Its gravity raises the water on the side facing it.

## Spring tides

When the Sun and the Moon line up, their pulls add up and the tides run high.
"""
DRAFTED_OFFLINE = """\
title: Tides
scenes:
- id: scene-1
  title: Tides
  narration: The Moon pulls on the oceans. Its gravity raises the water on the side facing it.
  visual: The Moon above a calm sea at night
- id: scene-2
  title: Spring tides
  narration: When the Sun and the Moon line up, their pulls add up and the tides run high.
  visual: 'Spring tides: When the Sun and the Moon line up, their pulls add up and the tides run high.'
"""


def test_a_markdown_document_is_drafted_offline_then_rendered(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "tides.md"
    document.write_text(DOCUMENT, encoding="utf-8")
    script = tmp_path / "tides.yaml"
    gateway = ["--gateway", stack.gateway_address]
    assert main(["draft", str(document), "-o", str(script), *gateway]) == 0
    lines = script.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0].startswith("# Drafted by outline (outline) for $0.0000, draft draft-")
    assert "".join(lines[1:]) == DRAFTED_OFFLINE
    assert main(["validate", str(script)]) == 0
    # A draft never replaces a file, which may hold the user's edits.
    assert main(["draft", str(document), "-o", str(script), *gateway]) == 2
    assert f"{script} exists" in capsys.readouterr().err
    video = tmp_path / "tides.mp4"
    assert main(["render", str(script), "-o", str(video), "--draft", *gateway]) == 0
    probed = probe_mp4(video)
    assert (probed.video_codec, probed.audio_codec, probed.height) == ("h264", "aac", 360)
    captions = " ".join(probed.subtitle_texts)
    assert "The Moon pulls on the oceans." in captions and "the tides run high." in captions


def test_a_missing_document_is_not_taken_for_a_topic(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "notes.md"
    assert main(["draft", str(missing), "-o", str(tmp_path / "x.yaml"), "--gateway", stack.gateway_address]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def pexels_fake() -> Iterator[FakePexels]:
    with FakePexels() as fake:
        yield fake


@pytest.fixture(scope="module")
def model_stack(
    openai_fake: FakeOpenAI, pexels_fake: FakePexels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    env = {
        # Drafts by the chat model; clips from Pexels for every scene of a render.
        "VIDEO_PROVIDER": "pexels",
        "PEXELS_API_KEY": PEXELS_KEY,
        "PEXELS_BASE_URL": pexels_fake.base_url,
        "ALLOW_PRIVATE_OUTPUT_URLS": "true",
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": f"{openai_fake.base_url}/v1",
        "SCRIPT_PROVIDER": "openai",
        "MAX_RENDER_COST_USD": str(OPERATOR_CAP),
        "SPEND_LEDGER_PATH": str(tmp_path_factory.mktemp("ledger") / "spend.sqlite3"),
    }
    with LocalStack(env=env, log_dir=tmp_path_factory.mktemp("draft-logs")) as local:
        yield local


def test_a_topic_is_drafted_by_the_model_validated_and_its_spend_recorded(
    model_stack: LocalStack, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    openai_fake.reset()
    script = tmp_path / "topic.yaml"
    args = ["draft", "how tides work", "-o", str(script), "--seconds", "45", "--audience", "children"]
    assert main([*args, "--gateway", model_stack.gateway_address]) == 0
    assert main(["validate", str(script)]) == 0
    text = script.read_text(encoding="utf-8")
    [call] = openai_fake.chat_calls
    assert f"# Drafted by openai (gpt-4.1-mini-2025-04-14) for ${_cost(call):.4f}, draft draft-" in text
    assert "- id: scene-3\n  title: Part 3\n  narration: This is part 3 of the story." in text
    [request] = openai_fake.requests_to(CHAT)
    assert "about 45 seconds" in request.json()["messages"][-1]["content"]
    draft_id = text.split(", draft ")[1].split(".")[0]
    by_render = get_spend(
        model_stack.gateway_address,
        render_service_pb2.GetSpendRequest(group_by=render_service_pb2.SPEND_GROUPING_RENDER, render_id=draft_id),
    )
    assert [(row.key, row.calls, row.cache_hits) for row in by_render.rows] == [(draft_id, 1, 0)]
    assert by_render.total_usd == pytest.approx(_cost(call))
    by_provider = get_spend(
        model_stack.gateway_address,
        render_service_pb2.GetSpendRequest(group_by=render_service_pb2.SPEND_GROUPING_PROVIDER),
    )
    assert "openai/gpt-4.1-mini-2025-04-14" in {row.key for row in by_provider.rows}


def test_a_topic_drafted_by_the_model_renders_with_pexels_clips(
    model_stack: LocalStack, openai_fake: FakeOpenAI, pexels_fake: FakePexels, tmp_path: Path
) -> None:
    openai_fake.reset()
    pexels_fake.reset()
    script, video = tmp_path / "tides.yaml", tmp_path / "tides.mp4"
    gateway = ["--gateway", model_stack.gateway_address]
    assert main(["draft", "how tides work", "-o", str(script), *gateway]) == 0
    assert main(["render", str(script), "-o", str(video), "--draft", *gateway]) == 0
    probed = probe_mp4(video)
    assert (probed.video_codec, probed.audio_codec, probed.height) == ("h264", "aac", 360)
    assert abs(probed.video_duration_s - probed.audio_duration_s) < 0.05
    # Each of the model's three scenes searched Pexels' videos with the content words of its visual description
    # ("A bright illustration of idea number N, seen from above": articles, prepositions and numbers left out).
    queries = [r.query["query"] for r in pexels_fake.searches() if r.path == "/videos/search"]
    assert queries == ["bright illustration idea number"] * 3
    credits = video.with_name("tides.credits.txt").read_text(encoding="utf-8")
    assert credits.startswith("Video by ") and "on Pexels (https://www.pexels.com/video/" in credits


def test_a_draft_retried_once_records_both_paid_calls(model_stack: LocalStack, openai_fake: FakeOpenAI) -> None:
    openai_fake.reset()
    openai_fake.chat_answers = ["not_json"]
    answer = draft_script(model_stack.gateway_address, script_service_pb2.DraftScriptRequest(topic="tides"))
    assert len(answer.draft.calls) == 2
    spend = get_spend(
        model_stack.gateway_address,
        render_service_pb2.GetSpendRequest(
            group_by=render_service_pb2.SPEND_GROUPING_RENDER, render_id=answer.draft_id
        ),
    )
    assert [(row.calls, row.cache_hits) for row in spend.rows] == [(2, 0)]
    assert spend.total_usd == pytest.approx(sum(_cost(call) for call in openai_fake.chat_calls))


def test_a_draft_that_fails_after_billed_calls_still_records_them(
    model_stack: LocalStack, openai_fake: FakeOpenAI
) -> None:
    openai_fake.reset()
    openai_fake.chat_answers = ["not_json", "not_json"]
    by_render = render_service_pb2.GetSpendRequest(group_by=render_service_pb2.SPEND_GROUPING_RENDER)
    before = {row.key for row in get_spend(model_stack.gateway_address, by_render).rows}
    with pytest.raises(grpc.RpcError) as error:
        draft_script(model_stack.gateway_address, script_service_pb2.DraftScriptRequest(topic="tides"))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "answered twice without a usable script" in error.value.details()  # type: ignore[attr-defined]
    [new] = [row for row in get_spend(model_stack.gateway_address, by_render).rows if row.key not in before]
    assert new.key.startswith("draft-") and (new.calls, new.cache_hits) == (2, 0)
    assert new.usd == pytest.approx(sum(_cost(call) for call in openai_fake.chat_calls))


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        # An hour of narration is priced over the operator's cap, which no request can raise.
        (
            {"target_seconds": 3600, "max_cost_usd": 10.0},
            grpc.StatusCode.FAILED_PRECONDITION,
            f"over max_cost_usd ${OPERATOR_CAP:.4f} (the gateway's MAX_RENDER_COST_USD",
        ),
        ({"max_cost_usd": 0.0001}, grpc.StatusCode.FAILED_PRECONDITION, "over max_cost_usd $0.0001;"),
        ({"max_cost_usd": math.nan}, grpc.StatusCode.INVALID_ARGUMENT, "request.max_cost_usd must be a finite number"),
        ({"max_cost_usd": math.inf}, grpc.StatusCode.INVALID_ARGUMENT, "request.max_cost_usd must be a finite number"),
    ],
)
def test_the_budget_cap_refuses_a_draft_before_the_model_is_called(
    model_stack: LocalStack, openai_fake: FakeOpenAI, fields: dict[str, float], code: grpc.StatusCode, message: str
) -> None:
    openai_fake.reset()
    with pytest.raises(grpc.RpcError) as error:
        draft_script(model_stack.gateway_address, script_service_pb2.DraftScriptRequest(topic="tides", **fields))
    assert error.value.code() == code  # type: ignore[attr-defined]
    assert message in error.value.details()  # type: ignore[attr-defined]
    assert openai_fake.requests_to(CHAT) == []


def _cost(call: dict[str, int]) -> float:
    return (call["prompt_tokens"] * USD_IN + call["completion_tokens"] * USD_OUT) / 1_000_000
