"""Prometheus metrics with Triton's names, plus sloserve's SLO metrics, read from the model loops.

A collector reads each loaded model's :class:`~sloserve.runtime.model_loop.ModelStats` at scrape
time, so the metrics, the ``stats`` extension and the loop count the same events once.

Triton's names (labels ``model``, ``version``): ``nv_inference_request_success``,
``nv_inference_request_failure{reason}``, ``nv_inference_count``, ``nv_inference_exec_count``,
``nv_inference_pending_request_count``, ``nv_inference_queue_duration_us``,
``nv_inference_compute_infer_duration_us``, ``nv_inference_request_duration_us``.
sloserve's: ``sloserve_slo_met_total``, ``sloserve_slo_missed_total``,
``sloserve_requests_dropped_total{reason}``, ``sloserve_instance_cores{instance}``,
``sloserve_instances``, ``sloserve_batch_size`` (histogram of executed batch sizes),
``sloserve_batch_compute_seconds_total`` (compute time of the executed batches, each once) and, for a
model with a profile, ``sloserve_batch_profile_seconds_total`` (what its profile predicted for those
batches: the ratio of the two counters' rates is how much slower than its profile a model runs — a
stale profile shows here),
``sloserve_bad_requests_total`` (malformed requests for no loaded model).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from sloserve.runtime.model_loop import ModelLoop
from sloserve.runtime.repository import LoadedModel
from sloserve.runtime.server import InferenceServer


class _TritonCounter(Metric):
    """A counter whose samples carry Triton's exact names (no ``_total`` suffix), as Triton exports them."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        super().__init__(name, documentation, "counter")
        self._labels = labels

    def add_metric(self, values: list[str], value: float) -> None:
        self.add_sample(self.name, dict(zip(self._labels, values, strict=True)), value)


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
REFUSALS = frozenset(
    {"deadline_unreachable", "deadline_expired", "queue_timeout", "queue_full", "unavailable"}
)


class ServerCollector(Collector):
    """Collects the metrics above from an :class:`InferenceServer` (call on the loop's thread)."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        success = _TritonCounter(
            "nv_inference_request_success", "Successful inference requests", labels=labels
        )
        failure = _TritonCounter(
            "nv_inference_request_failure", "Failed inference requests", labels=[*labels, "reason"]
        )
        count = _TritonCounter("nv_inference_count", "Inferences performed (samples)", labels=labels)
        execs = _TritonCounter("nv_inference_exec_count", "Batch executions", labels=labels)
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count", "Requests received and not yet answered", labels=labels
        )
        queue = _TritonCounter("nv_inference_queue_duration_us", "Cumulative queue time", labels=labels)
        compute = _TritonCounter(
            "nv_inference_compute_infer_duration_us", "Cumulative compute time", labels=labels
        )
        request = _TritonCounter(
            "nv_inference_request_duration_us", "Cumulative end-to-end request time", labels=labels
        )
        met = CounterMetricFamily(
            "sloserve_slo_met", "Requests answered within their deadline", labels=labels
        )
        missed = CounterMetricFamily(
            "sloserve_slo_missed", "Requests answered after their deadline", labels=labels
        )
        dropped = CounterMetricFamily(
            "sloserve_requests_dropped", "Requests refused by reason", labels=[*labels, "reason"]
        )
        cores = GaugeMetricFamily(
            "sloserve_instance_cores", "Threads per instance", labels=[*labels, "instance"]
        )
        instances = GaugeMetricFamily("sloserve_instances", "Instances serving", labels=labels)
        batch = HistogramMetricFamily("sloserve_batch_size", "Sizes of executed batches", labels=labels)
        batch_compute = CounterMetricFamily(
            "sloserve_batch_compute_seconds", "Compute time of executed batches", labels=labels
        )
        batch_profile = CounterMetricFamily(
            "sloserve_batch_profile_seconds",
            "The profile's predicted time for the same executed batches",
            labels=labels,
        )
        for m, loops in self._versions():
            lv = [m.name, m.version]
            s = m.loop.stats
            success.add_metric(lv, s.success_count)
            for reason, n in sorted(s.failures.items()):
                failure.add_metric([*lv, reason], n)
                if reason in REFUSALS:
                    dropped.add_metric([*lv, reason], n)
            count.add_metric(lv, s.inference_count)
            execs.add_metric(lv, s.execution_count)
            pending.add_metric(lv, sum(len(loop.pending) for loop in loops))
            queue.add_metric(lv, s.queue_ns / 1e3)
            compute.add_metric(lv, s.compute_ns / 1e3)
            request.add_metric(lv, s.success_ns / 1e3)  # as Triton's: successful requests only
            met.add_metric(lv, s.slo_met)
            missed.add_metric(lv, s.slo_missed)
            live = [v for v in m.loop.views.values() if v.id not in m.loop.retiring]
            instances.add_metric(lv, len(live))
            for v in live:
                cores.add_metric([*lv, str(v.id)], v.cores)
            buckets, total, acc = [], 0.0, 0
            for bound in BATCH_BUCKETS:
                acc = sum(n for size, n in s.batch_sizes.items() if size <= bound)
                buckets.append((str(bound), acc))
            buckets.append(("+Inf", sum(s.batch_sizes.values())))
            total = float(sum(size * n for size, n in s.batch_sizes.items()))
            batch.add_metric(lv, buckets, total)
            batch_compute.add_metric(lv, sum(s.batch_ns.values()) / 1e9)
            if m.loop.profile is not None:
                batch_profile.add_metric(lv, s.profiled_ns / 1e9)
        bad = CounterMetricFamily("sloserve_bad_requests", "Malformed requests for no loaded model")
        bad.add_metric([], self.server.bad_requests)
        yield from (success, failure, count, execs, pending, queue, compute, request)
        yield from (met, missed, dropped, cores, instances, batch, batch_compute, batch_profile, bad)

    def _versions(self) -> list[tuple[LoadedModel, list[ModelLoop]]]:
        """Each model version with requests to count: the loaded ones, and the replaced or unloaded
        ones still ending theirs, each with every loop serving it (a reloaded version's old loop
        shares its statistics and adds its pending requests)."""
        repository = self.server._repository
        if repository is None:
            return []
        versions: dict[tuple[str, str], tuple[LoadedModel, list[ModelLoop]]] = {}
        retired = [model for model, _ in repository.draining.values()]
        for m in [*repository.models.values(), *retired]:
            versions.setdefault((m.name, m.version), (m, []))[1].append(m.loop)
        return list(versions.values())


def metrics_registry(server: InferenceServer) -> CollectorRegistry:
    """A registry holding only this server's collector (tests may run several servers)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return registry


TRITON_COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_request_duration_us",
)
"""Triton's counters, whose samples carry no ``_total`` (:class:`_TritonCounter`)."""


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format of ``registry``. The client library writes a counter's HELP and
    TYPE lines for ``<name>_total``; Triton's counters are declared under their own names, as Triton
    writes them, or a parser finds their samples in an untyped family of their own."""
    text = generate_latest(registry)
    for name in TRITON_COUNTERS:
        for line in (b"# HELP ", b"# TYPE "):
            text = text.replace(line + f"{name}_total ".encode(), line + f"{name} ".encode())
    return text
