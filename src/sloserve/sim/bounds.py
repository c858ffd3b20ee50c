"""Upper bounds on what any batching scheduler can do: the ceiling a comparison is read against.

Called by experiments after the policies have been measured, to say how much room was left.
Two bounds, both with every batch taking its profiled (mean) time, no noise:

- :func:`clairvoyant_misses` — the fewest requests **one** instance must miss on a given arrival
  sequence when the scheduler knows every arrival in advance (offline optimum). Exact for
  deadlines that grow with arrival order (one SLO for all); for other deadlines each is first
  relaxed to the latest deadline seen so far, which only makes the bound looser, never wrong.
  Why it is exact: with deadlines in arrival order, serving in arrival order loses nothing (swap
  argument); a batch of consecutive requests starts when the previous one ends or its last member
  arrives; and a request left out from inside a batch can always be traded for the batch's first
  member (same size and start, later deadline), so drops sit between batches. A dynamic program
  over (requests handled, requests dropped) keeping the earliest finish time then finds the
  optimum in ``O(n · max_batch · max_misses)``.
- :func:`fluid_ceiling` — the best throughput of ``instances`` instances kept busy with batches
  that each fit the SLO (no queueing at all): ``max k·b / latency(b, k)``. Any number of
  instances; looser than the clairvoyant bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from sloserve.core.profiles import ModelProfile
from sloserve.sim.capacity import Attainment, CapacityResult, capacity_search
from sloserve.sim.workload import Workload


def clairvoyant_misses(
    arrivals: np.ndarray, deadlines: np.ndarray, latencies: np.ndarray, max_misses: int
) -> int:
    """Fewest requests an offline-optimal single instance misses (``max_misses + 1`` when more).

    ``arrivals`` sorted; ``latencies[m - 1]`` is the time of a batch of ``m`` (its length is the
    largest batch). A missed request is one not answered by its deadline (dropped, in the optimum).
    """
    n, width = len(arrivals), max_misses + 1
    if n == 0:
        return 0
    a = np.asarray(arrivals, dtype=np.float64)
    d = np.maximum.accumulate(np.asarray(deadlines, dtype=np.float64))
    lat = np.asarray(latencies, dtype=np.float64)
    # finish[i % rows, k]: earliest time the instance is free having dealt with requests < i, k of
    # them missed. Row i is read once, after every batch ending at i was offered, then reused for
    # i + rows: memory stays rows × width whatever the run's length.
    rows = len(lat) + 1
    finish = np.full((rows, width), math.inf)
    finish[0, 0] = 0.0
    for i in range(n):
        free = finish[i % rows].copy()
        finish[i % rows] = math.inf
        if not np.isfinite(free).any():
            continue
        nxt = (i + 1) % rows
        np.minimum(finish[nxt, 1:], free[:-1], out=finish[nxt, 1:])  # miss request i
        m = min(len(lat), n - i)
        ends = np.maximum(free[None, :], a[i : i + m, None]) + lat[:m, None]  # batch of i .. i+m-1
        ends[ends > d[i]] = math.inf
        targets = np.arange(i + 1, i + m + 1) % rows
        finish[targets] = np.minimum(finish[targets], ends)
    done = np.flatnonzero(np.isfinite(finish[n % rows]))
    return int(done[0]) if len(done) else width


def clairvoyant_attainment(
    arrivals: np.ndarray, deadlines: np.ndarray, profile: ModelProfile, floor: float, cores: int = 1
) -> float:
    """Best attainment one instance of ``profile`` (``cores`` each) reaches on these requests,
    knowing the future.

    Exact when it is at least ``floor``; otherwise some value below ``floor`` (the search stops
    counting misses there). A capacity search averaging S seeds against a target T needs exact
    values down to ``1 - S·(1 - T)``.
    """
    n = len(arrivals)
    if n == 0:
        return 1.0
    allowed = math.floor((1.0 - max(floor, 0.0)) * n + 1e-9)
    lat = np.array([profile.latency(b, cores, 1) for b in range(1, profile.max_batch + 1)])
    missed = clairvoyant_misses(arrivals, deadlines, lat, allowed)
    return (n - missed) / n


def clairvoyant_capacity(
    workload_at: Callable[[float, int], Workload],
    profile: ModelProfile,
    *,
    target: float,
    seeds: Sequence[int],
    lo: float,
    hi: float,
    tol: float,
    cores: int = 1,
) -> CapacityResult:
    """Highest rate at which the clairvoyant optimum keeps ``target`` attainment (mean over
    ``seeds``) on ``workload_at(rate, seed)``: the capacity no scheduler of one instance passes."""
    floor = 1.0 - len(seeds) * (1.0 - target)  # exact attainments down to what the mean can absorb

    def run(rate: float, seed: int) -> Attainment:
        w = workload_at(rate, seed)
        return Attainment(clairvoyant_attainment(w.arrivals, w.deadlines, profile, floor, cores))

    return capacity_search(run, target, lo=lo, hi=hi, seeds=seeds, tol=tol)


def fluid_ceiling(profile: ModelProfile, slo: float, instances: int = 1) -> float:
    """Requests per second of ``instances`` instances running back to back batches that each fit
    ``slo`` (``k`` of them at once, slowed as the profile says for ``k`` co-located): a queueing-free
    ceiling no scheduler passes at full attainment. 0 when not even batch 1 fits."""
    best = 0.0
    for k in range(1, instances + 1):
        for b in range(1, profile.max_batch + 1):
            t = profile.latency(b, 1, k)
            if t <= slo:
                best = max(best, k * b / t)
    return best


__all__ = ["clairvoyant_attainment", "clairvoyant_capacity", "clairvoyant_misses", "fluid_ceiling"]
