"""Flow steering: which receive queue (I/O worker) a client connection's bytes go to.

CoFB's first mechanism (SEEDS.md §2). A *flow* is one client connection; its requests are received
and parsed, in order, by the I/O worker that drains the queue the flow is bound to.

- :class:`StaticHashSteering` is RSS: the flow's queue is a fixed hash of the flow id, forever.
- :class:`LoadSteering` is CoFB's flow scheduling. Paper: a dispatcher samples every worker's load
  each ``T_mon`` (1 ms) and, when the busiest worker's load exceeds 1.2x the mean, re-steers whole
  flows from the busiest queue to the least loaded one. *Ours (spec)*: the load sampled is the bytes
  pending in each queue (the driver passes them); the flow moved is the one on the busiest queue
  whose recent byte rate (exponentially decayed, time constant ``rate_tau``) best halves the rate
  gap between the two queues, and only if moving it narrows that gap; a flow that moved stays put
  for ``min_dwell`` seconds; at most ``max_moves`` flows move per tick. Requests already queued stay
  where they are (a connection's bytes arrive in order), only later ones follow the flow.

Both are sans-I/O: the driver calls :meth:`queue_of` on every request, :meth:`on_bytes` when a
request's bytes enter a queue, :meth:`on_tick` every :attr:`interval` seconds with the loads, and
:meth:`on_flow_end` when a flow's connection closes (what is kept per flow is dropped with it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

_MASK64 = (1 << 64) - 1


def flow_hash(flow: int, seed: int = 0) -> int:
    """A 64-bit mix of the flow id (splitmix64), standing in for the NIC's Toeplitz RSS hash.

    Python's ``hash(int)`` is the identity, which would spread consecutive flow ids perfectly and
    hide the imbalance that real hashing of a few connections produces.
    """
    z = (flow + 0x9E3779B97F4A7C15 * (seed + 1)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


@dataclass(frozen=True, slots=True)
class Resteer:
    """Flow ``flow`` now goes to queue ``target`` instead of ``source``."""

    flow: int
    source: int
    target: int


class FlowSteering(Protocol):
    """Binds flows to receive queues; may re-bind them on a monitoring tick."""

    @property
    def queues(self) -> int:
        """Number of receive queues (I/O workers)."""
        ...

    @property
    def interval(self) -> float:
        """Seconds between two calls of :meth:`on_tick` (``inf``: never call it)."""
        ...

    def queue_of(self, flow: int) -> int:
        """Called for every request of ``flow``: the queue its bytes go to now."""
        ...

    def on_bytes(self, now: float, flow: int, nbytes: int) -> None:
        """Called when a request of ``nbytes`` bytes of ``flow`` enters its queue."""
        ...

    def on_tick(self, now: float, loads: Sequence[float]) -> list[Resteer]:
        """Called every :attr:`interval` with each queue's load (pending bytes); returns moves."""
        ...

    def on_flow_end(self, flow: int) -> None:
        """Called when ``flow``'s connection has closed: it sends nothing more."""
        ...


class StaticHashSteering:
    """RSS-like static hashing: ``queue = flow_hash(flow, seed) mod K`` (see module docstring)."""

    def __init__(self, queues: int, *, seed: int = 0) -> None:
        if queues < 1:
            raise ValueError(f"queues must be >= 1, got {queues}")
        self._queues = queues
        self.seed = seed
        self._bound: dict[int, int] = {}

    @property
    def queues(self) -> int:
        return self._queues

    @property
    def interval(self) -> float:
        return math.inf

    @property
    def flows(self) -> int:
        """Flows bound to a queue (seen and not yet ended)."""
        return len(self._bound)

    def queue_of(self, flow: int) -> int:
        q = self._bound.get(flow)
        if q is None:
            q = self._bound[flow] = flow_hash(flow, self.seed) % self._queues
        return q

    def on_bytes(self, now: float, flow: int, nbytes: int) -> None:
        """Static hashing learns nothing."""

    def on_tick(self, now: float, loads: Sequence[float]) -> list[Resteer]:
        return []

    def on_flow_end(self, flow: int) -> None:
        self._bound.pop(flow, None)


class LoadSteering(StaticHashSteering):
    """CoFB flow scheduling over an initial static hash (see module docstring)."""

    def __init__(
        self,
        queues: int,
        *,
        seed: int = 0,
        t_mon: float = 1e-3,
        threshold: float = 1.2,
        rate_tau: float = 0.05,
        min_dwell: float = 0.01,
        max_moves: int = 1,
    ) -> None:
        super().__init__(queues, seed=seed)
        if t_mon <= 0:
            raise ValueError(f"t_mon must be > 0, got {t_mon}")
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        if rate_tau <= 0:
            raise ValueError(f"rate_tau must be > 0, got {rate_tau}")
        self.t_mon = t_mon
        self.threshold = threshold
        self.rate_tau = rate_tau
        self.min_dwell = min_dwell
        self.max_moves = max_moves
        self._rate: dict[int, float] = {}
        """Decayed byte rate per flow (bytes/s), as of ``_seen[flow]``."""
        self._seen: dict[int, float] = {}
        self._moved_at: dict[int, float] = {}
        self.moves = 0
        """Flows re-steered so far (a counter for reports)."""

    @property
    def interval(self) -> float:
        return self.t_mon

    def flow_rate(self, now: float, flow: int) -> float:
        """The flow's recent byte rate (bytes/s), decayed to ``now``."""
        last = self._seen.get(flow)
        if last is None:
            return 0.0
        return self._rate[flow] * math.exp(-(now - last) / self.rate_tau)

    def on_bytes(self, now: float, flow: int, nbytes: int) -> None:
        self._rate[flow] = self.flow_rate(now, flow) + nbytes / self.rate_tau
        self._seen[flow] = now

    def on_flow_end(self, flow: int) -> None:
        super().on_flow_end(flow)
        for per_flow in (self._rate, self._seen, self._moved_at):
            per_flow.pop(flow, None)

    def on_tick(self, now: float, loads: Sequence[float]) -> list[Resteer]:
        if len(loads) != self._queues:
            raise ValueError(f"expected {self._queues} loads, got {len(loads)}")
        mean = sum(loads) / len(loads)
        if mean <= 0:
            return []
        busiest = max(range(self._queues), key=lambda q: (loads[q], -q))
        least = min(range(self._queues), key=lambda q: (loads[q], q))
        if loads[busiest] <= self.threshold * mean or busiest == least:
            return []
        rates = {f: self.flow_rate(now, f) for f in self._bound}
        queue_rate = [0.0] * self._queues
        for f, q in self._bound.items():
            queue_rate[q] += rates[f]
        out: list[Resteer] = []
        for _ in range(self.max_moves):
            gap = queue_rate[busiest] - queue_rate[least]
            movable = [
                f
                for f, q in self._bound.items()
                if q == busiest
                and 0 < rates[f] < gap
                and now - self._moved_at.get(f, -math.inf) >= self.min_dwell
            ]
            if not movable:
                break
            flow = min(movable, key=lambda f: (abs(gap - 2 * rates[f]), f))
            self._bound[flow] = least
            self._moved_at[flow] = now
            queue_rate[busiest] -= rates[flow]
            queue_rate[least] += rates[flow]
            out.append(Resteer(flow, busiest, least))
        self.moves += len(out)
        return out
