"""`scenecast render|estimate|validate|draft|config|spend|serve`."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from importlib.metadata import version
from pathlib import Path

import grpc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from scenecast.v1 import render_service_pb2, script_service_pb2, types_pb2

from gateway.config import GatewaySettings
from scenecast_cli.client import (
    connection_lost,
    draft_script,
    estimate_cost,
    get_config,
    get_spend,
    render_to_file,
    upload_music,
    write_credits,
    write_sidecars,
)
from scenecast_cli.drafting import script_text, source_fields, write_new
from scenecast_cli.script import DRAFT_HEIGHT, Script, ScriptError, draft, load_script, only_scene, script_problems
from scenecast_cli.stack import LocalStack
from services.common.providers import SPOKEN_CHARS_PER_SECOND
from services.common.state import create_private_file, private_dir, state_path

DEFAULT_GATEWAY = os.environ.get("SCENECAST_GATEWAY", "127.0.0.1:50050")
_console = Console(stderr=True)
_GROUPINGS = {
    "day": render_service_pb2.SPEND_GROUPING_DAY,
    "provider": render_service_pb2.SPEND_GROUPING_PROVIDER,
    "render": render_service_pb2.SPEND_GROUPING_RENDER,
}
# Service log files of --start-services runs kept in the state folder (the oldest are removed).
_KEPT_LOGS = 10
_GROUP_TITLES = {"day": "day (UTC)", "provider": "provider/model", "render": "render"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        if args.command == "validate":
            return _validate(args.script)
        if args.command == "serve":
            return _serve(args.free_ports)
        # Read first: a bad script (or --scene id, or draft source) fails before any service starts.
        script = load_script(args.script) if args.command in ("render", "estimate") else None
        draft_request = _draft_request(args) if args.command == "draft" else None
        if args.command == "render":
            assert script is not None
            if args.scene:
                only_scene(script.request, args.scene)
            if args.draft:
                draft(script.request)
        with _gateway(args) as address:
            if args.command == "render":
                assert script is not None
                return _render(args, script, address)
            if args.command == "draft":
                assert draft_request is not None
                return _draft(args, draft_request, address)
            if args.command == "estimate":
                assert script is not None
                _print_estimate(estimate_cost(address, script.request))
            elif args.command == "config":
                _print_config(get_config(address))
            else:
                request = render_service_pb2.GetSpendRequest(
                    group_by=_GROUPINGS[args.by], since_day=args.since or "", render_id=args.render
                )
                _print_spend(get_spend(address, request), args.by)
            return 0
    except ScriptError as error:
        _fail("bad script", str(error))
        return 2
    except (RuntimeError, TimeoutError, ValueError) as error:
        _fail("error", str(error))
        return 1
    except grpc.RpcError as error:
        message = error.details()  # type: ignore[attr-defined]
        if connection_lost(error) and not args.start_services:
            message += (
                f" (no gateway answers at {args.gateway}: run `scenecast serve` in another terminal, or add "
                "--start-services to start the services for this command only)"
            )
        _fail(error.code().name, message)  # type: ignore[attr-defined]
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenecast", description="Script in, narrated MP4 out.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('scenecast')}")
    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument("--gateway", default=DEFAULT_GATEWAY, help="gateway address (env SCENECAST_GATEWAY)")
    gateway.add_argument("--tls", action="store_true", help="use TLS with the system's CAs (env SCENECAST_TLS)")
    gateway.add_argument("--ca-file", help="CA bundle that signed the gateway's certificate (env SCENECAST_CA_FILE)")
    gateway.add_argument("--cert-file", help="client certificate for mTLS (env SCENECAST_CERT_FILE)")
    gateway.add_argument("--key-file", help="client key for mTLS (env SCENECAST_KEY_FILE)")
    gateway.add_argument("--server-name", help="TLS name to expect from the gateway (env SCENECAST_SERVER_NAME)")
    gateway.add_argument(
        "--start-services",
        action="store_true",
        help="start the services locally for this command (on free ports), then stop them; their logs go to a "
        "file named on the terminal",
    )
    gateway.add_argument(
        "-v", "--verbose", action="store_true", help="with --start-services, show the services' logs here instead"
    )
    script = argparse.ArgumentParser(add_help=False)
    script.add_argument("script", type=Path, help="the script: a YAML or JSON file (see schemas/script.schema.json)")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", parents=[script, gateway], help="render a YAML or JSON script to an MP4")
    render.add_argument("-o", "--output", type=Path, required=True, help="MP4 file to write")
    render.add_argument("--no-cache", action="store_true", help="regenerate every asset even when it is cached")
    render.add_argument("--scene", metavar="ID", help="render only the scene with this id, as its own short video")
    render.add_argument(
        "--draft",
        action="store_true",
        help=f"a quick preview: at most {DRAFT_HEIGHT} pixels high, draft quality, the script's providers",
    )
    commands.add_parser("estimate", parents=[script, gateway], help="price a script without rendering it")
    commands.add_parser("validate", parents=[script], help="check a script offline; print every problem with its line")
    drafting = commands.add_parser(
        "draft", parents=[gateway], help="draft a script from a topic or a document (Markdown or plain text)"
    )
    drafting.add_argument(
        "source",
        help="a topic in quotes, or a document: a file that exists (.md or .markdown: Markdown; others: plain text)",
    )
    drafting.add_argument(
        "-o", "--output", type=Path, required=True, help="script file to create (YAML; .json for JSON); never replaced"
    )
    drafting.add_argument("--provider", default="", help="script provider (default: the service's SCRIPT_PROVIDER)")
    drafting.add_argument("--audience", default="", help='who the video is for, e.g. "ten-year-olds"')
    drafting.add_argument("--seconds", type=_seconds, default=0, help="length of narration to aim for (default 60)")
    drafting.add_argument("--tone", default="", help='tone of the narration, e.g. "playful"')
    drafting.add_argument("--language", default="", help='language of the script, e.g. "German" or "pt-BR"')
    drafting.add_argument(
        "--max-cost", type=float, default=0.0, metavar="USD", help="most the draft may cost (0: the gateway's cap)"
    )
    commands.add_parser("config", parents=[gateway], help="show the providers behind the gateway and their prices")
    spend = commands.add_parser("spend", parents=[gateway], help="show the provider spend the gateway recorded")
    spend.add_argument("--by", choices=tuple(_GROUPINGS), default="day", help="one row per day, provider or render")
    spend.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="first UTC day to include")
    spend.add_argument("--render", default="", metavar="ID", help="only this render")
    serve = commands.add_parser(
        "serve", help="run the six services and the HTTP/JSON API locally on their default ports until Ctrl-C"
    )
    serve.add_argument(
        "--free-ports", action="store_true", help="use free ports instead of the defaults (to run beside another stack)"
    )
    return parser


@contextlib.contextmanager
def _gateway(args: argparse.Namespace) -> Iterator[str]:
    """The gateway's address: `--gateway`, or that of services started for this command (`--start-services`)."""
    if not args.start_services:
        yield args.gateway
        return
    log_file = None if args.verbose else _new_log_file()
    if log_file is not None:
        _console.print(f"starting the services; their logs: {log_file}", soft_wrap=True, highlight=False)
    with LocalStack(log_file=log_file) as stack:
        yield stack.gateway_address


def _new_log_file() -> Path:
    """A fresh, private file for this run's service logs, in the user's state folder; only the newest
    _KEPT_LOGS are kept, so that logs of a failed run can still be read without the folder growing forever."""
    folder = private_dir(state_path("logs"), "XDG_STATE_HOME")
    for old in sorted(folder.glob("services-*.log"))[: -(_KEPT_LOGS - 1)]:
        old.unlink(missing_ok=True)
    path = folder / f"services-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"
    create_private_file(path).close()
    return path


def _fail(label: str, message: str) -> None:
    """Prints an error unwrapped (paths stay whole to copy) and as text: `[...]` in a message is not rich markup."""
    _console.print(f"[red]{label}:[/red] {escape(message)}", soft_wrap=True)


def _seconds(text: str) -> int:
    try:
        seconds = int(text)
    except ValueError:
        seconds = -1
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds, 0 or more")
    return seconds


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date written YYYY-MM-DD") from None


def _render(args: argparse.Namespace, script: Script, address: str) -> int:
    request = script.request
    request.no_cache = args.no_cache
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
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
        # The bar appears with the first event, which carries the number of steps (no "0/None" before it).
        task: TaskID | None = None

        def show(event: render_service_pb2.RenderProgress) -> None:
            nonlocal task
            if task is None:
                task = progress.add_task(event.message, total=event.total_steps)
            progress.update(task, description=event.message, completed=event.completed_steps, total=event.total_steps)

        summary = render_to_file(address, request, args.output, show)
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
    if (credits := write_credits(summary, args.output)) is not None:
        _console.print(f"[green]wrote[/green] {credits}: the credits the stock media's licences ask for")
    return 0


def _draft_request(args: argparse.Namespace) -> script_service_pb2.DraftScriptRequest:
    if args.output.exists() or args.output.is_symlink():
        # Checked before the (maybe paid) draft; creating the file checks again.
        raise ScriptError(f"{args.output} exists; choose another name or remove it (it may hold your edits)")
    return script_service_pb2.DraftScriptRequest(
        **source_fields(args.source),
        audience=args.audience,
        target_seconds=args.seconds,
        tone=args.tone,
        language=args.language,
        provider=args.provider,
        max_cost_usd=args.max_cost,
    )


def _draft(args: argparse.Namespace, request: script_service_pb2.DraftScriptRequest, address: str) -> int:
    answer = draft_script(address, request)
    write_new(args.output, script_text(answer, args.output.suffix.lower() == ".json"))
    draft = answer.draft
    seconds = sum(len(scene.narration) for scene in draft.scenes) / SPOKEN_CHARS_PER_SECOND
    _console.print(
        f"[green]wrote[/green] {args.output}: {len(draft.scenes)} scenes, about {seconds:.0f} s of narration; "
        f"drafted by {draft.provider} ({draft.model}) for ${draft.cost_usd:.4f} (draft {answer.draft_id})",
        soft_wrap=True,
    )
    return 0


def _validate(path: Path) -> int:
    problems = script_problems(path)
    for problem in problems:
        print(problem)
    if problems:
        return 2
    print(f"{path}: valid")
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
    with LocalStack(default_ports=not free_ports, service_token=secrets.token_hex(32), web=True) as stack:
        for name, address in stack.addresses.items():
            # Plain print: one line per process that scripts can read (rich would wrap long lines).
            if name == "web":
                url = stack.web_url
                print(f"{name:<10} HTTP {url}/v1  (OpenAPI: {url}/v1/openapi.json; studio: {url}/)")
            else:
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
