"""Resident memory of a service together with the processes it runs (FFmpeg), sampled while a call runs.

A pod's memory limit counts every process in it, and a service's own VmHWM leaves its FFmpeg children out, so the
peak is sampled as the sum of the resident sets of the process and all its descendants.
"""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

MIB = 2**20


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants now, in MiB (children that end meanwhile count 0)."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / MIB


class TreePeak:
    """The highest `tree_rss_mib` seen while the `with` block runs, sampled every `every` seconds in a thread."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid = pid
        self.every = every
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"tree-peak-{pid}", daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak_mib = max(self.peak_mib, tree_rss_mib(self.pid))
            if self._stop.wait(self.every):
                return
