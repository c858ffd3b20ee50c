"""The benchmarks' child servers stop with the benchmark, even when it is stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

SCRIPT = """
import sys, time
from sloserve.bench.runner import NullServer
with NullServer() as server:
    print(server._proc.pid, flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: only its entry is left
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_a_benchmark_stopped_by_sigterm_stops_its_servers() -> None:
    """Found by review: ``timeout`` stopping a benchmark left its ``sloserve serve`` running."""
    with subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True) as bench:
        assert bench.stdout is not None
        child = int(bench.stdout.readline())
        assert _alive(child)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=30) == 128 + signal.SIGTERM
    end = time.monotonic() + 10
    while _alive(child) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(child)
