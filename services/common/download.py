"""Fetching provider output files (URLs or data: URIs) with a size cap, a time limit, and no private addresses."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass

import httpx

from services.common.errors import FailedPrecondition, ProviderUnavailable, RateLimited
from services.common.providers import ProviderSettings
from services.common.retry import retry_after_seconds

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 120.0
# Names the setting in messages.
ALLOW_PRIVATE_ENV = "ALLOW_PRIVATE_OUTPUT_URLS"
MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class DownloadSettings(ProviderSettings):
    """What every provider that downloads a vendor's output files shares."""

    # When true, output URLs may point at private, loopback, link-local or reserved addresses (a vendor fake, or a
    # model server on the local network); off by default, so a vendor's answer cannot reach into the cluster.
    allow_private_output_urls: bool = False


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
    allowed_origins: Collection[str] = (),
    origins_setting: str = "",
    allow_private: bool = False,
) -> Downloaded:
    """Returns the bytes behind an output URL; raises ProviderUnavailable (retryable) when they cannot be had whole.

    A provider's answer decides the URL, so it is checked before every request, each redirect hop included: a host
    that resolves to a private, loopback, link-local or reserved address is refused with FailedPrecondition (no
    reaching into the cluster or a cloud metadata endpoint), unless `allow_private` (ALLOW_PRIVATE_OUTPUT_URLS).
    With `allowed_origins` (scheme://host:port, as `origin` writes them: a server the operator configured, such as a
    self-hosted model on the local network, and the origins its setting `origins_setting` adds) every hop must be on
    one of them, and they are trusted even on private addresses.
    `headers` are sent to the first URL's origin only, as httpx does with redirects.
    """
    if url.startswith("data:"):
        return _decode_data_uri(url, max_bytes)
    first_origin = ""
    try:
        async with httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                parts = urllib.parse.urlsplit(url)
                try:
                    where = origin(url) if parts.scheme in _DEFAULT_PORTS else ""
                except ValueError:
                    where = ""
                if not where:
                    raise ProviderUnavailable(f"provider output {_shown(url)!r} is not an http(s) or data: URL")
                first_origin = first_origin or where
                if allowed_origins:
                    _check_allowed(url, where, allowed_origins, origins_setting)
                elif not allow_private:
                    await check_public_host(parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme])
                sent_headers = headers if where == first_origin else None
                async with client.stream("GET", url, headers=sent_headers) as response:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECT_STATUSES and location:
                        url = urllib.parse.urljoin(url, location)
                        continue
                    return await _read(response, max_bytes)
    except httpx.HTTPError as error:
        raise ProviderUnavailable(f"downloading the output failed: {error!r}") from error
    raise ProviderUnavailable(f"downloading the output was redirected more than {MAX_REDIRECTS} times")


async def _read(response: httpx.Response, max_bytes: int) -> Downloaded:
    if response.status_code == 429:
        raise RateLimited(
            "downloading the output was throttled (429)", retry_after_seconds(response.headers.get("retry-after"))
        )
    if response.status_code >= 400:
        raise ProviderUnavailable(f"downloading the output failed with HTTP {response.status_code}")
    declared = response.headers.get("content-length")
    if declared is not None and int(declared) > max_bytes:
        raise ProviderUnavailable(f"the output is {declared} bytes, over the {max_bytes}-byte limit")
    # A BytesIO, not a bytearray: CPython's getvalue() hands over its buffer without copying it, where
    # bytes(bytearray) copied: a 500 MiB avatar video peaked at 1106 MiB in the video service (over its 1 GiB limit).
    data = io.BytesIO()
    async for block in response.aiter_bytes():
        data.write(block)
        if data.tell() > max_bytes:
            raise ProviderUnavailable(f"the output is over the {max_bytes}-byte limit")
    if declared is not None and data.tell() != int(declared):
        raise ProviderUnavailable(f"the output was truncated ({data.tell()} of {declared} bytes)")
    return Downloaded(data.getvalue(), response.headers.get("content-type", "").split(";")[0].strip())


async def resolve(host: str, port: int) -> list[str]:
    """The addresses a host name resolves to, as the connection that follows would find them."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for *_, sockaddr in infos]


async def check_public_host(host: str, port: int) -> None:
    """Raises FailedPrecondition unless every address `host` resolves to is publicly routable."""
    try:
        addresses = await resolve(host, port)
    except OSError as error:
        raise ProviderUnavailable(f"cannot resolve the output's host {host!r}: {error}") from error
    for address in addresses:
        if not is_public(address):
            raise FailedPrecondition(
                f"provider output host {host!r} resolves to {address}, a private, loopback, link-local or reserved "
                f"address; refused. Set {ALLOW_PRIVATE_ENV}=true on the service to allow it (for example for a "
                "self-hosted model on the local network)"
            )


def is_public(address: str) -> bool:
    """Whether an IP address is publicly routable: not private, loopback, link-local, reserved, shared or multicast."""
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 zone ("fe80::1%eth0") says nothing about the range
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def origin(url: str) -> str:
    """scheme://host:port of an http(s) URL, the port written out, so that equal origins compare equal.

    Raises ValueError for a URL without a host or with a port that is not a number.
    """
    parts = urllib.parse.urlsplit(url.strip())
    host = parts.hostname
    if not host:
        raise ValueError(f"{url[:80]!r} names no host")
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{f'[{host}]' if ':' in host else host}:{port}"


def _check_allowed(url: str, where: str, allowed_origins: Collection[str], origins_setting: str) -> None:
    """The operator chose where this provider's files may come from: any other origin (even the same host on another
    port, where a different service may listen) is refused before it is contacted."""
    if where not in allowed_origins:
        hint = f"; add the origin to {origins_setting} to allow it" if origins_setting else ""
        raise FailedPrecondition(
            f"provider output {_shown(url)!r} is not on an allowed origin ({', '.join(sorted(allowed_origins))})"
            f"; refused{hint}"
        )


def _shown(url: str) -> str:
    """A URL cut before its query, which may hold a pre-signed download's signature."""
    return url.split("?")[0][:80]


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
