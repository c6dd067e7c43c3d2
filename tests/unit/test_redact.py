"""The redaction filter on a real logging handler: messages, arguments, tracebacks and `extra` fields."""

from __future__ import annotations

import base64
import io
import logging

import pytest
from pydantic import SecretStr

from services.common import redact
from services.common.errors import MAX_STATUS_CHARS, quoted, status_message
from services.common.observability import JsonFormatter
from services.common.settings import ServiceSettings

KEY = "sk-unit-Redact9x8y7z"
TOKENS = "first-token-abc,second-token-def"
REDIS = "rediss://cache:p4ss-w0rd-xyz@redis.internal:6380/0"


class _Settings(ServiceSettings):
    gateway_auth_tokens: SecretStr = SecretStr("")
    asset_cache_url: SecretStr = SecretStr("")


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    redact.register(KEY)
    redact.register_settings(_Settings(gateway_auth_tokens=SecretStr(TOKENS), asset_cache_url=SecretStr(REDIS)))


@pytest.mark.parametrize("formatter", [JsonFormatter("test"), logging.Formatter("%(message)s %(note)s")])
def test_every_part_of_a_log_record_is_redacted(formatter: logging.Formatter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(redact.RedactingFilter())
    logger = logging.getLogger("test_redact")
    logger.addHandler(handler)
    try:
        raise RuntimeError(f"vendor said: Incorrect API key provided: {KEY}")
    except RuntimeError:
        logger.exception(
            "call with %s failed", KEY, extra={"note": f"Basic {base64.b64encode(b'cache:p4ss-w0rd-xyz')}"}
        )
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "Incorrect API key provided: [REDACTED]" in text and "call with [REDACTED] failed" in text
    for secret in (KEY, "p4ss-w0rd-xyz", base64.b64encode(b"cache:p4ss-w0rd-xyz").decode()):
        assert secret not in text


def test_status_messages_lose_secrets_and_stay_short() -> None:
    message = status_message(f"tokens {TOKENS}, second-token-def alone, cache {REDIS}, " + "x" * 5000)
    assert message.startswith(
        "tokens [REDACTED], [REDACTED] alone, cache rediss://[REDACTED]@redis.internal:6380/0, xxx"
    )
    assert len(message) == MAX_STATUS_CHARS + len("... (cut)") and message.endswith("... (cut)")


def test_quoted_input_is_cut_to_a_prefix() -> None:
    assert quoted("piper") == "'piper'"
    assert quoted("v" * 100_000) == f"'{'v' * 40}'... (100000 characters)"
