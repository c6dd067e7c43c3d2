"""Extra gateway processes beside a LocalStack's (same media services), and a round-robin TCP proxy in front of them,
as a Kubernetes ClusterIP Service spreads connections over a Deployment's pods."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from scenecast_cli.stack import SERVICES, LocalStack, free_port, wait_until_serving
from tests.tcp_proxy import relay

_STOP_SECONDS = 30.0


class GatewayReplicas:
    """Gateways named `gateway-2`, `gateway-3`... that call `stack`'s media services; `env` as LocalStack's."""

    def __init__(self, stack: LocalStack, env: dict[str, str], log_dir: Path) -> None:
        self._stack = stack
        self._env = {**os.environ, **env}
        for service, (_, variable, _) in SERVICES.items():
            self._env[variable] = stack.addresses[service]
        self._log_dir = log_dir
        self.addresses: dict[str, str] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, address: str | None = None) -> str:
        """Starts (or restarts, on its old address) one gateway and waits until it serves; returns its address."""
        address = address or self.addresses.get(name) or f"127.0.0.1:{free_port()}"
        env = {**self._env, "LISTEN_ADDRESS": address, "METRICS_PORT": "0"}
        with (self._log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=log, stderr=log)
        self.addresses[name], self.processes[name] = address, process
        wait_until_serving(address, 60, process)
        return address

    def kill(self, name: str) -> None:
        """SIGKILL, as a crashed pod goes."""
        self.processes[name].kill()
        self.processes[name].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class RoundRobinProxy:
    """Listens on a loopback port and sends each new connection to the next target in turn, skipping a target that
    refuses the connection (a dead pod, which Kubernetes takes out of the Service's endpoints)."""

    def __init__(self, target_ports: list[int]) -> None:
        self._targets = itertools.cycle(target_ports)
        self._count = len(target_ports)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        # Connections per target port, so a test can check that every replica served, and the target of each
        # connection in the order they came, so it can tell which replica each of a client's calls reached.
        self.connections: dict[int, int] = dict.fromkeys(target_ports, 0)
        self.targets: list[int] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _connect(self) -> socket.socket | None:
        for _ in range(self._count):
            with self._lock:
                port = next(self._targets)
            try:
                upstream = socket.create_connection(("127.0.0.1", port))
            except OSError:
                continue
            with self._lock:
                self.connections[port] += 1
                self.targets.append(port)
            return upstream
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            relay(client, upstream)
