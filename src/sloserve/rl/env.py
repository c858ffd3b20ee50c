"""Gymnasium environment over the heterogeneous-pool simulator; it steps only at decision points.

A decision point is a free server while requests wait. ``reset`` draws a workload, starts a
:class:`~sloserve.sim.hetero.HeteroSim` driven by an :class:`~sloserve.rl.scheduler.RLQosScheduler`
and runs it to the first decision point. ``step(action)`` runs ``(variant, batch)`` on that server,
then runs the simulation to the next decision point. Reward (SEEDS §5): the utility of the requests
in the dispatched batch (known at dispatch; dropped requests earn 0), times ``reward_scale``. The
episode ends when every request of the workload has ended.

``shaping=True`` (ours, *spec*) adds the potential difference ``Φ(s') - Φ(s)`` with
``Φ = Σ_waiting A_best^α · h(age)`` (the utility the waiting requests could still get), counting each
arrival's full value ``A_best^α`` as it arrives. Summed over an episode this changes the return by a
constant of the workload only, so the best policy is the same; but utility a waiting request loses is
charged at the decision during which it is lost instead of when the request is finally served, which
makes the effect of a slow, large batch on everyone waiting visible at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from sloserve.rl.features import QosFeatures
from sloserve.rl.scheduler import RLQosScheduler
from sloserve.sim.hetero import HeteroPool, HeteroSim
from sloserve.sim.workload import Workload

WorkloadSampler = Callable[[np.random.Generator], Workload]
"""Draws one episode's workload from the environment's random generator."""


class QosEnv(gym.Env[np.ndarray, np.int64]):
    """See the module docstring."""

    def __init__(
        self,
        pool: HeteroPool,
        sample_workload: WorkloadSampler,
        *,
        rate_tau: float = 1.0,
        reward_scale: float | None = None,
        n_oldest: int = 4,
        hint: bool = True,
        shaping: bool = True,
    ) -> None:
        self.shaping = shaping
        spec = pool.spec
        self._best_value = max(v.accuracy for v in spec.variants) ** spec.utility.alpha
        self.metadata = {"render_modes": []}
        self.pool = pool
        self.sample_workload = sample_workload
        self.rate_tau = rate_tau
        self.features = QosFeatures(pool.spec, pool.servers, n_oldest, hint)
        self.reward_scale = reward_scale if reward_scale is not None else 1.0 / pool.spec.batch_sizes[-1]
        lo, hi = self.features.bounds()
        self.observation_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.features.n_actions)
        self.sim: HeteroSim | None = None
        self._obs: np.ndarray | None = None
        self._pending: int | None = None

    def _act(self, obs: np.ndarray) -> int | None:
        """The scheduler's action source: the agent's pending action, else record a decision point."""
        if self._pending is not None:
            a, self._pending = self._pending, None
            return a
        if self._obs is None:
            self._obs = obs
        return None

    def _advance(self) -> bool:
        """Run to the next decision point; False when the episode is over."""
        assert self.sim is not None
        return self._obs is not None or self.sim.run_until(lambda: self._obs is not None)

    def _potential(self) -> float:
        """``Φ``: Σ over waiting requests of ``A_best^α · h(age)`` (FIFO: they are a contiguous id range)."""
        sim = self.sim
        assert sim is not None
        queue = sim.scheduler.queue  # type: ignore[attr-defined]
        if not len(queue):
            return 0.0
        ages = sim.loop.now - sim.workload.arrivals[queue.peek().id : sim.arrived]
        return float(self._best_value * float(sim.spec.utility.delay_factors(ages).sum()))

    def _terminal_obs(self) -> np.ndarray:
        return np.zeros(self.features.size, dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        workload = self.sample_workload(self.np_random)
        sched = RLQosScheduler(self.pool.spec, self.features, self._act, rate_tau=self.rate_tau)
        self.sim = HeteroSim(self.pool, sched, workload, seed=int(self.np_random.integers(2**31)))
        self._obs, self._pending = None, None
        if not self._advance():  # a workload without a single decision: start over with another draw
            return self.reset(options=options)
        assert self._obs is not None
        return self._obs, {"workload": workload.description}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        sim = self.sim
        if sim is None or self._obs is None:
            raise RuntimeError("call reset() before step() (and again after the episode ended)")
        before, phi, arrived = sim.earned, self._potential(), sim.arrived
        self._obs, self._pending = None, int(action)
        sim.decide_now()
        if self._pending is not None:
            raise RuntimeError("the decision point vanished before the action was applied")
        going = self._advance()
        reward = sim.earned - before
        if self.shaping:
            reward += self._potential() - phi - self._best_value * (sim.arrived - arrived)
        reward *= self.reward_scale
        if going:
            assert self._obs is not None
            return self._obs, reward, False, False, {}
        result = sim.result()
        self.sim = None
        return self._terminal_obs(), reward, True, False, {"qos": result.qos.to_dict()}
