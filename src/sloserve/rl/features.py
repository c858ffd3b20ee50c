"""The RL scheduler's observation and action encoding (SEEDS §5), shared by training and serving.

Observation (float32, every entry clipped to a small range), computed when a server is free:

- queue length (log-scaled and relative to the largest batch bucket);
- waiting times of the ``n_oldest`` longest-waiting requests / cutoff (0 where absent);
- arrival-rate estimate / the pool's largest capacity;
- the free server's hardware type (one-hot over the pool's types);
- remaining busy time of every server of the pool / target delay (server id order);
- per (variant, bucket): slack of the oldest request, ``(target - age - l(v, hw, min(b, q))) / target``;
- per (variant, bucket): estimated rate / the pool's capacity with that variant and batch;
- (``hint=True``) the heuristic's choice for this server, one-hot over the actions.

The last three are what the heuristic reads and decides; with them the network can start from the
heuristic's rule and learn where to depart from it (ours, *spec*).
Action ``a`` is ``(variant, bucket) = divmod(a, len(batch_sizes))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sloserve.core.cluster import InstanceView
from sloserve.policies.qos import QosSpec
from sloserve.policies.qos_scheduling import QosScheduler, heuristic_choice


class QosFeatures:
    """Builds observations for one pool layout; see the module docstring."""

    def __init__(self, spec: QosSpec, servers: Sequence[str], n_oldest: int = 4, hint: bool = True) -> None:
        self.spec = spec
        self.hint = hint
        self.servers = tuple(servers)
        self.hardware = sorted(set(self.servers))
        self.n_oldest = n_oldest
        nv, nb = len(spec.variants), len(spec.batch_sizes)
        self.n_actions = nv * nb
        self._caps = np.array(
            [
                [sum(b / spec.latency(v, h, b) for h in self.servers) for b in spec.batch_sizes]
                for v in range(nv)
            ]
        )
        self.max_rate = float(self._caps.max())
        self.size = (
            2 + n_oldest + 1 + len(self.hardware) + len(self.servers) + (3 if hint else 2) * self.n_actions
        )

    def decode(self, action: int) -> tuple[int, int]:
        """``(variant, batch size)`` of action number ``action``."""
        v, k = divmod(int(action), len(self.spec.batch_sizes))
        return v, self.spec.batch_sizes[k]

    def hint_action(self, obs: np.ndarray) -> int:
        """The heuristic's action as shown in ``obs`` (``hint=True``)."""
        if not self.hint:
            raise ValueError("these features carry no heuristic hint")
        return int(np.argmax(obs[self.size - self.n_actions :]))

    def check_pool(self, instances: Sequence[InstanceView]) -> None:
        """Raise ``ValueError`` unless ``instances`` have the layout the features were built for."""
        got = tuple(i.hardware for i in sorted(instances, key=lambda i: i.id))
        if got != self.servers:
            raise ValueError(f"RL policy was trained for servers {list(self.servers)}, got {list(got)}")

    def __call__(
        self, sched: QosScheduler, now: float, instance: InstanceView, instances: Sequence[InstanceView]
    ) -> np.ndarray:
        """The observation for free server ``instance`` at ``now`` (called from ``choose``)."""
        spec = self.spec
        u = spec.utility
        q = len(sched.queue)
        out = np.zeros(self.size, dtype=np.float32)
        out[0] = min(math.log1p(q) / math.log1p(4 * spec.batch_sizes[-1]), 2.0)
        out[1] = min(q / spec.batch_sizes[-1], 4.0) / 4.0
        j = 2
        ages = sched.oldest_ages(now, self.n_oldest)
        for k, a in enumerate(ages):
            out[j + k] = min(a / u.cutoff, 1.5)
        j += self.n_oldest
        rate = sched.rate.rate(now)
        out[j] = min(rate / self.max_rate, 2.0)
        j += 1
        out[j + self.hardware.index(instance.hardware)] = 1.0
        j += len(self.hardware)
        for inst in instances:
            if inst.id < len(self.servers) and inst.id != instance.id:
                out[j + inst.id] = min(max(sched.busy_until(inst) - now, 0.0) / u.target, 4.0)
        j += len(self.servers)
        age0 = ages[0] if ages else 0.0
        nb = len(spec.batch_sizes)
        for v in range(len(spec.variants)):
            for k, b in enumerate(spec.batch_sizes):
                lat = sched.latency(v, instance.hardware, max(1, min(b, q)))
                out[j + v * nb + k] = min(max((u.target - age0 - lat) / u.target, -2.0), 1.0)
        j += self.n_actions
        out[j : j + self.n_actions] = np.minimum(rate / self._caps.ravel(), 2.0)
        j += self.n_actions
        if self.hint and q:
            v, b = heuristic_choice(sched, now, instance, instances)
            out[j + v * nb + spec.batch_sizes.index(b)] = 1.0
        return out

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of every observation entry (for the Gymnasium space)."""
        lo = np.zeros(self.size, dtype=np.float32)
        hi = np.full(self.size, 4.0, dtype=np.float32)
        j = 2 + self.n_oldest + 1 + len(self.hardware) + len(self.servers)
        lo[j : j + self.n_actions] = -2.0
        return lo, hi
