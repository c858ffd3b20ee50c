"""Servers under test as child processes on 127.0.0.1: sloserve itself and the Ray Serve peer.

Each is a context manager that starts the process, waits until it is ready (or fails with its
output), and stops it (SIGTERM, then SIGKILL) however the block ends — a SIGTERM to this process
included (:func:`exit_cleanly_on_sigterm`: ``timeout`` or a CI job stopping a benchmark would
otherwise leave its servers running).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import Self


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM end this process as an exception does (exit status 143), so ``with`` blocks and
    ``finally`` clauses stop the child processes they started; called when a child is started.
    Leaves a handler someone else installed alone (and does nothing off the main thread)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        _exit_on_sigterm,
    ):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


class _Child:
    """A child process whose output goes to a temporary log file."""

    ready_path = "/"

    def __init__(
        self, argv: list[str], port: int, ready_timeout: float, cpus: Collection[int] | None = None
    ) -> None:
        self.argv = argv
        self.port = port
        self.ready_timeout = ready_timeout
        self.url = f"127.0.0.1:{port}"
        self.cpus = None if cpus is None else sorted(cpus)
        """CPUs the child (and every thread and process it starts) may run on; None = any."""

    def __enter__(self) -> Self:
        exit_cleanly_on_sigterm()
        self._log = Path(tempfile.mkstemp(prefix="sloserve-child-", suffix=".log")[1])
        with self._log.open("wb") as out:
            self._proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        if self.cpus is not None:  # before the child has started any thread of its own
            os.sched_setaffinity(self._proc.pid, self.cpus)
        try:
            _wait_http(f"http://{self.url}{self.ready_path}", self._proc, self.ready_timeout, self._log)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def pid(self) -> int:
        """The child's process id (once started)."""
        return int(self._proc.pid)

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        self._log.unlink(missing_ok=True)


class SloserveServer(_Child):
    """``sloserve serve REPO`` on free ports; ``url`` is the HTTP address, ``grpc_url`` the gRPC one."""

    ready_path = "/v2/health/ready"

    def __init__(
        self, repository: Path, ready_timeout: float = 120.0, cpus: Collection[int] | None = None
    ) -> None:
        http, grpc = free_port(), free_port()
        argv = [
            sys.executable,
            "-m",
            "sloserve",
            "serve",
            str(repository),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            "-1",
            "--log-level",
            "warning",
        ]
        super().__init__(argv, http, ready_timeout, cpus)
        self.grpc_url = f"127.0.0.1:{grpc}"


class RayServePeer(_Child):
    """The Ray Serve deployment of one ONNX model (see :mod:`sloserve.bench.ray_peer`)."""

    def __init__(
        self,
        model_dir: Path,
        name: str,
        *,
        max_batch_size: int,
        wait_s: float,
        threads: int,
        replicas: int,
        cpus: int,
        ready_timeout: float = 180.0,
        cpu_set: Collection[int] | None = None,
    ) -> None:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "sloserve.bench.ray_peer",
            str(model_dir),
            "--name",
            name,
            "--port",
            str(port),
            "--max-batch-size",
            str(max_batch_size),
            "--wait-s",
            str(wait_s),
            "--threads",
            str(threads),
            "--replicas",
            str(replicas),
            "--cpus",
            str(cpus),
        ]
        super().__init__(argv, port, ready_timeout, cpu_set)
        self.ready_path = f"/v2/models/{name}"


def thread_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """CPU time (user + system, seconds) of each live thread of process ``pid``, by thread id,
    with the thread's name; read from Linux's ``/proc`` (empty where there is none)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        # "tid (name) state ppid ...": the name may hold spaces and parentheses, so cut at the last ')'
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out
