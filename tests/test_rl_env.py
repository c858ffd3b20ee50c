"""The Gymnasium environment over the heterogeneous-pool simulator."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env

from sloserve.policies.qos import qos_spec_from_params
from sloserve.rl.env import QosEnv
from sloserve.rl.features import QosFeatures
from sloserve.sim.hetero import HeteroPool
from sloserve.sim.workload import poisson

PARAMS = {
    "variants": [{"name": "small", "accuracy": 0.70}, {"name": "large", "accuracy": 0.80}],
    "profiles": [
        {"model": "small", "hardware": "fast", "kind": "affine", "alpha_ms": 5, "beta_ms": 3},
        {"model": "large", "hardware": "fast", "kind": "affine", "alpha_ms": 12, "beta_ms": 20},
        {"model": "small", "hardware": "slow", "kind": "affine", "alpha_ms": 12.5, "beta_ms": 7.5},
        {"model": "large", "hardware": "slow", "kind": "affine", "alpha_ms": 30, "beta_ms": 50},
    ],
    "utility": {"target_ms": 150, "cutoff_ms": 450, "alpha": 2},
    "batch_sizes": [1, 4, 16],
}


def make_env(shaping: bool = True) -> QosEnv:
    pool = HeteroPool(qos_spec_from_params(PARAMS), ("fast", "slow", "slow"), noise_cv=0.1)
    return QosEnv(
        pool,
        lambda rng: poisson(float(rng.uniform(50, 300)), 2.0, int(rng.integers(1 << 30))),
        shaping=shaping,
    )


def test_gymnasium_env_checker_passes() -> None:
    check_env(make_env(), skip_render_check=True)


def test_steps_happen_only_when_a_server_is_free_and_requests_wait() -> None:
    env = make_env()
    env.reset(seed=1)
    feats: QosFeatures = env.features
    for _ in range(300):
        sim = env.sim
        assert sim is not None
        assert len(sim.scheduler) > 0
        assert any(i.free for i in sim.instances)
        _, _, done, _, _ = env.step(env.action_space.sample())
        if done:
            break
    assert feats.decode(feats.n_actions - 1) == (1, 16)


@pytest.mark.parametrize("shaping", [False, True])
def test_episode_return_is_the_total_utility(shaping: bool) -> None:
    """Unshaped: Σ reward = Σ U; shaped: Σ reward = Σ U − A_best^α · requests (a constant per workload)."""
    env = make_env(shaping)
    env.reset(seed=4)
    total, info, done = 0.0, {}, False
    rng = np.random.default_rng(0)
    while not done:
        _, r, done, _, info = env.step(int(rng.integers(env.action_space.n)))
        total += r
    q = info["qos"]
    expect = q["total_utility"] - (env._best_value * q["requests"] if shaping else 0.0)
    assert total / env.reward_scale == pytest.approx(expect, rel=1e-9, abs=1e-9)


def test_same_seed_same_episode() -> None:
    def roll(seed: int) -> list[float]:
        env = make_env()
        obs, _ = env.reset(seed=seed)
        out = [float(obs.sum())]
        for k in range(50):
            obs, r, done, _, _ = env.step(k % env.action_space.n)
            out += [float(obs.sum()), r]
            if done:
                break
        return out

    assert roll(5) == roll(5)
    assert roll(5) != roll(6)
