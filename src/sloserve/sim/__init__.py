"""Discrete-event simulator: event loop, workloads, the simulated cluster, metrics, capacity search.

Quick start::

    from sloserve.core import AffineProfile
    from sloserve.policies.triton import TritonDynamicBatcher
    from sloserve.sim import ModelSetup, simulate, workload

    profile = AffineProfile("m", alpha=0.005, beta=0.001, max_batch=32)
    w = workload.with_slo(workload.poisson(rate=500, duration=60, seed=1), slo=0.1)
    result = simulate(ModelSetup("m", profile, TritonDynamicBatcher(32, max_queue_delay=0.002)), w)
    print(result.metrics.attainment, result.metrics.latency_p99)
"""

from sloserve.sim import workload
from sloserve.sim.cluster import (
    DROP_CODES,
    ModelSetup,
    Outcomes,
    SimResult,
    Simulation,
    TailNoise,
    Timeline,
    simulate,
)
from sloserve.sim.engine import EventLoop
from sloserve.sim.metrics import LatencyHistogram, Metrics, MetricsCollector
from sloserve.sim.workload import NetworkDelayModel, StreamedWorkload, Workload

__all__ = [
    "DROP_CODES",
    "EventLoop",
    "LatencyHistogram",
    "Metrics",
    "MetricsCollector",
    "ModelSetup",
    "NetworkDelayModel",
    "Outcomes",
    "SimResult",
    "Simulation",
    "StreamedWorkload",
    "TailNoise",
    "Timeline",
    "Workload",
    "simulate",
    "workload",
]
