"""Property-based tests of the HTTP API from its committed OpenAPI document (schemathesis), against the real process.

Every operation gets generated requests, valid and invalid; each answer must be no 5xx, have a documented status and
content type, and match its schema. The run is bounded (a fixed number of examples, a fixed seed) so it is the same
every time. Valid scripts are sent to `/v1/estimate` rather than `/v1/renders`, which takes the same body but would
render each one: renders get only invalid scripts, which must be refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from scenecast_cli.stack import LocalStack

OPENAPI = Path(__file__).resolve().parents[2] / "web" / "openapi.json"
# Enough examples per operation and mode to reach the edges of each parameter and body, few enough for about a
# minute on two cores.
EXAMPLES = 10


def _schema(modes: list[GenerationMode]) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_path(OPENAPI)
    schema.config.generation.update(modes=modes, max_examples=EXAMPLES, deterministic=True)
    return schema


ALL = _schema([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]).exclude(method="POST", path="/v1/renders")
RENDERS = _schema([GenerationMode.NEGATIVE]).include(method="POST", path="/v1/renders")


# Music is any audio/* body: sent as the raw bytes generated for it.
schemathesis.serializer.alias("audio/*", "application/octet-stream")


@pytest.fixture(scope="module")
def web_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    local = LocalStack(log_dir=tmp_path_factory.mktemp("schema-logs"), web=True).start()
    yield local.web_url
    local.stop()


@ALL.parametrize()
def test_every_answer_is_documented_and_no_5xx(case: schemathesis.Case, web_url: str) -> None:
    # A body can match its schema and still be refused (400 naming the field): a script by rules across fields that
    # its JSON Schema does not state ("a scene needs a visual or a title"), music when the bytes are not audio, a draft
    # when its provider cannot take its source (a topic for the offline outline) or its document has no paragraph.
    # There a refusal of valid data is checked against the document like any other answer, not counted as a failure.
    refusable = ("/v1/estimate", "/v1/music", "/v1/drafts")
    excluded = [positive_data_acceptance] if case.operation.path in refusable else []
    case.call_and_validate(base_url=web_url, excluded_checks=excluded)


@RENDERS.parametrize()
def test_invalid_renders_are_refused_as_documented(case: schemathesis.Case, web_url: str) -> None:
    case.call_and_validate(base_url=web_url)
