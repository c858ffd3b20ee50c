"""Measuring a model's batch latency over batch sizes × threads × co-located instances.

The result is a :class:`~sloserve.core.profiles.TabulatedProfile` (what ``sloserve profile`` writes in
the ``sloserve-profile/v1`` format of :mod:`sloserve.core.profile_io`) with the slowdown table
``s(k)``: the latency factor of k co-located instances against one, the geometric mean over the
measured batch sizes and thread counts of ``median(b, c, k) / median(b, c, 1)`` (at least 1).

One point (b, c, k): k ONNX Runtime sessions of c intra-op threads each, each driven by its own
thread, all running batches of b synthetic rows back to back at the same time. Every instance
runs ``warmup`` unrecorded batches at the start of each round (below) of each point; every batch
after that is a sample, until each instance has its share of ``repeats`` samples (or
``max_seconds`` passed), so every sample is taken while all k instances are busy. The point's
median and p99 are over the samples of all instances; the p99 is the nearest-rank 99th
percentile (the smallest sample that at least 99% of the samples do not exceed), so it needs 100
samples or more to be other than the largest one (the default ``repeats`` is 100 per instance).

A model whose config says ``max_batch_size: 0`` has no batch dimension: it is profiled at
"batch 1", its inputs given their full shapes, as the server runs it.

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
from sloserve.runtime.backend import BackendError, ExecutionBackend, TensorSpec
from sloserve.runtime.onnx_backend import OnnxBackend


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model to measure: its name, ONNX file and the largest batch its config allows."""

    name: str
    path: Path
    max_batch: int | None = None
    """``max_batch_size`` from the model's config (None: no config, no limit; 1 when it is 0)."""
    batched: bool = True
    """False for ``max_batch_size: 0``: no batch dimension, the inputs keep their full shapes."""


def resolve_model(spec: str, repository: str | Path | None = None) -> ModelSource:
    """``spec`` is a demo model name, a model directory (with a config) or an ``.onnx`` file.

    A file's model is named after the file, or after its directory for ``model.onnx``; a demo
    model is built into ``repository`` (default: the demo cache), a :class:`ConfigError` naming it
    where that cannot be done."""
    from sloserve.runtime.demo import DEMO_MODELS, ensure_demo_repository
    from sloserve.runtime.model_config import load_model_config

    path = Path(spec)
    if path.is_file():
        path = path.resolve()  # ``model.onnx`` in the working directory is named after that directory
        return ModelSource(path.stem if path.stem != "model" else path.parent.name or path.stem, path)
    if path.is_dir():
        config = load_model_config(path)
        onnx_file = path / config.model_file
        if not onnx_file.is_file():
            raise ConfigError(f"{path}: model_file: {config.model_file!r} not found")
        return ModelSource(
            path.resolve().name,
            onnx_file,
            max(1, config.max_batch_size),
            batched=config.max_batch_size > 0,
        )
    if spec in DEMO_MODELS:
        try:
            root = ensure_demo_repository(repository, models=[spec])
        except ConfigError as exc:
            if repository is None:
                raise
            raise ConfigError(f"--repository: {exc}") from None
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
    repeats: int = 100
    """Recorded batches per instance per point (100: enough for the p99 not to be the largest)."""
    warmup: int = 3
    """Unrecorded batches per instance at the start of each round of each point (a round after
    other points starts cold: a fast model's first runs are then several times slower)."""
    max_seconds: float = 10.0
    """Time cap per point (after warm-up); a point keeps at least one sample per instance per round."""
    rounds: int = 5
    """Interleaved rounds the samples are taken in (at most ``repeats``; see the module docstring)."""
    variable_dim: int = 64
    """Size given to variable non-batch axes (e.g. BERT's sequence length)."""
    seed: int = 0

    @classmethod
    def quick(cls) -> ProfileGrid:
        """A small grid for a first look (seconds per model on two cores): 100 samples per point,
        fewer where they take more than a second."""
        return cls(
            batches=(1, 4, 16), threads=(1, 2), instances=(1, 2), repeats=100, warmup=2, max_seconds=1.0
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
    """Run ``inputs`` on every backend at once from one thread each; the batch latencies (seconds).

    Interrupted (Ctrl-C), it stops the drivers, waits for the runs under way and re-raises: a
    thread still inside ONNX Runtime when the interpreter exits aborts the process."""
    samples: list[list[float]] = [[] for _ in backends]
    errors: list[BaseException] = []
    start = threading.Barrier(len(backends))
    stop = threading.Event()
    deadline = [math.inf]
    interrupted = threading.Event()  # no run starts once set
    ended = [threading.Event() for _ in backends]
    """Set by each driver as it returns: ``Thread.join`` cannot be waited on again once a Ctrl-C
    interrupted it (Python 3.11 then takes the thread for ended while it still runs)."""

    def drive(i: int) -> None:
        backend, own = backends[i], samples[i]
        try:
            for _ in range(warmup):
                if stop.is_set():
                    return
                backend.run(inputs)
            start.wait()
            if i == 0:
                deadline[0] = time.perf_counter() + max_seconds
            while not interrupted.is_set() and (not stop.is_set() or not own):  # a sample each at least
                t0 = time.perf_counter()
                backend.run(inputs)
                own.append(time.perf_counter() - t0)
                if all(len(s) >= repeats for s in samples) or time.perf_counter() > deadline[0]:
                    stop.set()
        except BaseException as exc:  # surfaced below; the other drivers stop
            errors.append(exc)
            stop.set()
            start.abort()
        finally:
            ended[i].set()

    workers = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(len(backends))]
    try:
        for w in workers:
            w.start()
        for done in ended:
            done.wait()
    except BaseException:  # KeyboardInterrupt: stop the drivers, let their runs end, then re-raise
        interrupted.set()
        stop.set()
        start.abort()
        # a thread not alive now has not entered ``drive`` (or has left it): it runs nothing more
        _wait_all([done for w, done in zip(workers, ended, strict=True) if w.is_alive()])
        raise
    for w in workers:
        w.join()  # each has returned from its last run
    if errors:
        raise errors[0]
    return [x for s in samples for x in s]


def _wait_all(events: Sequence[threading.Event]) -> None:
    """Wait for every event, through further Ctrl-Cs (each driver's run under way ends soon)."""
    for done in events:
        while not done.is_set():
            try:
                done.wait()
            except KeyboardInterrupt:
                continue


def _point(key: tuple[int, int, int], latencies: Sequence[float]) -> ProfilePoint:
    """The point's median and nearest-rank p99 (see the module docstring)."""
    batch, threads, k = key
    return ProfilePoint(
        batch,
        threads,
        k,
        float(np.median(latencies)),
        float(np.percentile(latencies, 99, method="inverted_cdf")),
    )


def synthetic_inputs(
    specs: Sequence[TensorSpec], batch: int, *, variable_dim: int = 64, seed: int = 0, batched: bool = True
) -> dict[str, np.ndarray]:
    """A batch of ``batch`` synthetic rows, made in each input's own dtype (no float64 copy).

    As :func:`sloserve.runtime.stacking.example_inputs`: variable axes other than the batch take
    ``variable_dim``, floats are standard normal (seeded), integers ones, booleans true. Unbatched
    (``max_batch_size: 0``), every axis is the model's own and ``batch`` must be 1.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        dims = spec.shape[1:] if batched else spec.shape
        shape = ((batch,) if batched else ()) + tuple(variable_dim if d < 0 else d for d in dims)
        dtype = spec.dtype
        if dtype.kind == "f":
            if dtype == np.float64:
                out[spec.name] = rng.standard_normal(shape)
            else:  # float32 drawn as such; float16 (NumPy draws float32 at least) from float32
                out[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
        elif dtype.kind in "iub":
            out[spec.name] = np.ones(shape, dtype=dtype)
        else:
            out[spec.name] = np.full(shape, b"x", dtype=object)
    return out


def _tensor_bytes(specs: Sequence[TensorSpec], batch: int, variable_dim: int, batched: bool) -> int:
    """Bytes of tensors of ``specs`` at ``batch`` rows, as :func:`synthetic_inputs` shapes them
    (object elements counted as 8 bytes)."""
    total = 0
    for spec in specs:
        dims = spec.shape[1:] if batched else spec.shape
        shape = ((batch,) if batched else ()) + tuple(variable_dim if d < 0 else d for d in dims)
        total += math.prod(shape) * max(spec.dtype.itemsize, 8 if spec.dtype.kind == "O" else 1)
    return total


def _available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


MEMORY_SHARE = 0.8
"""Most of the available memory the synthetic inputs and the outputs of the largest batch may
take (the model's own intermediate tensors come on top, unknown beforehand)."""


def _make_inputs(
    source: ModelSource, backend: ExecutionBackend, grid: ProfileGrid
) -> dict[int, dict[str, np.ndarray]]:
    """The synthetic inputs of every batch size of ``grid``. Where they and the largest batch's
    outputs (of every co-located instance) would not fit in memory, a :class:`ConfigError` naming
    the batch sizes, checked before allocating: on Linux an allocation that succeeds may still get
    the process, or another, killed when it is filled."""
    specs = backend.inputs
    outputs: Sequence[TensorSpec] = getattr(backend, "outputs", ())
    largest = max(grid.batches)
    need = sum(_tensor_bytes(specs, b, grid.variable_dim, source.batched) for b in grid.batches)
    need += max(grid.instances) * _tensor_bytes(outputs, largest, grid.variable_dim, source.batched)
    available = _available_memory()

    def too_big(batch: int) -> ConfigError:
        shapes = ", ".join(
            f"{s.name} {[batch, *s.shape[1:]] if source.batched else list(s.shape)}" for s in specs
        )
        return ConfigError(
            f"{source.path}: batch sizes {list(grid.batches)} need at least {need / 2**30:.1f} GiB "
            f"for their synthetic inputs and outputs (batch {batch}: {shapes}; variable dimensions "
            f"{grid.variable_dim}), more than the memory available"
            + (f" ({available / 2**30:.1f} GiB)" if available is not None else "")
            + "; profile smaller batches (--batches) or variable dimensions (--variable-dim)"
        )

    if available is not None and need > MEMORY_SHARE * available:
        raise too_big(largest)
    inputs: dict[int, dict[str, np.ndarray]] = {}
    for batch in grid.batches:
        try:
            inputs[batch] = synthetic_inputs(
                specs, batch, variable_dim=grid.variable_dim, seed=grid.seed, batched=source.batched
            )
        except MemoryError:
            inputs.clear()
            raise too_big(batch) from None
    return inputs


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
    make_backend: Callable[[Path, int], ExecutionBackend] | None = None,
) -> TabulatedProfile:
    """Measure every point of ``grid`` (limited to the model's max batch) and return the profile.

    ``progress`` is called after each round's share of a point, with the point as measured so far.
    ``make_backend(model_path, threads)`` makes an instance (default: ONNX Runtime, from the file,
    so that weights stored beside it as external data are found); a model it cannot load is a
    :class:`ConfigError` naming the file. The instances are closed however the measurement ends.
    """
    grid = grid.limited_to(source.max_batch if source.batched else 1)
    make = make_backend or functools.partial(OnnxBackend, name=str(source.path))
    groups: dict[tuple[int, int], list[ExecutionBackend]] = {}
    try:
        try:
            for threads, k in itertools.product(grid.threads, grid.instances):
                group = groups[(threads, k)] = []
                for _ in range(k):
                    group.append(make(source.path, threads))
        except BackendError as exc:
            raise ConfigError(str(exc)) from None
        inputs = _make_inputs(source, next(iter(groups.values()))[0], grid)
        return _measure(source, grid, groups, inputs, hardware, progress)
    finally:
        for backends in groups.values():
            for b in backends:
                b.close()


def _measure(
    source: ModelSource,
    grid: ProfileGrid,
    groups: dict[tuple[int, int], list[ExecutionBackend]],
    inputs: dict[int, dict[str, np.ndarray]],
    hardware: str,
    progress: Callable[[ProfilePoint], None] | None,
) -> TabulatedProfile:
    """The rounds of :func:`profile_model` over the instances it made."""
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
                    warmup=grid.warmup,  # every round: the other points ran in between
                    max_seconds=max(0.0, grid.max_seconds - spent[key]),
                )
            except BackendError as exc:  # the model cannot run the synthetic inputs
                shapes = ", ".join(f"{name} {list(a.shape)}" for name, a in inputs[batch].items())
                what = f"a batch of {batch}" if source.batched else "its inputs (max_batch_size 0)"
                raise ConfigError(
                    f"{source.path}: the model cannot run {what} ({shapes}; variable "
                    f"dimensions {grid.variable_dim}): {exc}"
                ) from None
            spent[key] += time.perf_counter() - started
            if progress is not None:
                progress(_point(key, lat))
    points = [_point(key, samples[key]) for key in keys]
    return TabulatedProfile(
        model=source.name, points=tuple(points), hardware=hardware, slowdown=slowdown_table(points)
    )
