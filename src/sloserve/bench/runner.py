"""One-call runs of the load generator: a load level, the client's own ceiling, a capacity search."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.stats import binomtest

from sloserve.bench.loadgen import LoadResult, run_open_loop
from sloserve.bench.null_server import DEFAULT_METADATA
from sloserve.bench.payload import ONE_ROW, Payload, request_bytes, sized_requests
from sloserve.bench.processes import exit_cleanly_on_sigterm
from sloserve.bench.summary import summarize
from sloserve.bench.targets import GrpcTarget, HttpTarget, Target, TargetError, specs_from_metadata
from sloserve.sim import workload as wl
from sloserve.sim.capacity import Attainment, CapacityResult, capacity_search

Protocol = Literal["http", "grpc"]
Arrival = Literal["poisson", "gamma", "trace"]


def make_target(
    url: str,
    model: str,
    protocol: Protocol,
    *,
    payload: Payload = ONE_ROW,
    seed: int = 0,
    shared_memory: bool = False,
) -> Target:
    """The client for ``protocol`` at ``url`` (``host:port``) sending ``payload`` in every request;
    ``shared_memory`` (HTTP only) sends the inputs through a system shared-memory region instead of
    the socket."""
    if protocol == "grpc":
        if shared_memory:
            raise ValueError("shared-memory inputs are supported over HTTP only")
        return GrpcTarget(url, model, payload=payload, seed=seed)
    return HttpTarget(url, model, payload=payload, seed=seed, shared_memory=shared_memory)


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    """How request send times are drawn."""

    kind: Arrival = "poisson"
    cv: float = 4.0
    """Coefficient of variation of inter-arrival times for ``gamma`` (bursty when > 1)."""
    trace: Path | None = None
    """CSV trace with a ``TIMESTAMP`` column for ``trace``; its mean rate is scaled to the target."""

    def workload(self, rate: float, duration: float, seed: int) -> wl.Workload:
        """Send times (seconds from the start) at mean ``rate`` for ``duration`` seconds; the
        workload's ``duration`` is the run's planned length (what its rates are over). A trace is
        replayed as a window of ``rate·duration`` consecutive requests from a seed-dependent offset
        at ``rate`` (:meth:`~sloserve.sim.workload.Workload.replayed_at`)."""
        if self.kind == "poisson":
            return wl.poisson(rate, duration, seed)
        if self.kind == "gamma":  # stationary: the mean count is rate·duration whatever the cv
            return wl.gamma(rate, self.cv, duration, seed, stationary=True)
        if self.trace is None:
            raise ValueError("arrival 'trace' needs a trace file")
        return _read_trace(self.trace).replayed_at(rate, duration, seed)

    def describe(self, rate: float | None = None) -> str:
        """One line for reports (``rate`` None: the process alone, as a capacity search varies it)."""
        at = "" if rate is None else f" at {rate:g} req/s"
        if self.kind == "gamma":
            return f"gamma arrivals, cv={self.cv:g}{at}"
        if self.kind == "trace":
            return f"trace {self.trace} replayed{at} (windows of consecutive requests, time-scaled)"
        return f"Poisson arrivals{at}"


_TRACES: dict[Path, wl.Workload] = {}


def _read_trace(path: Path) -> wl.Workload:
    """The trace's arrivals, read once per process (a capacity search replays it at many rates)."""
    if path not in _TRACES:
        _TRACES[path] = wl.from_trace_csv(path)
    return _TRACES[path]


def run_load(
    target: Target,
    planned: np.ndarray | wl.Workload,
    slo_s: float | None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    max_outstanding: int = 4096,
) -> LoadResult:
    """Start ``target``, send at ``planned`` times with deadline ``slo_s`` (None: no deadline), close.
    A :class:`~sloserve.sim.workload.Workload` also gives the run's length the rates are over
    (plain times: up to the last send)."""
    duration = planned.duration if isinstance(planned, wl.Workload) else None
    times = np.asarray(planned.arrivals if isinstance(planned, wl.Workload) else planned, dtype=float)

    async def go() -> LoadResult:
        try:
            await target.start()
            slo = np.full(len(times), np.inf if slo_s is None else slo_s)
            return await run_open_loop(
                target,
                times,
                slo,
                on_progress=on_progress,
                max_outstanding=max_outstanding,
                duration=duration,
            )
        finally:
            await target.close()

    return asyncio.run(go())


class NullServer:
    """A null Open Inference Protocol server in a child process (context manager); ``metadata``
    is the model metadata it answers with (default: a small FP32 input)."""

    def __init__(self, metadata: dict[str, Any] | None = None, cpus: Collection[int] | None = None) -> None:
        self.metadata = metadata
        self.cpus = None if cpus is None else sorted(cpus)
        """CPUs the server runs on (None: any)."""

    def __enter__(self) -> NullServer:
        exit_cleanly_on_sigterm()
        extra = [] if self.metadata is None else ["--metadata", json.dumps(self.metadata)]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sloserve.bench.null_server", *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.cpus is not None:  # before its interpreter has started a thread
            os.sched_setaffinity(self._proc.pid, self.cpus)
        assert self._proc.stdout is not None
        ports = json.loads(self._proc.stdout.readline())
        self.http = f"127.0.0.1:{ports['http_port']}"
        self.grpc = f"127.0.0.1:{ports['grpc_port']}"
        return self

    @property
    def pid(self) -> int:
        """The server's process id (once started)."""
        return int(self._proc.pid)

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def fetch_metadata(url: str, model: str, protocol: Protocol, timeout: float = 10.0) -> dict[str, Any]:
    """The v2 metadata document of ``model`` at ``url`` (HTTP or gRPC); :class:`TargetError` if
    unavailable."""
    if protocol == "grpc":
        import grpc
        from google.protobuf.json_format import MessageToDict
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        with grpc.insecure_channel(url.split("://")[-1]) as channel:  # as GrpcTarget: a scheme allowed
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            try:
                reply = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=model), timeout=timeout)
            except grpc.RpcError as exc:
                raise TargetError(f"{url}: metadata of {model!r}: {exc.details()}") from None
        doc: dict[str, Any] = MessageToDict(reply, preserving_proto_field_name=True)
        for kind in ("inputs", "outputs"):
            for spec in doc.get(kind, []):
                spec["shape"] = [int(d) for d in spec.get("shape", [])]
        return doc
    import http.client
    import urllib.error
    import urllib.request

    base = url if "://" in url else f"http://{url}"
    try:
        with urllib.request.urlopen(f"{base.rstrip('/')}/v2/models/{model}", timeout=timeout) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        said = exc.read().decode(errors="replace")[:300]
        raise TargetError(f"{url}: metadata of {model!r}: HTTP {exc.code}: {said}") from None
    except http.client.HTTPException as exc:  # e.g. a gRPC port: HTTP/2 frames, no status line
        raise TargetError(
            f"{url}: metadata of {model!r}: not an HTTP/1.1 answer ({type(exc).__name__}); "
            "a gRPC port? (--protocol grpc)"
        ) from None
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise TargetError(f"{url}: metadata of {model!r}: {exc}") from None
    if not isinstance(doc, dict):
        raise TargetError(f"{url}: metadata of {model!r} is not a JSON object")
    return doc


CEILING_BYTES = 1 << 30
"""Tensor data the ceiling measurement sends at most: fewer requests for large payloads (4,000 of a
64 MiB payload would take hours), never fewer than :data:`CEILING_MIN_REQUESTS`."""

CEILING_MIN_REQUESTS = 20

IN_FLIGHT_BYTES = 256 << 20
"""Tensor data the ceiling measurement keeps in flight at most (fewer than ``outstanding`` requests
of a large payload)."""


def measure_ceiling(
    protocol: Protocol,
    requests: int = 4000,
    outstanding: int = 64,
    metadata: dict[str, Any] | None = None,
    payload: Payload = ONE_ROW,
    shared_memory: bool = False,
) -> dict[str, Any]:
    """Requests per second this generator gets answered by a null server (its own limit).

    All requests are due at once with ``outstanding`` in flight, so the rate is the client's. With
    a model's ``metadata`` (from :func:`fetch_metadata`) the client sends that model's inputs in the
    shapes ``payload`` gives them, so the ceiling holds for its payload size; otherwise a small FP32
    input. A payload so large that ``requests`` of them would exceed :data:`CEILING_BYTES` (or
    ``outstanding`` of them :data:`IN_FLIGHT_BYTES`) is sent fewer times (fewer at once).
    """
    sized = sized_requests(specs_from_metadata(metadata or DEFAULT_METADATA), payload)
    size = max(request_bytes(request) for request in sized)
    if not shared_memory and size > 0:
        requests = max(CEILING_MIN_REQUESTS, min(requests, CEILING_BYTES // size))
        outstanding = max(1, min(outstanding, IN_FLIGHT_BYTES // size))
    with NullServer(metadata) as null:
        url = null.grpc if protocol == "grpc" else null.http
        res = run_load(
            make_target(url, "null", protocol, payload=payload, shared_memory=shared_memory),
            np.zeros(requests),
            None,
            max_outstanding=outstanding,
        )
    elapsed = float(np.nanmax(res.done) - np.nanmin(res.sent))
    return {
        "protocol": protocol,
        "payload": ("small FP32 input" if metadata is None else f"inputs of {metadata.get('name', '?')}")
        + (" in shared memory" if shared_memory else ""),
        "requests": requests,
        "in_flight": outstanding,
        "answered": int(res.ok.sum()),
        "ceiling_rps": float(res.ok.sum() / elapsed) if elapsed > 0 else float("inf"),
    }


def live_capacity(
    url: str,
    model: str,
    protocol: Protocol,
    slo_s: float,
    *,
    arrivals: ArrivalSpec = ArrivalSpec(),
    target: float = 0.99,
    lo: float = 5.0,
    hi: float = 200.0,
    duration: float = 10.0,
    seeds: tuple[int, ...] = (0,),
    tol: float = 0.05,
    min_requests: int | None = None,
    confidence: float = 0.95,
    confirm_runs: int = 1,
    payload: Payload = ONE_ROW,
    shared_memory: bool = False,
    on_probe: Callable[[float, dict[str, Any]], None] | None = None,
) -> tuple[CapacityResult, list[dict[str, Any]]]:
    """Highest rate a live server keeps ``target`` attainment at, by bisection over short runs.

    Each probe lasts ``duration`` seconds, or long enough for ``min_requests`` requests on average when
    that is longer (by default enough for three misses at the target: 300 at 99%): a 99% target judged
    on the ten requests of a short probe at a low rate passes or fails on a single slow answer. A probe
    whose attainment does not tell pass from fail — the target inside the ``confidence`` Wilson interval
    of its met / requests — is run again, up to ``confirm_runs`` times with other arrivals, and judged
    on the requests of all its runs together. Near the target that takes thousands of requests (987 of
    1,000 met: 97.8–99.3%), and at a low rate a probe of 90 requests with two slow answers (97.8%,
    interval 92.3–99.4%) is run again rather than failing the whole search at its first rate. Each run
    is one entry of the returned list, with ``repeat`` counting the runs at that rate before it.
    """
    runs: list[dict[str, Any]] = []

    least = min_requests if min_requests is not None else math.ceil(3 / max(1 - target, 1e-3))

    def once(rate: float, seed: int, repeat: int) -> dict[str, Any]:
        span = max(duration, least / rate)
        arrival_seed = seed + 1_000 * repeat
        planned = arrivals.workload(rate, span, arrival_seed)
        target = make_target(
            url, model, protocol, payload=payload, seed=arrival_seed, shared_memory=shared_memory
        )
        res = run_load(target, planned, slo_s)
        s = summarize(res) | {"rate": rate, "seed": seed, "repeat": repeat}
        runs.append(s)
        if on_probe is not None:
            on_probe(rate, s)
        return s

    def run(rate: float, seed: int) -> Any:
        done = [once(rate, seed, 0)]
        while True:
            requests = sum(s["requests"] for s in done)
            met = sum(s["met"] for s in done)
            pooled = met / requests if requests else 1.0
            if len(done) > confirm_runs or not requests:
                return Attainment(pooled)
            interval = binomtest(met, requests).proportion_ci(confidence_level=confidence, method="wilson")
            if not interval.low <= target <= interval.high:
                return Attainment(pooled)
            done.append(once(rate, seed, len(done)))

    return capacity_search(run, target, lo, hi, seeds=seeds, tol=tol), runs
