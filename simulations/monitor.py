"""Peak memory of every process of a Flower simulation, sampled in a background thread.

Flower's SuperLink, the flwr-simulation process (ServerApp + BlackBox) and Ray's processes
(raylet, GCS, ClientApp actors) are not all children of one process, so they are found by name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

PATTERNS = (
    "flower-superlink",
    "flwr-simulation",
    "flower-supernode",
    "raylet",
    "gcs_server",
    "ray::",
    "ray/_private",
    "ray/dashboard",
    "ray/autoscaler",
)


def simulation_rss() -> int:
    """Resident bytes of all processes whose command line matches a Flower or Ray pattern."""
    total = 0
    for proc in psutil.process_iter(["cmdline", "memory_info"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["memory_info"] and any(p in cmdline for p in PATTERNS):
            total += proc.info["memory_info"].rss
    return total


def tree_rss(roots: set[int]) -> int:
    """Resident bytes of the processes ``roots`` and all their descendants (one run's SuperLink tree holds
    its SuperExec, the flwr-simulation process and the Ray processes it started, and nobody else's)."""
    total = 0
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    return total


class PeakMemory:
    """``with PeakMemory() as peak: ...``; then ``peak.bytes`` is the largest sum seen.

    ``roots``: a callable giving the PIDs whose process trees to count (e.g. one run's SuperLink), so that
    other simulations on the machine are left out; without it, every Flower or Ray process counts.
    """

    def __init__(self, interval: float = 0.5, roots: Callable[[], set[int]] | None = None):
        self.interval, self.bytes, self.roots = interval, 0, roots
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.bytes = max(self.bytes, tree_rss(self.roots()) if self.roots else simulation_rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
