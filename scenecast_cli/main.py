"""`scenecast render|estimate|config|spend|serve`."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import time
from datetime import date
from pathlib import Path

import grpc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from scenecast.v1 import render_service_pb2, types_pb2

from gateway.config import GatewaySettings
from scenecast_cli.client import estimate_cost, get_config, get_spend, render_to_file, upload_music, write_sidecars
from scenecast_cli.script import ScriptError, load_script
from scenecast_cli.stack import LocalStack

DEFAULT_GATEWAY = os.environ.get("SCENECAST_GATEWAY", "127.0.0.1:50050")
_console = Console(stderr=True)
_GROUPINGS = {
    "day": render_service_pb2.SPEND_GROUPING_DAY,
    "provider": render_service_pb2.SPEND_GROUPING_PROVIDER,
    "render": render_service_pb2.SPEND_GROUPING_RENDER,
}
_GROUP_TITLES = {"day": "day (UTC)", "provider": "provider/model", "render": "render"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scenecast", description="Script in, narrated MP4 out.")
    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument("--gateway", default=DEFAULT_GATEWAY, help="gateway address (env SCENECAST_GATEWAY)")
    gateway.add_argument("--tls", action="store_true", help="use TLS with the system's CAs (env SCENECAST_TLS)")
    gateway.add_argument("--ca-file", help="CA bundle that signed the gateway's certificate (env SCENECAST_CA_FILE)")
    gateway.add_argument("--cert-file", help="client certificate for mTLS (env SCENECAST_CERT_FILE)")
    gateway.add_argument("--key-file", help="client key for mTLS (env SCENECAST_KEY_FILE)")
    gateway.add_argument("--server-name", help="TLS name to expect from the gateway (env SCENECAST_SERVER_NAME)")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", parents=[gateway], help="render a YAML or JSON script to an MP4")
    render.add_argument("script", type=Path)
    render.add_argument("-o", "--output", type=Path, required=True, help="MP4 file to write")
    render.add_argument("--no-cache", action="store_true", help="regenerate every asset even when it is cached")
    render.add_argument(
        "--start-services", action="store_true", help="start the five services locally for this render, then stop them"
    )
    estimate = commands.add_parser("estimate", parents=[gateway], help="price a script without rendering it")
    estimate.add_argument("script", type=Path)
    commands.add_parser("config", parents=[gateway], help="show the providers behind the gateway and their prices")
    spend = commands.add_parser("spend", parents=[gateway], help="show the provider spend the gateway recorded")
    spend.add_argument("--by", choices=tuple(_GROUPINGS), default="day", help="one row per day, provider or render")
    spend.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="first UTC day to include")
    spend.add_argument("--render", default="", metavar="ID", help="only this render")
    serve = commands.add_parser("serve", help="run the five services locally on their default ports until Ctrl-C")
    serve.add_argument(
        "--free-ports", action="store_true", help="use free ports instead of the defaults (to run beside another stack)"
    )
    args = parser.parse_args(argv)
    # The client reads its TLS settings from the environment; flags override it. The token is env-only
    # (SCENECAST_TOKEN), so it never appears in a process listing.
    for flag, variable in (
        ("tls", "SCENECAST_TLS"),
        ("ca_file", "SCENECAST_CA_FILE"),
        ("cert_file", "SCENECAST_CERT_FILE"),
        ("key_file", "SCENECAST_KEY_FILE"),
        ("server_name", "SCENECAST_SERVER_NAME"),
    ):
        if getattr(args, flag, None):
            os.environ[variable] = "true" if getattr(args, flag) is True else str(getattr(args, flag))
    try:
        if args.command == "render":
            return _render(args)
        if args.command == "estimate":
            _print_estimate(estimate_cost(args.gateway, load_script(args.script).request))
            return 0
        if args.command == "config":
            _print_config(get_config(args.gateway))
            return 0
        if args.command == "spend":
            request = render_service_pb2.GetSpendRequest(
                group_by=_GROUPINGS[args.by], since_day=args.since or "", render_id=args.render
            )
            _print_spend(get_spend(args.gateway, request), args.by)
            return 0
        return _serve(args.free_ports)
    except ScriptError as error:
        _fail("bad script", str(error))
        return 2
    except (RuntimeError, TimeoutError, ValueError) as error:
        _fail("error", str(error))
        return 1
    except grpc.RpcError as error:
        _fail(error.code().name, error.details())  # type: ignore[attr-defined]
        return 1


def _fail(label: str, message: str) -> None:
    """Prints an error unwrapped (paths stay whole to copy) and as text: `[...]` in a message is not rich markup."""
    _console.print(f"[red]{label}:[/red] {escape(message)}", soft_wrap=True)


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date written YYYY-MM-DD") from None


def _render(args: argparse.Namespace) -> int:
    script = load_script(args.script)
    request = script.request
    request.no_cache = args.no_cache
    args.output.parent.mkdir(parents=True, exist_ok=True)
    stack = LocalStack().start() if args.start_services else None
    address = stack.gateway_address if stack else args.gateway
    started = time.monotonic()
    try:
        if script.music is not None:
            uploaded = upload_music(address, script.music.path, script.music.mime_type)
            request.music.upload_id = uploaded.upload_id
            _console.print(f"uploaded {script.music.path.name}: {uploaded.duration_ms / 1000:.1f} s of music")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=_console,
        ) as progress:
            task = progress.add_task("starting", total=None)

            def show(event: object) -> None:
                progress.update(
                    task,
                    description=event.message,
                    completed=event.completed_steps,  # type: ignore[attr-defined]
                    total=event.total_steps,
                )  # type: ignore[attr-defined]

            summary = render_to_file(address, request, args.output, show)
    finally:
        if stack:
            stack.stop()
    _console.print(
        f"[green]wrote[/green] {args.output}: {summary.width}x{summary.height}, {summary.duration_ms / 1000:.1f} s, "
        f"{summary.size_bytes / 1e6:.1f} MB; render {summary.elapsed_ms / 1000:.1f} s, "
        f"total {time.monotonic() - started:.1f} s"
    )
    _console.print(
        f"spend: estimated ${summary.pre_render_estimate_usd:.4f} before the render, "
        f"${summary.recorded_spend_usd:.4f} recorded"
    )
    if summary.integrated_lufs:  # zero: not measured
        _console.print(f"loudness: {summary.integrated_lufs:.1f} LUFS integrated")
    for path in write_sidecars(summary, args.output):
        _console.print(f"[green]wrote[/green] {path}")
    return 0


def _print_config(config: object) -> None:
    table = Table(title="scenecast providers")
    for column in ("media", "provider", "default", "offline", "configured", "needs", "prices"):
        table.add_column(column)
    for provider_set in config.provider_sets:  # type: ignore[attr-defined]
        kind = types_pb2.MediaKind.Name(provider_set.kind).removeprefix("MEDIA_KIND_").lower()
        for provider in provider_set.providers:
            prices = "\n".join(price_line(price) for price in provider.prices)
            table.add_row(
                kind,
                provider.name,
                "yes" if provider.name == provider_set.default_provider else "",
                "yes" if provider.offline else "",
                "yes" if provider.configured else "no",
                " ".join(provider.required_env),
                prices,
            )
    Console().print(table)


def price_line(price: types_pb2.Price) -> str:
    """One price and what it is for: "gpt-image-1-mini: $0.015 per image, 1536x1024 or 1024x1536 at standard
    quality"."""
    line = f"{price.model}: ${price.usd_per_unit:g} per {price.unit}"
    return f"{line}, {price.note}" if price.note else line


def _print_estimate(estimate: render_service_pb2.EstimateCostResponse) -> None:
    table = Table(title="estimated cost (USD)")
    for column in ("scene", "image", "speech", "video", "total"):
        table.add_column(column, justify="left" if column == "scene" else "right")
    for scene in estimate.scenes:
        table.add_row(
            scene.scene_id,
            f"{scene.image_provider} {scene.image_usd:.4f}",
            f"{scene.speech_provider} {scene.speech_usd:.4f}",
            f"{scene.video_provider} {scene.video_usd:.4f}" if scene.video_provider else "-",
            f"{scene.total_usd:.4f}",
        )
    table.add_row("all", "", "", "", f"{estimate.total_usd:.4f}")
    Console().print(table)


def _print_spend(spend: render_service_pb2.GetSpendResponse, by: str) -> None:
    table = Table(title="recorded provider spend (USD)")
    table.add_column(_GROUP_TITLES[by])
    for column in ("calls", "cache hits", "USD"):
        table.add_column(column, justify="right")
    for row in spend.rows:
        table.add_row(row.key, str(row.calls), str(row.cache_hits), f"{row.usd:.4f}")
    calls = sum(row.calls for row in spend.rows)
    hits = sum(row.cache_hits for row in spend.rows)
    table.add_section()
    table.add_row("all", str(calls), str(hits), f"{spend.total_usd:.4f}")
    Console().print(table)


def _serve(free_ports: bool) -> int:
    """Runs the stack on loopback, restarting any service that dies, until Ctrl-C or SIGTERM."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through LocalStack's exit, which drains and stops every service

    signal.signal(signal.SIGTERM, stop)
    # The media services hold the provider keys: even on loopback they take calls only from this run's gateway, with
    # a token made for the run. The gateway is the stack's front door, open to local callers unless
    # GATEWAY_AUTH_TOKENS is set (read as the gateway reads it, environment then .env).
    gateway_open = not GatewaySettings().accepted_tokens
    with LocalStack(default_ports=not free_ports, service_token=secrets.token_hex(32)) as stack:
        for name, address in stack.addresses.items():
            # Plain print: one line per process that scripts can read (rich would wrap long lines).
            print(f"{name:<10} gRPC {address}  metrics http://127.0.0.1:{stack.metrics_ports[name]}/metrics")
        print(
            f"gateway listening on {stack.gateway_address}; "
            + (
                "no authentication: any local user or process can render (set GATEWAY_AUTH_TOKENS to require a token)"
                if gateway_open
                else "callers need a token from GATEWAY_AUTH_TOKENS"
            )
            + "; Ctrl-C stops",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stack.supervise(lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
