"""The script service as a real gRPC server: the openai provider through the real openai SDK against FakeOpenAI, and
the service's own checks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from scenecast.v1 import script_service_pb2, script_service_pb2_grpc, types_pb2

from services.script.config import ScriptSettings
from services.script.providers.openai_chat import OpenAIChatSettings
from services.script.server import build
from tests.fakes.base import Fault
from tests.fakes.openai_server import CHAT_REFUSAL, FakeOpenAI, rate_limit_body
from tests.services.conftest import _serve

KEY = "sk-test-script-0123456789"
CHAT = "/v1/chat/completions"
# gpt-4.1-mini's published price, USD per 1M tokens (input, output).
USD_IN, USD_OUT = 0.40, 1.60

Stub = script_service_pb2_grpc.ScriptServiceStub


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(openai_fake: FakeOpenAI) -> FakeOpenAI:
    openai_fake.reset()
    return openai_fake


@pytest.fixture
async def start(fake: FakeOpenAI) -> AsyncIterator[Callable[..., Awaitable[Stub]]]:
    """Starts the script service with OpenAI settings pointed at the fake (`changes` override any of them)."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(**changes: Any) -> Stub:
            settings = OpenAIChatSettings(
                **{"openai_api_key": KEY, "openai_base_url": f"{fake.base_url}/v1", **changes}
            )
            server = build(ScriptSettings(listen_address="127.0.0.1:0", script_provider="openai"), [settings])
            channel = await stack.enter_async_context(contextlib.asynccontextmanager(_serve)(server))
            return Stub(channel)

        yield run


@pytest.fixture
async def stub(start: Callable[..., Awaitable[Stub]]) -> Stub:
    return await start()


def topic(text: str = "how tides work", **fields: Any) -> script_service_pb2.DraftScriptRequest:
    return script_service_pb2.DraftScriptRequest(topic=text, **fields)


async def failure(stub: Stub, request: script_service_pb2.DraftScriptRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.DraftScript(request)
    return error.value


def _cost(usage: dict[str, Any]) -> float:
    return (usage["prompt_tokens"] * USD_IN + usage["completion_tokens"] * USD_OUT) / 1_000_000


async def test_a_topic_becomes_scenes_priced_from_the_usage(fake: FakeOpenAI, stub: Stub) -> None:
    draft = await stub.DraftScript(
        topic(audience="ten-year-olds", tone="playful", language="German", target_seconds=90, max_scenes=7)
    )
    assert [(s.id, s.title) for s in draft.scenes] == [
        ("scene-1", "Part 1"),
        ("scene-2", "Part 2"),
        ("scene-3", "Part 3"),
    ]
    assert draft.scenes[0].narration == "This is part 1 of the story. It explains one idea clearly."
    assert draft.scenes[0].visual_prompt == "A bright illustration of idea number 1, seen from above"
    assert draft.title.startswith("All about Topic: how tides work")
    assert (draft.provider, draft.model) == ("openai", "gpt-4.1-mini-2025-04-14")
    [usage] = fake.chat_calls
    [call] = draft.calls
    assert (call.id, call.input_tokens, call.output_tokens) == (
        usage["id"],
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert call.cost_usd == pytest.approx(_cost(usage)) and draft.cost_usd == pytest.approx(call.cost_usd)
    [request] = fake.requests_to(CHAT)
    body = request.json()
    assert body["model"] == "gpt-4.1-mini"
    assert body["response_format"]["type"] == "json_schema" and body["response_format"]["json_schema"]["strict"]
    assert body["max_completion_tokens"] > 0
    prompt = body["messages"][-1]["content"]
    for said in ("Topic: how tides work", "ten-year-olds", "playful", "German", "about 90 seconds", "at most 7 scenes"):
        assert said in prompt


@pytest.mark.parametrize("first", ["not_json", "empty_narration", "long_narration", "cut", "refusal"])
async def test_an_unusable_answer_is_asked_again_once_with_the_reason(fake: FakeOpenAI, stub: Stub, first: str) -> None:
    fake.chat_answers = [first]
    draft = await stub.DraftScript(topic())
    assert len(draft.scenes) == 3
    first_call, second_call = fake.requests_to(CHAT)
    retry = second_call.json()["messages"]
    assert retry[: len(first_call.json()["messages"])] == first_call.json()["messages"]
    assert retry[-1]["role"] == "user" and retry[-1]["content"].startswith("That answer cannot be used: ")
    reasons = {
        "not_json": "not valid JSON",
        "empty_narration": "scenes.1.narration: String should have at least 1 character",
        "long_narration": "scenes[0].narration has 4999 characters; the limit is 4000",
        "cut": "cut off at its length limit",
        "refusal": CHAT_REFUSAL,
    }
    assert reasons[first] in retry[-1]["content"]
    # Both calls were billed, and both are reported.
    assert [c.id for c in draft.calls] == [c["id"] for c in fake.chat_calls]
    assert len(draft.calls) == 2 and draft.cost_usd == pytest.approx(sum(_cost(c) for c in fake.chat_calls))


async def test_two_unusable_answers_fail_without_a_third_call(fake: FakeOpenAI, stub: Stub) -> None:
    fake.chat_answers = ["not_json", "empty_narration"]
    error = await failure(stub, topic())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "answered twice without a usable script" in error.details()
    assert "scenes.1.narration" in error.details() and "both calls are billed" in error.details()
    assert len(fake.requests_to(CHAT)) == 2


async def test_two_refusals_are_invalid_argument_naming_the_topic(fake: FakeOpenAI, stub: Stub) -> None:
    fake.chat_answers = ["refusal", "refusal"]
    error = await failure(stub, topic())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("topic: gpt-4.1-mini refused to draft it twice") and "rephrase" in error.details()
    assert len(fake.requests_to(CHAT)) == 2


async def test_a_bad_key_is_failed_precondition_without_echoing_it(
    fake: FakeOpenAI, start: Callable[..., Awaitable[Stub]]
) -> None:
    stub = await start(openai_api_key="sk-wrong-key-9876543210")
    error = await failure(stub, topic())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "OPENAI_API_KEY" in error.details() and "3210" not in error.details()
    assert len(fake.requests_to(CHAT)) == 1


async def test_a_missing_key_names_the_variable(fake: FakeOpenAI, start: Callable[..., Awaitable[Stub]]) -> None:
    stub = await start(openai_api_key="")
    error = await failure(stub, topic())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "OPENAI_API_KEY" in error.details()
    assert fake.requests_to(CHAT) == []


async def test_a_429_is_retried_since_nothing_was_answered(fake: FakeOpenAI, stub: Stub) -> None:
    fake.add_fault(Fault(CHAT, 429, rate_limit_body("gpt-4.1-mini"), headers={"retry-after-ms": "10"}))
    draft = await stub.DraftScript(topic())
    assert len(draft.calls) == 1 and len(fake.requests_to(CHAT)) == 2


async def test_a_5xx_is_not_ordered_again(fake: FakeOpenAI, stub: Stub) -> None:
    fake.add_fault(Fault(CHAT, 500, {"error": {"message": "The server had an error", "type": "server_error"}}))
    error = await failure(stub, topic())
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "may have been answered" in error.details()
    assert len(fake.requests_to(CHAT)) == 1


async def test_the_estimate_bounds_the_worst_case_and_the_cap_refuses_before_any_call(
    fake: FakeOpenAI, stub: Stub
) -> None:
    fake.chat_answers = ["not_json"]
    request = topic(target_seconds=120)
    estimate = (await stub.EstimateDraftCost(script_service_pb2.EstimateDraftCostRequest(request=request))).estimate
    assert estimate.provider == "openai" and estimate.usd > 0
    draft = await stub.DraftScript(request)
    assert len(draft.calls) == 2 and draft.cost_usd <= estimate.usd
    fake.reset()
    request.max_cost_usd = estimate.usd / 2
    error = await failure(stub, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "over max_cost_usd" in error.details()
    assert fake.requests_to(CHAT) == []


async def test_an_unpriced_model_is_refused_until_its_price_is_set(
    fake: FakeOpenAI, start: Callable[..., Awaitable[Stub]]
) -> None:
    error = await failure(await start(script_openai_model="gpt-4.1-nano"), topic())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "SCRIPT_OPENAI_INPUT_USD_PER_MILLION_TOKENS" in error.details()
    stub = await start(
        script_openai_model="gpt-4.1-nano",
        script_openai_input_usd_per_million_tokens=0,
        script_openai_output_usd_per_million_tokens=0,
    )
    draft = await stub.DraftScript(topic())
    assert draft.model == "gpt-4.1-nano-2025-04-14" and draft.cost_usd == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (script_service_pb2.DraftScriptRequest(), "topic and document are both unset"),
        (topic(""), "topic is empty"),
        (topic("x" * 2001), "topic has 2001 characters"),
        (topic(audience="a" * 201), "audience has 201 characters"),
        (topic(target_seconds=3601), "target_seconds is 3601"),
        (topic(max_cost_usd=float("nan")), "max_cost_usd must be a finite number"),
        (topic(provider="nope"), "provider: unknown provider 'nope'"),
        (
            script_service_pb2.DraftScriptRequest(document=script_service_pb2.Document(text="Hello.")),
            "document.format must be MARKDOWN or PLAIN",
        ),
    ],
)
async def test_bad_requests_name_the_field(stub: Stub, request_: Any, field: str) -> None:
    error = await failure(stub, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()


async def test_the_providers_are_listed_with_prices(stub: Stub) -> None:
    providers = (await stub.ListScriptProviders(script_service_pb2.ListScriptProvidersRequest())).providers
    assert (providers.kind, providers.default_provider) == (types_pb2.MEDIA_KIND_SCRIPT, "openai")
    listed = {p.name: p for p in providers.providers}
    assert listed["outline"].offline and not listed["openai"].offline
    assert [(p.unit, p.usd_per_unit) for p in listed["openai"].prices] == [
        ("1M input tokens", USD_IN),
        ("1M output tokens", USD_OUT),
    ]
    assert list(listed["openai"].required_env) == ["OPENAI_API_KEY"] and listed["openai"].configured


async def test_the_schema_sent_is_the_script_formats_shape(fake: FakeOpenAI, stub: Stub) -> None:
    await stub.DraftScript(topic())
    schema = fake.requests_to(CHAT)[0].json()["response_format"]["json_schema"]["schema"]
    scene = schema["properties"]["scenes"]["items"]
    assert sorted(scene["properties"]) == ["narration", "title", "visual"]
    assert json.dumps(schema).count('"additionalProperties": false') == 2


def document(text: str, **fields: Any) -> script_service_pb2.DraftScriptRequest:
    return script_service_pb2.DraftScriptRequest(
        document=script_service_pb2.Document(text=text, format=script_service_pb2.DOCUMENT_FORMAT_MARKDOWN),
        **fields,
    )


async def test_a_markdown_document_is_drafted_offline_for_free(fake: FakeOpenAI, stub: Stub) -> None:
    draft = await stub.DraftScript(document("# Tides\r\n\r\nThe Moon pulls the sea.\r\n", provider="outline"))
    assert [(s.id, s.title, s.narration, s.visual_prompt) for s in draft.scenes] == [
        ("scene-1", "Tides", "The Moon pulls the sea.", "Tides: The Moon pulls the sea.")
    ]
    assert (draft.title, draft.provider, draft.model, draft.cost_usd, len(draft.calls)) == (
        "Tides",
        "outline",
        "outline",
        0,
        0,
    )
    assert fake.requests_to(CHAT) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "document.text is empty"),
        ("# Heading only", "document.text has no paragraph to narrate"),
        ("Ring the bell\x07 now.", "document.text contains the control character U+0007"),
        ("x " * 50_001, "document.text has 100001 characters; the limit is 100000"),
    ],
)
async def test_a_document_that_makes_no_script_is_invalid_argument(stub: Stub, text: str, expected: str) -> None:
    error = await failure(stub, document(text, provider="outline"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.details()
