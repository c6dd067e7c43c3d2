"""One filter that keeps configured secrets out of every status message and log line, in the forms they travel in.

Vendors (and proxies in front of them) sometimes echo the key they were sent in an error body, which would then reach
the caller and the logs. Every secret the service knows is registered here, with the encodings it is sent in: the
value itself, percent-encoded (in a URL), base64 (an `Authorization: Basic` header of `user:password` from a URL's
user info) and each part of a comma-separated list. `redact` replaces all of them.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import urllib.parse

from pydantic import SecretStr
from pydantic_settings import BaseSettings

REDACTED = "[REDACTED]"
# Values shorter than this are not redacted: replacing every "abc" in every message would make errors unreadable,
# and no vendor issues keys that short.
MIN_SECRET_CHARS = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register(value: str) -> None:
    """Adds a secret (a key, a token list, or a URL whose user info holds a password) and its encodings."""
    forms = {part.strip() for part in value.split(",")} | {value.strip()}
    for form in list(forms):
        parts = urllib.parse.urlsplit(form)
        if parts.scheme and parts.netloc:
            # Of a URL only the password is secret: the host stays readable in messages ("cannot reach gpu-box").
            forms.discard(form)
            if parts.password:
                user_info = f"{parts.username or ''}:{parts.password}"
                forms |= {
                    parts.password,
                    user_info,
                    urllib.parse.unquote(parts.password),
                    urllib.parse.unquote(user_info),
                }
    encoded = set()
    for form in forms:
        encoded |= {urllib.parse.quote(form, safe=""), base64.b64encode(form.encode()).decode()}
    global _pattern
    with _lock:
        new = {form for form in forms | encoded if len(form) >= MIN_SECRET_CHARS} - _secrets
        if not new:
            return
        _secrets.update(new)
        # Longest first, so a secret that contains another is replaced whole.
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def register_settings(settings: BaseSettings) -> None:
    """Registers every SecretStr field of a service's settings (tokens, URLs with passwords)."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            register(value.get_secret_value())


def redact(text: str) -> str:
    pattern = _pattern
    return pattern.sub(REDACTED, text) if pattern is not None else text


# Attributes every LogRecord has; anything else was passed with `extra=` and is redacted as well.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """A handler filter: renders the message (arguments included) and the traceback, and redacts both and the extras.

    Formatters then use the redacted `exc_text` instead of formatting the exception again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, redact(value))
        return True
