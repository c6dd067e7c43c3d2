"""Runs the six services as local processes on loopback ports they pick: for `make demo`, `scenecast serve`, tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

from services.common.healthcheck import check
from services.common.ports import wait_for_ports
from services.common.tls import channel_credentials

# Module to run, the gateway variable that points at it, and its default port (as in each service's config): the
# media services and the script service, which the gateway calls.
SERVICES = {
    "image": ("services.image", "IMAGE_SERVICE_ADDRESS", 50051),
    "audio": ("services.audio", "AUDIO_SERVICE_ADDRESS", 50052),
    "video": ("services.video", "VIDEO_SERVICE_ADDRESS", 50053),
    "assembler": ("services.assembler", "ASSEMBLER_SERVICE_ADDRESS", 50054),
    "script": ("services.script", "SCRIPT_SERVICE_ADDRESS", 50055),
}
GATEWAY_PORT = 50050
# The HTTP/JSON API's default port (as in web/config.py).
WEB_PORT = 8080
_STOP_SECONDS = 30.0
# A child that dies is restarted after 1 s, then 2, 4... up to 30 s while it keeps dying; one that stayed up this
# long counts as healthy again. After _MAX_RESTARTS deaths in a row, `supervise` gives up and names it.
_FIRST_RESTART_SECONDS = 1.0
_MAX_RESTART_SECONDS = 30.0
_STABLE_SECONDS = 60.0
_MAX_RESTARTS = 5


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a stack that uses TLS everywhere: one CA, a server certificate valid for 127.0.0.1 and
    localhost that every service presents, and a client certificate the gateway (and tests) present."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path

    def service_env(self, mutual: bool) -> dict[str, str]:
        """A service's TLS settings; `mutual` also makes it require a client certificate from the CA."""
        env = {"TLS_CERT_FILE": str(self.server_cert_file), "TLS_KEY_FILE": str(self.server_key_file)}
        return {**env, "TLS_CLIENT_CA_FILE": str(self.ca_file)} if mutual else env

    def gateway_env(self, replicas: bool) -> dict[str, str]:
        """The gateway dials the media services with TLS and its client certificate (mutual TLS). A list of replica
        addresses has no one host to check the certificates against, so `replicas` checks them for "localhost"."""
        env = {
            "DOWNSTREAM_CA_FILE": str(self.ca_file),
            "DOWNSTREAM_CERT_FILE": str(self.client_cert_file),
            "DOWNSTREAM_KEY_FILE": str(self.client_key_file),
        }
        return {**env, "DOWNSTREAM_SERVER_NAME": "localhost"} if replicas else env

    def client_credentials(self) -> grpc.ChannelCredentials:
        """What a caller trusted by the CA presents: enough for every service in the stack."""
        return channel_credentials(ca_file=self.ca_file, cert_file=self.client_cert_file, key_file=self.client_key_file)


@dataclass
class _Restarts:
    """A process's restart history: when it last started, deaths since it was last stable, when to start it next."""

    started: float = 0.0
    in_a_row: int = 0
    due: float | None = None


# Ports free_port has handed out in this process.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, never one this process handed out before, for tests that need an address where
    nothing listens. Never for a server to bind later: another process can take the port first (LocalStack's
    services bind port 0 and report the port they got instead)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class LocalStack:
    """Starts the services with `start()` and stops them with `stop()` (or use it as a context manager).

    `env` adds variables to every service's environment (for example a provider choice); `log_dir`, when given,
    receives one log file per service instead of inheriting the caller's stderr. `default_ports` uses the ports the
    services listen on by default (so the CLI finds the gateway without `--gateway`); otherwise free ports are used.
    `tls` makes every service listen with TLS only: the media services require the gateway's client certificate
    (mutual TLS), while the gateway itself takes any client that trusts the CA (callers authenticate with bearer
    tokens, GATEWAY_AUTH_TOKENS in `env`). `service_token` turns on service authentication: the media services take
    calls only with it, and the gateway presents it (SERVICE_AUTH_TOKENS). `web` also starts the HTTP/JSON API
    (`python -m web`) in front of the gateway, on WEB_PORT (or a free port), as the process named "web".
    """

    env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    # Or one file that every process appends to (each JSON line names its service), as the CLI keeps them.
    log_file: Path | None = None
    default_ports: bool = False
    # Replicas per media service (default 1); the gateway gets all their addresses and spreads calls round-robin.
    replicas: Mapping[str, int] = field(default_factory=dict)
    tls: TlsFiles | None = None
    service_token: str | None = None
    web: bool = False
    # Process name ("image", "image-2", "gateway"...) to its gRPC address and its Prometheus /metrics port.
    addresses: dict[str, str] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Private folder where each process reports the ports it got (see services/common/ports.py); removed by `stop`.
    _ports_dir: Path | None = field(default=None, init=False)
    # What `supervise` needs to start a process again: its module and environment, and its restart history.
    _launches: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    _restarts: dict[str, _Restarts] = field(default_factory=dict)

    @property
    def gateway_address(self) -> str:
        return self.addresses["gateway"]

    @property
    def web_url(self) -> str:
        return f"http://{self.addresses['web']}"

    def start(self, timeout_seconds: float = 60.0) -> LocalStack:
        base_env = {**os.environ, **self.env}
        if self.service_token:
            base_env["SERVICE_AUTH_TOKENS"] = self.service_token
        media_env = {**base_env, **(self.tls.service_env(mutual=True) if self.tls else {})}
        gateway_env = dict(base_env)
        if self.tls:
            replicas = any(count > 1 for count in self.replicas.values())
            gateway_env |= self.tls.service_env(mutual=False) | self.tls.gateway_env(replicas)
        self._ports_dir = Path(tempfile.mkdtemp(prefix="scenecast-ports-"))  # 0700: only this user writes there
        credentials = self.tls.client_credentials() if self.tls else None
        try:
            media: dict[str, list[str]] = {}
            for service, (module, _, port) in SERVICES.items():
                count = self.replicas.get(service, 1)
                if self.default_ports and count > 1:
                    raise ValueError("replicas need free ports; do not combine them with default_ports")
                media[service] = [service if replica == 0 else f"{service}-{replica + 1}" for replica in range(count)]
                for name in media[service]:
                    self._spawn(name, module, port if self.default_ports else 0, media_env)
            # The media services start side by side; the gateway needs their ports before it starts.
            for service, names in media.items():
                for name in names:
                    self._wait_for_ports(name, timeout_seconds)
                gateway_env[SERVICES[service][1]] = ",".join(self.addresses[name] for name in names)
            self._spawn("gateway", "gateway", GATEWAY_PORT if self.default_ports else 0, gateway_env)
            self._wait_for_ports("gateway", timeout_seconds)
            for name, address in self.addresses.items():
                wait_until_serving(address, timeout_seconds, self.processes[name], credentials)
            if self.web:
                self._start_web(base_env, timeout_seconds)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, module: str, port: int, env: dict[str, str]) -> None:
        """Starts a service on `port` (0: the service picks a free one) and a free metrics port."""
        env = {
            **env,
            "LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "METRICS_PORT": "auto",
            "PORT_REPORT_FILE": str(self._port_file(name)),
        }
        self._launches[name] = (module, env)
        self._launch(name)

    def _port_file(self, name: str) -> Path:
        assert self._ports_dir is not None, "start() makes the folder"
        return self._ports_dir / f"{name}.json"

    def _wait_for_ports(self, name: str, timeout_seconds: float) -> None:
        """Learns the ports a process got, and pins them for its restarts: the gateway (and whoever was told the
        addresses) keeps calling the same ones. The port was just released by the dead process, so rebinding it only
        fails if another process took it meanwhile, and then `supervise` retries with its backoff."""
        ports = wait_for_ports(name, self._port_file(name), self.processes[name], timeout_seconds)
        module, env = self._launches[name]
        if name == "web":
            self.addresses[name] = f"127.0.0.1:{ports['http']}"
            self._launches[name] = (module, {**env, "WEB_PORT": str(ports["http"])})
            return
        self.addresses[name] = f"127.0.0.1:{ports['grpc']}"
        self.metrics_ports[name] = ports["metrics"]
        self._launches[name] = (
            module,
            {**env, "LISTEN_ADDRESS": self.addresses[name], "METRICS_PORT": str(ports["metrics"])},
        )

    def _start_web(self, base_env: dict[str, str], timeout_seconds: float) -> None:
        """The API reaches the gateway as the CLI does (trusting the stack's CA when it has one); it is ready once it
        answers its health route, which asks the gateway."""
        env = {
            **base_env,
            "SCENECAST_GATEWAY": self.gateway_address,
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(WEB_PORT if self.default_ports else 0),
            "PORT_REPORT_FILE": str(self._port_file("web")),
        }
        if self.tls:
            env["SCENECAST_CA_FILE"] = str(self.tls.ca_file)
        self._launches["web"] = ("web", env)
        self._launch("web")
        self._wait_for_ports("web", timeout_seconds)
        deadline = time.monotonic() + timeout_seconds
        while True:
            if self.processes["web"].poll() is not None:
                raise RuntimeError(f"the web API at {self.web_url} exited with {self.processes['web'].returncode}")
            try:
                if httpx.get(f"{self.web_url}/v1/health", timeout=5.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the web API at {self.web_url} was not ready within {timeout_seconds:.0f} s")
            time.sleep(0.1)

    def _launch(self, name: str) -> None:
        module, env = self._launches[name]
        # Appended to, so a restarted process's log follows the one of the process that died.
        path = self.log_file or (self.log_dir / f"{name}.log" if self.log_dir else None)
        log = path.open("ab") if path else None
        self.processes[name] = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log, stderr=log)
        self._restarts.setdefault(name, _Restarts()).started = time.monotonic()
        if log is not None:
            log.close()  # the child keeps its own handle

    def supervise(self, report: Callable[[str], None], poll_seconds: float = 0.5) -> None:
        """Restarts every process that dies, with backoff, until interrupted; `report` gets a line for each death
        and restart. Raises RuntimeError naming a process that keeps dying (_MAX_RESTARTS times in a row)."""
        while True:
            self.restart_dead(report)
            time.sleep(poll_seconds)

    def restart_dead(self, report: Callable[[str], None]) -> None:
        """One round of `supervise`: notes the processes that died and starts those whose backoff is over."""
        now = time.monotonic()
        for name, process in self.processes.items():
            restarts = self._restarts[name]
            if process.poll() is None:
                if now - restarts.started > _STABLE_SECONDS:
                    restarts.in_a_row = 0
                continue
            if restarts.due is None:
                restarts.in_a_row += 1
                if restarts.in_a_row > _MAX_RESTARTS:
                    raise RuntimeError(
                        f"{name} ({self.addresses[name]}) exited with {process.returncode} "
                        f"{restarts.in_a_row} times in a row; stopping (see its log)"
                    )
                delay = min(_FIRST_RESTART_SECONDS * 2 ** (restarts.in_a_row - 1), _MAX_RESTART_SECONDS)
                restarts.due = now + delay
                report(f"{name} ({self.addresses[name]}) exited with {process.returncode}; restarting in {delay:.0f} s")
            elif now >= restarts.due:
                restarts.due = None
                self._launch(name)
                report(f"{name} restarted (process {self.processes[name].pid})")

    def kill(self, name: str) -> None:
        """Kills one process at once (SIGKILL), as a crashed pod would go."""
        self.processes[name].kill()
        self.processes[name].wait()

    def stop(self) -> None:
        """SIGTERM every service (they drain), then kill what is still running after the grace period."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_SECONDS
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._ports_dir is not None:
            shutil.rmtree(self._ports_dir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_until_serving(
    address: str,
    timeout_seconds: float,
    process: subprocess.Popen[bytes] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    service: str = "",
) -> None:
    """Polls the standard gRPC health service until it answers SERVING for `service` (over TLS with `credentials`);
    the gateway's overall health waits for its media services, its `liveness` name only for itself."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the service for {address} exited with {process.returncode} while starting")
        serving, seen = check(address, service, timeout=1.0, credentials=credentials)
        if serving:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SERVING health answer from {address} within {timeout_seconds:.0f} s ({seen})")
        time.sleep(0.1)
