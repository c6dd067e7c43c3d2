"""How a process started on port 0 tells the process that started it which ports it got (PORT_REPORT_FILE).

Picking a free port for a child by binding and releasing it is a race: another process (or another service of the
same stack) can take it before the child binds. So each child binds port 0 itself and writes the ports it got, as
one JSON object, to a file in a private folder of its parent's; the parent waits for that file.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from services.common.state import write_private_file


def report_ports(path: str, **ports: int) -> None:
    """Writes `{"grpc": 50123, "metrics": 41234}` to `path` (when set), whole at once: a reader never sees half."""
    if path:
        write_private_file(Path(path), json.dumps(ports).encode())


def wait_for_ports(name: str, path: Path, process: subprocess.Popen[bytes], timeout_seconds: float) -> dict[str, int]:
    """The ports `process` (called `name` in errors) reported in `path`; raises RuntimeError if it exits first,
    TimeoutError after the wait."""
    deadline = time.monotonic() + timeout_seconds
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} while starting")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} reported no listening port within {timeout_seconds:.0f} s")
        time.sleep(0.05)
    return {kind: int(port) for kind, port in json.loads(path.read_text()).items()}
