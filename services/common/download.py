"""Fetching provider output files (URLs or data: URIs) with a size cap and a time limit."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from dataclasses import dataclass

import httpx

from services.common.errors import ProviderUnavailable, RateLimited

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Downloaded:
    data: bytes
    content_type: str


async def fetch_output(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    headers: dict[str, str] | None = None,
) -> Downloaded:
    """Returns the bytes behind an output URL; raises ProviderUnavailable (retryable) when they cannot be had whole."""
    if url.startswith("data:"):
        return _decode_data_uri(url, max_bytes)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ProviderUnavailable(f"provider output {url[:80]!r} is not an http(s) or data: URL")
    try:
        async with httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=True) as client:
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 429:
                    raise RateLimited("downloading the output was throttled (429)", _retry_after(response))
                if response.status_code >= 400:
                    raise ProviderUnavailable(f"downloading the output failed with HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and int(declared) > max_bytes:
                    raise ProviderUnavailable(f"the output is {declared} bytes, over the {max_bytes}-byte limit")
                data = bytearray()
                async for block in response.aiter_bytes():
                    data += block
                    if len(data) > max_bytes:
                        raise ProviderUnavailable(f"the output is over the {max_bytes}-byte limit")
                if declared is not None and len(data) != int(declared):
                    raise ProviderUnavailable(f"the output was truncated ({len(data)} of {declared} bytes)")
                return Downloaded(bytes(data), response.headers.get("content-type", "").split(";")[0].strip())
    except httpx.HTTPError as error:
        raise ProviderUnavailable(f"downloading the output failed: {error!r}") from error


def _decode_data_uri(uri: str, max_bytes: int) -> Downloaded:
    header, _, payload = uri.partition(",")
    media_type = header[len("data:") :].split(";")[0] or "application/octet-stream"
    if len(payload) * 3 // 4 > max_bytes:
        raise ProviderUnavailable(f"the output is over the {max_bytes}-byte limit")
    try:
        data = (
            base64.b64decode(payload, validate=True) if ";base64" in header else urllib.parse.unquote_to_bytes(payload)
        )
    except (binascii.Error, ValueError) as error:
        raise ProviderUnavailable(f"the output's data: URI is not valid base64 ({error})") from error
    return Downloaded(data, media_type)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
