"""The model's peak raw ONNX Runtime throughput on a number of cores: the reference a server is held to.

No server, no queue, no copies: ``sessions`` ONNX Runtime sessions with ``threads`` intra-op threads
each (``sessions × threads == cores``), each driven back to back by its own Python thread with one
pre-built input batch, for ``duration_s`` after a warm-up. Every (batch, threads, sessions, spinning)
combination is measured and the best rows-per-second is the peak. Spinning (ORT's busy-waiting pool
threads) is tried both ways because it can help a lone session; the server runs with it off.

To measure on particular CPUs, pass ``cpus``: the process's CPU affinity is set to them for the
measurement (ONNX Runtime's threads are created inside it) and restored afterwards.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sloserve.runtime.cpus import pinned
from sloserve.runtime.onnx_backend import OnnxBackend
from sloserve.runtime.stacking import example_inputs


@dataclass(frozen=True, slots=True)
class RawTrial:
    """One measured configuration."""

    batch: int
    threads: int
    """Intra-op threads per session."""
    sessions: int
    spinning: bool
    rows_per_s: float
    """Inferences (batch rows) per second over all sessions."""


@dataclass(frozen=True, slots=True)
class RawThroughput:
    """The peak and every trial behind it."""

    model: str
    cores: int
    best: RawTrial
    trials: tuple[RawTrial, ...] = field(default=())

    @property
    def rows_per_s(self) -> float:
        """Peak inferences per second."""
        return self.best.rows_per_s

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a JSON report."""
        return {
            "model": self.model,
            "cores": self.cores,
            "rows_per_s": self.rows_per_s,
            "best": asdict(self.best),
            "trials": [asdict(t) for t in self.trials],
        }


def _splits(cores: int) -> list[tuple[int, int]]:
    """(threads per session, sessions) with threads × sessions == cores."""
    return [(t, cores // t) for t in range(1, cores + 1) if cores % t == 0]


def _rows_per_s(
    backends: Sequence[OnnxBackend], batch: int, inputs: dict[str, Any], duration_s: float
) -> float:
    counts = [0] * len(backends)
    barrier = threading.Barrier(len(backends) + 1)
    stop = threading.Event()

    def drive(i: int) -> None:
        backend = backends[i]
        backend.run(inputs)  # warm-up
        barrier.wait()
        n = 0
        while not stop.is_set():
            backend.run(inputs)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(len(backends))]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(duration_s)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0  # includes the last batch of each session
    return sum(counts) * batch / elapsed


def measure_raw_throughput(
    model: str | Path,
    *,
    cores: int | None = None,
    cpus: Sequence[int] | None = None,
    batches: Sequence[int] = (1, 4, 8, 16, 32),
    spinning: Sequence[bool] = (False, True),
    duration_s: float = 1.0,
    variable_dim: int = 64,
    name: str | None = None,
    progress: Callable[[RawTrial], None] | None = None,
) -> RawThroughput:
    """Peak rows/s of ``model`` (an ``.onnx`` file) on ``cores`` cores (default: ``len(cpus)`` or all)."""
    path = Path(model)
    n_cores = cores or (len(cpus) if cpus is not None else (os.cpu_count() or 1))
    model_bytes = path.read_bytes()
    trials: list[RawTrial] = []
    with pinned(list(cpus) if cpus is not None else None):
        for spin in spinning:
            for threads, sessions in _splits(n_cores):
                if spin and threads == 1 and False in spinning:
                    continue  # a one-thread session has no pool threads to spin: same as off
                backends = [OnnxBackend(model_bytes, threads, spinning=spin) for _ in range(sessions)]
                for batch in batches:
                    inputs = example_inputs(backends[0].inputs, batch, variable_dim=variable_dim)
                    rate = _rows_per_s(backends, batch, inputs, duration_s)
                    trial = RawTrial(batch, threads, sessions, spin, rate)
                    trials.append(trial)
                    if progress is not None:
                        progress(trial)
                for b in backends:
                    b.close()
    best = max(trials, key=lambda t: t.rows_per_s)
    label = name or (path.stem if path.stem != "model" else path.parent.name)
    return RawThroughput(label, n_cores, best, tuple(trials))
