"""The web API's pure pieces: byte ranges, field paths, gRPC statuses as HTTP problems, the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from services.common.errors import ORIGIN_KEY
from web.app import byte_range, create_app, openapi_text
from web.config import WebSettings
from web.problems import ProblemError, field_path

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=990-", (990, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=-5000", (0, 999)),
        # Not served as a range (RFC 9110 lets a server ignore them): the whole file.
        ("bytes=0-1,5-9", None),
        ("items=0-9", None),
        ("bytes=-", None),
        ("bytes=9-3", None),
    ],
)
def test_a_range_header_becomes_one_inclusive_span_or_the_whole_file(
    header: str | None, expected: tuple[int, int] | None
) -> None:
    assert byte_range(header, SIZE) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_416_with_the_size(header: str) -> None:
    with pytest.raises(ProblemError) as raised:
        byte_range(header, SIZE)
    assert raised.value.problem.status == 416 and raised.value.headers == {"Content-Range": "bytes */1000"}


def test_a_pydantic_location_is_written_like_the_grpc_messages() -> None:
    assert field_path(("scenes", 0, "id")) == "scenes[0].id"
    assert field_path(("finishing", "title_card", "title")) == "finishing.title_card.title"
    assert field_path(()) == ""


def _rpc_error(code: grpc.StatusCode, details: str, from_gateway: bool = True) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata((ORIGIN_KEY, "service")) if from_gateway else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


@pytest.mark.parametrize(
    ("code", "from_gateway", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, True, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, True, 400),
        (grpc.StatusCode.NOT_FOUND, True, 404),
        (grpc.StatusCode.CANCELLED, True, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True, 429),
        (grpc.StatusCode.UNAVAILABLE, True, 503),
        # The gateway itself out of reach, or refusing this service's own token: not the caller's to fix.
        (grpc.StatusCode.UNAVAILABLE, False, 502),
        (grpc.StatusCode.UNAUTHENTICATED, True, 502),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True, 504),
        (grpc.StatusCode.INTERNAL, True, 500),
    ],
)
def test_each_grpc_status_has_one_http_status(code: grpc.StatusCode, from_gateway: bool, status: int) -> None:
    problem = ProblemError.from_rpc(_rpc_error(code, "what happened", from_gateway)).problem
    assert (problem.status, problem.grpc_status) == (status, code.name)


@pytest.mark.parametrize(
    ("details", "field"),
    [
        ("scenes[2].narration is empty; give the words to speak", "scenes[2].narration"),
        ("providers.image: unknown provider 'x'; valid: slides", "providers.image"),
        ("max_cost_usd must be a finite number of US dollars", "max_cost_usd"),
        ("since_day must be a date written YYYY-MM-DD", "since_day"),
        # A message that does not start with a request field names none.
        ("the first message must be `start`", None),
    ],
)
def test_an_invalid_argument_names_the_field_its_message_starts_with(details: str, field: str | None) -> None:
    problem = ProblemError.from_rpc(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, details)).problem
    assert (problem.field, problem.detail) == (field, details)


def test_the_committed_openapi_document_is_what_the_app_generates() -> None:
    """Regenerate it with `python -m web openapi > web/openapi.json`."""
    committed = (Path(__file__).resolve().parents[2] / "web" / "openapi.json").read_text(encoding="utf-8")
    assert openapi_text(create_app(WebSettings())) == committed
