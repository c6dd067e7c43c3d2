"""TLS everywhere with mutual TLS between services, the gateway's bearer tokens, keys that never leak, and output
downloads that refuse private addresses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from scenecast.v1 import (
    image_service_pb2,
    image_service_pb2_grpc,
    render_service_pb2,
    render_service_pb2_grpc,
    types_pb2,
)

from gateway.config import GatewaySettings
from scenecast_cli.stack import LocalStack, TlsFiles
from services.common import download
from services.common.auth import REFUSAL
from services.common.errors import FailedPrecondition, ProviderUnavailable
from services.common.healthcheck import check
from services.common.server import MAX_MESSAGE_BYTES
from services.common.tls import channel_credentials, client_channel
from tests.fakes.avatar_servers import FakeSynthesia
from tests.fakes.base import FakeServer
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replicate_server import FakeReplicate
from tests.probe import probe_mp4

TOKEN = "tok-SECRET-7f3a9c"
# Fake-looking keys that the fakes reject (401): the values must never appear in a log, an error or GetConfig.
KEYS = {
    "OPENAI_API_KEY": "sk-test-SECRET123",
    "REPLICATE_API_TOKEN": "r8_SECRET456",
    "SYNTHESIA_API_KEY": "synthesia-SECRET789",
    "HEYGEN_API_KEY": "heygen-SECRET012",
}
SECRETS = (*KEYS.values(), TOKEN)
OUTPUT = types_pb2.OutputSettings(
    aspect_ratio=types_pb2.ASPECT_RATIO_16_9, height=240, fps=15, quality=types_pb2.QUALITY_DRAFT
)
REQUEST = render_service_pb2.RenderRequest(
    scenes=[types_pb2.Scene(id="one", title="Locked down", narration="Every call is encrypted.")], output=OUTPUT
)
_CLIENT_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("scenecast-gateway")
    files = TlsFiles(*(folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    ca.cert_pem.write_to_path(files.ca_file)
    server.cert_chain_pems[0].write_to_path(files.server_cert_file)
    server.private_key_pem.write_to_path(files.server_key_file)
    client.cert_chain_pems[0].write_to_path(files.client_cert_file)
    client.private_key_pem.write_to_path(files.client_key_file)
    return files


@pytest.fixture(scope="module")
def stack(certs: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    logs = tmp_path_factory.mktemp("security-logs")
    with FakeOpenAI() as openai_fake, FakeReplicate() as replicate_fake, FakeSynthesia() as synthesia_fake:
        env = {
            **KEYS,
            "GATEWAY_AUTH_TOKENS": f"another-token,{TOKEN}",
            "OPENAI_BASE_URL": f"{openai_fake.base_url}/v1",
            "REPLICATE_BASE_URL": replicate_fake.base_url,
            "SYNTHESIA_BASE_URL": synthesia_fake.base_url,
            # The most talkative level: whatever a library logs at DEBUG must not carry a key either.
            "LOG_LEVEL": "DEBUG",
        }
        with LocalStack(env=env, log_dir=logs, tls=certs) as local:
            yield local


def _gateway(stack: LocalStack, certs: TlsFiles, token: str | None = TOKEN) -> grpc.Channel:
    return client_channel(stack.gateway_address, ca_file=certs.ca_file, token=token, options=_CLIENT_OPTIONS)


def _render(
    channel: grpc.Channel,
    request: render_service_pb2.RenderRequest,
    path: Path,
    metadata: list[tuple[str, str]] | None = None,
) -> None:
    with path.open("wb") as handle:
        for response in render_service_pb2_grpc.RenderServiceStub(channel).Render(
            request, timeout=60, metadata=metadata
        ):
            if response.WhichOneof("payload") == "chunk":
                handle.write(response.chunk.data)


def test_render_over_tls_with_a_token(stack: LocalStack, certs: TlsFiles, tmp_path: Path) -> None:
    path = tmp_path / "tls.mp4"
    with _gateway(stack, certs) as channel:
        _render(channel, REQUEST, path)
    probed = probe_mp4(path)
    assert (probed.video_codec, probed.width, probed.height, probed.audio_codec) == ("h264", 426, 240, "aac")
    assert probed.subtitle_texts == ["Every call is encrypted."]


@pytest.mark.parametrize(
    "authorization", [None, "Bearer not-the-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer "]
)
def test_calls_without_a_valid_token_are_unauthenticated(
    stack: LocalStack, certs: TlsFiles, tmp_path: Path, authorization: str | None
) -> None:
    metadata = [("authorization", authorization)] if authorization is not None else []
    with _gateway(stack, certs, token=None) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as config_error:
            stub.GetConfig(render_service_pb2.GetConfigRequest(), timeout=10, metadata=metadata)
        with pytest.raises(grpc.RpcError) as render_error:
            _render(channel, REQUEST, tmp_path / "refused.mp4", metadata)
    for error in (config_error.value, render_error.value):
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, REFUSAL)  # type: ignore[attr-defined]
    assert not (tmp_path / "refused.mp4").stat().st_size


def test_plaintext_and_certificate_less_callers_are_refused(stack: LocalStack, certs: TlsFiles, tmp_path: Path) -> None:
    # A plaintext channel to a TLS-only server never completes a handshake.
    with client_channel(stack.gateway_address, token=TOKEN) as channel:
        with pytest.raises(grpc.RpcError) as plaintext:
            render_service_pb2_grpc.RenderServiceStub(channel).GetConfig(
                render_service_pb2.GetConfigRequest(), timeout=5
            )
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    # A media service takes only callers with a certificate from its CA (the gateway's): trusting it is not enough,
    # and neither is a certificate from another CA.
    intruder = trustme.CA().issue_cert("intruder")
    intruder.cert_chain_pems[0].write_to_path(tmp_path / "intruder.pem")
    intruder.private_key_pem.write_to_path(tmp_path / "intruder.key")
    request = image_service_pb2.ListImageProvidersRequest()
    for client_files in ({}, {"cert_file": tmp_path / "intruder.pem", "key_file": tmp_path / "intruder.key"}):
        with client_channel(stack.addresses["image"], ca_file=certs.ca_file, **client_files) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                image_service_pb2_grpc.ImageServiceStub(channel).ListImageProviders(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    # The gateway's certificate is let in.
    with client_channel(
        stack.addresses["image"],
        ca_file=certs.ca_file,
        cert_file=certs.client_cert_file,
        key_file=certs.client_key_file,
    ) as channel:
        providers = image_service_pb2_grpc.ImageServiceStub(channel).ListImageProviders(request, timeout=5)
    assert providers.providers.default_provider == "slides"


def test_health_answers_over_tls_without_a_token(stack: LocalStack, certs: TlsFiles) -> None:
    assert check(stack.gateway_address, credentials=channel_credentials(ca_file=certs.ca_file))[0]
    with client_channel(stack.gateway_address, ca_file=certs.ca_file) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    for name in ("image", "audio", "video", "assembler"):
        serving, seen = check(stack.addresses[name], credentials=certs.client_credentials())
        assert serving, seen


def test_keys_and_tokens_never_leak(stack: LocalStack, certs: TlsFiles, tmp_path: Path) -> None:
    """Cloud providers fail on the rejected keys; no key or token shows in their errors, GetConfig, or any log."""
    failing = {
        "gpt-image-1-mini": types_pb2.ProviderOverrides(image="gpt-image-1-mini"),
        "flux": types_pb2.ProviderOverrides(image="flux"),
        "kokoro": types_pb2.ProviderOverrides(speech="kokoro"),
        "synthesia": types_pb2.ProviderOverrides(avatar="synthesia"),
    }
    seen: list[str] = []
    with _gateway(stack, certs) as channel:
        for name, providers in failing.items():
            request = render_service_pb2.RenderRequest()
            request.CopyFrom(REQUEST)
            request.providers.CopyFrom(providers)
            # The status is not the point here (a failed scene asset is INTERNAL at the gateway until the TaskGroup
            # in gateway/render.py is unwrapped; test_bad_input covers codes): its words are.
            with pytest.raises(grpc.RpcError) as error:
                _render(channel, request, tmp_path / f"{name}.mp4")
            seen.append(error.value.details())  # type: ignore[attr-defined]
        _render(channel, REQUEST, tmp_path / "offline.mp4")
        config = render_service_pb2_grpc.RenderServiceStub(channel).GetConfig(
            render_service_pb2.GetConfigRequest(), timeout=10
        )
    by_name = {p.name: p for s in config.provider_sets for p in s.providers}
    assert by_name["flux"].configured and "REPLICATE_API_TOKEN" in by_name["flux"].required_env
    seen += [str(config), config.SerializeToString().decode("utf-8", "replace")]
    assert stack.log_dir is not None
    logs = {path.name: path.read_text(errors="replace") for path in stack.log_dir.iterdir()}
    # The services logged each rejection, naming the variable to fix (so the absence below means something).
    assert all(f"rejected {variable}" in logs["image.log"] for variable in ("OPENAI_API_KEY", "REPLICATE_API_TOKEN"))
    assert "rejected REPLICATE_API_TOKEN" in logs["audio.log"] and "rejected SYNTHESIA_API_KEY" in logs["video.log"]
    leaks = [
        (where, secret)
        for where, text in [*enumerate(seen), *logs.items()]
        for secret in SECRETS
        if secret in text or secret.removeprefix("sk-test-").removeprefix("r8_") in text
    ]
    assert not leaks


def test_tls_settings_are_checked_at_start_up(certs: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUTH_TOKENS", TOKEN)
    with pytest.raises(ValidationError) as no_key:
        GatewaySettings(tls_cert_file=str(certs.server_cert_file))
    with pytest.raises(ValidationError) as missing:
        GatewaySettings(tls_cert_file="/nonexistent/server.pem", tls_key_file=str(certs.server_key_file))
    with pytest.raises(ValidationError) as client_without_ca:
        GatewaySettings(
            downstream_cert_file=str(certs.client_cert_file), downstream_key_file=str(certs.client_key_file)
        )
    with pytest.raises(ValidationError) as replicas:
        GatewaySettings(downstream_ca_file=str(certs.ca_file), image_service_address="10.0.0.1:1,10.0.0.2:1")
    assert "TLS_CERT_FILE is set but TLS_KEY_FILE is not" in str(no_key.value)
    assert "TLS_CERT_FILE=/nonexistent/server.pem: no such file" in str(missing.value)
    assert "DOWNSTREAM_CERT_FILE needs DOWNSTREAM_CA_FILE" in str(client_without_ca.value)
    assert "IMAGE_SERVICE_ADDRESS lists replicas" in str(replicas.value)
    # A start-up error shows no other setting's value, so the tokens stay out of the crash log.
    assert all(TOKEN not in str(error.value) for error in (no_key, missing, client_without_ca, replicas))
    assert TOKEN not in repr(GatewaySettings()) and GatewaySettings().accepted_tokens == (TOKEN,)


class _Files(FakeServer):
    """Serves /file; /redirect?to=URL answers 302 to URL, and /loop redirects to itself."""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/file", self._file)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/loop", self._to_itself)

    async def _file(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x01video", content_type="video/mp4")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _to_itself(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")


@pytest.fixture
def files() -> Iterator[_Files]:
    with _Files() as server:
        yield server


async def test_private_output_urls_are_refused_unless_allowed(files: _Files) -> None:
    with pytest.raises(FailedPrecondition, match="ALLOW_PRIVATE_OUTPUT_URLS=true") as loopback:
        await download.fetch_output(f"{files.base_url}/file")
    assert "127.0.0.1" in str(loopback.value) and not files.requests
    # An origin the operator allows (a self-hosted model) may be private, but its redirect to another origin is
    # refused before it is requested.
    allowed = {download.origin(files.base_url)}
    same_host = f"{files.base_url}/redirect?to={files.base_url}/file"
    assert (await download.fetch_output(same_host, allowed_origins=allowed)).data == b"\x00\x01video"
    elsewhere = f"{files.base_url}/redirect?to=http://localhost:{files.port}/file"
    files.reset()
    with pytest.raises(FailedPrecondition, match="is not on an allowed origin"):
        await download.fetch_output(elsewhere, allowed_origins=allowed)
    assert [r.path for r in files.requests] == ["/redirect"]
    # data: URIs never touch the network.
    assert (await download.fetch_output("data:video/mp4;base64,AAE=")).data == b"\x00\x01"
    assert (await download.fetch_output(elsewhere, allow_private=True)).data == b"\x00\x01video"
    with pytest.raises(ProviderUnavailable, match="redirected more than 5 times"):
        await download.fetch_output(f"{files.base_url}/loop", allow_private=True)


async def test_public_hosts_pass_and_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver is replaced, so no address outside loopback is ever contacted."""
    answers = {
        "cdn.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
        "mixed.example.com": ["93.184.215.14", "10.0.0.7"],
        "metadata.example.com": ["169.254.169.254"],
        "mapped.example.com": ["::ffff:127.0.0.1"],
        "shared.example.com": ["100.100.100.200"],
        "v6-private.example.com": ["fd00::1"],
    }

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(download, "resolve", resolve)
    await download.check_public_host("cdn.example.com", 443)
    for host in answers.keys() - {"cdn.example.com"}:
        with pytest.raises(FailedPrecondition, match=download.ALLOW_PRIVATE_ENV):
            await download.check_public_host(host, 443)


def test_the_cli_renders_over_tls_with_the_token_from_the_environment(
    stack: LocalStack, certs: TlsFiles, tmp_path: Path
) -> None:
    script = tmp_path / "one.yaml"
    script.write_text(
        "output: {aspect_ratio: '1:1', height: 240, fps: 15, quality: draft}\n"
        "scenes:\n  - {id: one, title: Secure, narration: Encrypted all the way.}\n"
    )
    out = tmp_path / "one.mp4"
    command = [
        sys.executable,
        "-m",
        "scenecast_cli.main",
        "render",
        str(script),
        "-o",
        str(out),
        "--gateway",
        stack.gateway_address,
        "--ca-file",
        str(certs.ca_file),
    ]
    denied = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ})
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "SCENECAST_TOKEN": TOKEN}
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert probe_mp4(out).subtitle_texts == ["Encrypted all the way."]
