"""Measuring a model's batch latency over batch sizes × threads × co-located instances.

The result is a :class:`~sloserve.core.profiles.TabulatedProfile` (what ``sloserve profile`` writes in
the ``sloserve-profile/v1`` format of :mod:`sloserve.core.profile_io`) with the slowdown table
``s(k)``: the latency factor of k co-located instances against one, the geometric mean over the
measured batch sizes and thread counts of ``median(b, c, k) / median(b, c, 1)`` (at least 1).

One point (b, c, k): k ONNX Runtime sessions of c intra-op threads each, each driven by its own
thread, all running batches of b synthetic rows back to back at the same time. Each instance first
runs ``warmup`` unrecorded batches; every batch after that is a sample, until each instance has
``repeats`` samples (or ``max_seconds`` passed), so every sample is taken while all k instances
are busy. The point's median and p99 are over the samples of all instances.

The grid is measured in ``rounds`` interleaved rounds, each taking its share of every point's samples
in turn, so that a passing disturbance (another program on the cores for a second) touches a few
samples of several points, which their medians ignore, instead of every sample of one point. Measured
one point after the other, a resnet18 profile once got 40.7 ms for batch 8 on 2 threads, 2.2x the
18.6 ms the same session takes on idle cores, and the plans built on it avoided batches above 4.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sloserve.core.config import ConfigError
from sloserve.core.profiles import ProfilePoint, TabulatedProfile
from sloserve.runtime.backend import BackendError, ExecutionBackend
from sloserve.runtime.onnx_backend import OnnxBackend
from sloserve.runtime.stacking import example_inputs


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model to measure: its name, ONNX file and the largest batch its config allows."""

    name: str
    path: Path
    max_batch: int | None = None
    """``max_batch_size`` from the model's config (None: no config, no limit)."""


def resolve_model(spec: str, repository: str | Path | None = None) -> ModelSource:
    """``spec`` is a demo model name, a model directory (with a config) or an ``.onnx`` file."""
    from sloserve.runtime.demo import DEMO_MODELS, ensure_demo_repository
    from sloserve.runtime.model_config import load_model_config

    path = Path(spec)
    if path.is_file():
        return ModelSource(path.stem if path.stem != "model" else path.parent.name, path)
    if path.is_dir():
        config = load_model_config(path)
        onnx_file = path / config.model_file
        if not onnx_file.is_file():
            raise ConfigError(f"{path}: model_file: {config.model_file!r} not found")
        return ModelSource(path.resolve().name, onnx_file, max(1, config.max_batch_size))
    if spec in DEMO_MODELS:
        root = ensure_demo_repository(repository, models=[spec])
        return resolve_model(str(root / spec))
    raise ConfigError(
        f"{spec}: not a file, a model directory or a demo model (demo models: {sorted(DEMO_MODELS)})"
    )


@dataclass(frozen=True, slots=True)
class ProfileGrid:
    """What to measure and how often."""

    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    threads: tuple[int, ...] = (1, 2)
    instances: tuple[int, ...] = (1, 2)
    """Co-located instance counts; 1..K contiguous so the slowdown table has every k."""
    repeats: int = 30
    """Recorded batches per instance per point."""
    warmup: int = 3
    """Unrecorded batches per instance before each point."""
    max_seconds: float = 10.0
    """Time cap per point (after warm-up); a point keeps at least one sample per instance per round."""
    rounds: int = 5
    """Interleaved rounds the samples are taken in (at most ``repeats``; see the module docstring)."""
    variable_dim: int = 64
    """Size given to variable non-batch axes (e.g. BERT's sequence length)."""
    seed: int = 0

    @classmethod
    def quick(cls) -> ProfileGrid:
        """A small grid for a first look (seconds per model on two cores)."""
        return cls(
            batches=(1, 4, 16), threads=(1, 2), instances=(1, 2), repeats=10, warmup=2, max_seconds=3.0
        )

    def limited_to(self, max_batch: int | None) -> ProfileGrid:
        """The grid without batch sizes above ``max_batch`` (keeping at least batch 1)."""
        if max_batch is None:
            return self
        return replace(self, batches=tuple(b for b in self.batches if b <= max_batch) or (1,))

    def points(self) -> int:
        """Number of (batch, threads, instances) points."""
        return len(self.batches) * len(self.threads) * len(self.instances)

    def rounds_taken(self) -> int:
        """Rounds :func:`profile_model` takes: ``rounds``, at most ``repeats`` and at least 1."""
        return max(1, min(self.rounds, self.repeats))

    def blocks(self) -> int:
        """Number of measurements :func:`profile_model` reports progress for: every point, every round."""
        return self.points() * self.rounds_taken()


def measure_concurrent(
    backends: Sequence[ExecutionBackend],
    inputs: dict[str, np.ndarray],
    *,
    repeats: int,
    warmup: int,
    max_seconds: float,
) -> list[float]:
    """Run ``inputs`` on every backend at once from one thread each; the batch latencies (seconds)."""
    samples: list[list[float]] = [[] for _ in backends]
    errors: list[BaseException] = []
    start = threading.Barrier(len(backends))
    stop = threading.Event()
    deadline = [math.inf]

    def drive(i: int) -> None:
        backend, own = backends[i], samples[i]
        try:
            for _ in range(warmup):
                backend.run(inputs)
            start.wait()
            if i == 0:
                deadline[0] = time.perf_counter() + max_seconds
            while not stop.is_set() or not own:  # at least one sample each
                t0 = time.perf_counter()
                backend.run(inputs)
                own.append(time.perf_counter() - t0)
                if all(len(s) >= repeats for s in samples) or time.perf_counter() > deadline[0]:
                    stop.set()
        except BaseException as exc:  # surfaced below; the other drivers stop
            errors.append(exc)
            stop.set()
            start.abort()

    workers = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(len(backends))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return [x for s in samples for x in s]


def _point(key: tuple[int, int, int], latencies: Sequence[float]) -> ProfilePoint:
    batch, threads, k = key
    return ProfilePoint(
        batch, threads, k, float(np.median(latencies)), float(np.percentile(latencies, 99, method="higher"))
    )


def slowdown_table(points: Sequence[ProfilePoint]) -> tuple[float, ...]:
    """``s(k)`` for k = 1..K from points measured at k instances and at one (see the module docstring)."""
    base = {(p.batch, p.cores): p.median for p in points if p.instances == 1}
    k_max = max((p.instances for p in points), default=1)
    table: list[float] = []
    for k in range(1, k_max + 1):
        ratios = [
            p.median / base[(p.batch, p.cores)]
            for p in points
            if p.instances == k and (p.batch, p.cores) in base
        ]
        if not ratios:
            break
        table.append(max(1.0, float(np.exp(np.mean(np.log(ratios))))))
    return tuple(table) if len(table) > 1 else ()


def profile_model(
    source: ModelSource,
    grid: ProfileGrid = ProfileGrid(),
    *,
    hardware: str = "cpu",
    progress: Callable[[ProfilePoint], None] | None = None,
    make_backend: Callable[[bytes, int], ExecutionBackend] | None = None,
) -> TabulatedProfile:
    """Measure every point of ``grid`` (limited to the model's max batch) and return the profile.

    ``progress`` is called after each round's share of a point, with the point as measured so far.
    ``make_backend(model_bytes, threads)`` makes an instance (default: ONNX Runtime); a model it
    cannot load is a :class:`ConfigError` naming the file.
    """
    grid = grid.limited_to(source.max_batch)
    model_bytes = source.path.read_bytes()
    make = make_backend or functools.partial(OnnxBackend, name=str(source.path))
    try:
        groups = {
            (threads, k): [make(model_bytes, threads) for _ in range(k)]
            for threads, k in itertools.product(grid.threads, grid.instances)
        }
    except BackendError as exc:
        raise ConfigError(str(exc)) from None
    specs = next(iter(groups.values()))[0].inputs
    inputs = {
        batch: example_inputs(specs, batch, variable_dim=grid.variable_dim, seed=grid.seed)
        for batch in grid.batches
    }
    rounds = grid.rounds_taken()
    keys = [(batch, threads, k) for threads, k in groups for batch in grid.batches]
    samples: dict[tuple[int, int, int], list[float]] = {key: [] for key in keys}
    spent = dict.fromkeys(keys, 0.0)
    for r in range(rounds):
        share = grid.repeats * (r + 1) // rounds - grid.repeats * r // rounds
        for key in keys:
            batch, threads, k = key
            lat = samples[key]
            if r > 0 and spent[key] > grid.max_seconds:
                continue
            started = time.perf_counter()
            try:
                lat += measure_concurrent(
                    groups[(threads, k)],
                    inputs[batch],
                    repeats=share,
                    warmup=grid.warmup if r == 0 else 0,
                    max_seconds=max(0.0, grid.max_seconds - spent[key]),
                )
            except BackendError as exc:  # the model cannot run the synthetic inputs
                for backends in groups.values():
                    for b in backends:
                        b.close()
                shapes = ", ".join(f"{name} {list(a.shape)}" for name, a in inputs[batch].items())
                raise ConfigError(
                    f"{source.path}: the model cannot run a batch of {batch} ({shapes}; variable "
                    f"dimensions {grid.variable_dim}): {exc}"
                ) from None
            spent[key] += time.perf_counter() - started
            if progress is not None:
                progress(_point(key, lat))
    for backends in groups.values():
        for b in backends:
            b.close()
    points = [_point(key, samples[key]) for key in keys]
    return TabulatedProfile(
        model=source.name, points=tuple(points), hardware=hardware, slowdown=slowdown_table(points)
    )
