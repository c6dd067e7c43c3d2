"""The exposure settings on real in-process servers: reflection off, tokens over plaintext warned about or refused,
service tokens from a file, and an open server on a reachable address called out."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import ValidationError

from services.common.server import Server, is_loopback
from services.image.config import ImageSettings
from services.image.server import build as build_image

TOKEN = "file-token-" + "ab12" * 8
SERVER_LOGGER = "services.common.server"


async def _reflected_services(server: Server) -> list[str]:
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            return [service.name async for response in responses for service in response.list_services_response.service]
    finally:
        await server.stop(0)


async def test_reflection_is_on_by_default_and_a_setting_turns_it_off() -> None:
    listed = await _reflected_services(build_image(ImageSettings(listen_address="127.0.0.1:0")))
    assert "scenecast.v1.ImageService" in listed
    with pytest.raises(grpc.aio.AioRpcError) as off:
        await _reflected_services(build_image(ImageSettings(listen_address="127.0.0.1:0", grpc_reflection=False)))
    assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.fixture
def certs(tmp_path: Path) -> tuple[str, str]:
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    server.cert_chain_pems[0].write_to_path(cert)
    server.private_key_pem.write_to_path(key)
    return str(cert), str(key)


async def test_tokens_over_plaintext_beyond_loopback_are_warned_about_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, SERVER_LOGGER)
    server = build_image(ImageSettings(listen_address="0.0.0.0:0", service_auth_tokens=TOKEN))
    await server.stop(0)
    warnings = [r.getMessage() for r in caplog.records if r.name == SERVER_LOGGER and r.levelno == logging.WARNING]
    assert warnings == [
        "scenecast.v1.ImageService on 0.0.0.0:0 takes bearer tokens in plaintext, readable on the network: set "
        "TLS_CERT_FILE and TLS_KEY_FILE, listen on 127.0.0.1, or set PLAINTEXT_TOKEN_POLICY=allow on a private network"
    ]


def test_tokens_over_plaintext_beyond_loopback_can_be_refused() -> None:
    with pytest.raises(RuntimeError, match=r"takes bearer tokens in plaintext.*\(PLAINTEXT_TOKEN_POLICY=refuse\)"):
        build_image(
            ImageSettings(listen_address="0.0.0.0:0", service_auth_tokens=TOKEN, plaintext_token_policy="refuse")
        )


@pytest.mark.parametrize(
    "overrides",
    [
        {"listen_address": "127.0.0.1:0", "plaintext_token_policy": "refuse"},
        {"listen_address": "0.0.0.0:0", "plaintext_token_policy": "allow"},
        {"listen_address": "0.0.0.0:0", "plaintext_token_policy": "refuse", "tls": True},
    ],
    ids=["loopback", "allowed", "tls"],
)
async def test_tokens_on_loopback_or_over_tls_or_allowed_start_without_a_warning(
    overrides: dict[str, object], certs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, SERVER_LOGGER)
    tls = {"tls_cert_file": certs[0], "tls_key_file": certs[1]} if overrides.pop("tls", False) else {}
    server = build_image(ImageSettings(service_auth_tokens=TOKEN, **tls, **overrides))  # type: ignore[arg-type]
    await server.stop(0)
    assert not [r for r in caplog.records if r.name == SERVER_LOGGER and r.levelno >= logging.WARNING]
    assert "bearer token required" in server.security


async def test_an_open_server_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, SERVER_LOGGER)
    for address in ("127.0.0.1:0", "0.0.0.0:0"):
        server = build_image(ImageSettings(listen_address=address))
        await server.stop(0)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == SERVER_LOGGER]
    assert lines == [
        ("INFO", "scenecast.v1.ImageService on 127.0.0.1:0 takes calls from any local process (loopback, no token)"),
        (
            "WARNING",
            "scenecast.v1.ImageService on 0.0.0.0:0 takes calls from ANYONE who can reach it: set SERVICE_AUTH_TOKENS "
            "(GATEWAY_AUTH_TOKENS on the gateway), or listen on 127.0.0.1",
        ),
    ]


def test_loopback_addresses() -> None:
    assert [is_loopback(a) for a in ("127.0.0.1:1", "127.3.4.5:1", "[::1]:1", "localhost:1")] == [True] * 4
    assert [is_loopback(a) for a in ("0.0.0.0:1", "[::]:1", "10.0.0.2:1", "gateway:1")] == [False] * 4


def test_service_tokens_come_from_the_variable_or_a_file(tmp_path: Path) -> None:
    assert ImageSettings(service_auth_tokens=f" {TOKEN} , old ").service_tokens == (TOKEN, "old")
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    assert ImageSettings(service_auth_tokens_file=str(token_file)).service_tokens == (TOKEN,)
    assert ImageSettings().service_tokens == ()
    with pytest.raises(ValidationError, match="set SERVICE_AUTH_TOKENS or SERVICE_AUTH_TOKENS_FILE, not both") as both:
        ImageSettings(service_auth_tokens=TOKEN, service_auth_tokens_file=str(token_file))
    with pytest.raises(ValidationError, match=r"SERVICE_AUTH_TOKENS_FILE=/nonexistent/tokens: no such file"):
        ImageSettings(service_auth_tokens_file="/nonexistent/tokens")
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(ValidationError, match="holds no token"):
        ImageSettings(service_auth_tokens_file=str(tmp_path / "empty"))
    # The token never shows in an error or a repr.
    assert TOKEN not in str(both.value) and TOKEN not in repr(ImageSettings(service_auth_tokens=TOKEN))
