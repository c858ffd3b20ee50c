"""Training the QoS policy with Stable-Baselines3 (PPO or DQN) on the CPU, reproducibly from a seed.

Same seed, same setup, same library versions → the same policy (single torch thread, seeded env).
The policy is saved as ``OUT.zip`` (Stable-Baselines3) plus ``OUT.json`` (what loading needs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sloserve.rl.config import QosSetup, TrainParams, training_workload
from sloserve.rl.env import QosEnv
from sloserve.rl.scheduler import save_metadata

Progress = Callable[[int, int, float | None], None]
"""Called as ``(steps done, steps total, mean utility of recent episodes or None)``."""


@dataclass(frozen=True)
class TrainResult:
    path: Path
    """The saved ``.zip``."""
    timesteps: int
    episodes: int
    recent_mean_utility: float | None
    """Mean per-request utility over the last (up to 10) training episodes."""


def make_env(setup: QosSetup, params: TrainParams | None = None) -> QosEnv:
    """The training environment of ``setup``."""
    p = params or setup.file.train
    return QosEnv(setup.pool, lambda rng: training_workload(rng, p.workload), rate_tau=p.rate_tau)


def build_model(env: QosEnv, p: TrainParams) -> Any:
    """A fresh PPO or DQN model for ``env`` (single-threaded torch, seeded)."""
    import torch
    from stable_baselines3 import DQN, PPO

    torch.set_num_threads(1)
    if p.algo == "ppo":
        return PPO(
            "MlpPolicy",
            env,
            learning_rate=p.learning_rate,
            n_steps=p.n_steps,
            batch_size=p.batch_size,
            n_epochs=p.n_epochs,
            gamma=p.gamma,
            ent_coef=p.ent_coef,
            policy_kwargs={"net_arch": list(p.net)},
            seed=p.seed,
            device="cpu",
            verbose=0,
        )
    return DQN(
        "MlpPolicy",
        env,
        learning_rate=p.learning_rate,
        batch_size=p.batch_size,
        gamma=p.gamma,
        learning_starts=min(1000, p.timesteps // 10),
        exploration_fraction=0.3,
        policy_kwargs={"net_arch": list(p.net)},
        seed=p.seed,
        device="cpu",
        verbose=0,
    )


def train(
    setup: QosSetup,
    *,
    params: TrainParams | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train on ``setup``'s training workloads and save the policy (``out`` overrides the config)."""
    from stable_baselines3.common.callbacks import BaseCallback

    p = params or setup.file.train
    env = make_env(setup, p)
    model = build_model(env, p)
    utilities: list[float] = []

    class _Report(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "qos" in info:
                    utilities.append(float(info["qos"]["mean_utility"]))
            if progress is not None and self.num_timesteps % 256 == 0:
                progress(
                    self.num_timesteps, p.timesteps, float(np.mean(utilities[-10:])) if utilities else None
                )
            return True

    model.learn(total_timesteps=p.timesteps, callback=_Report())
    path = Path(out if out is not None else p.out)
    if path.suffix != ".zip":
        path = path.with_suffix(".zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    save_metadata(
        path,
        env.features,
        {
            "algo": p.algo,
            "seed": p.seed,
            "timesteps": p.timesteps,
            "rate_tau": p.rate_tau,
            "net": list(p.net),
        },
    )
    recent = float(np.mean(utilities[-10:])) if utilities else None
    if progress is not None:
        progress(p.timesteps, p.timesteps, recent)
    return TrainResult(path, p.timesteps, len(utilities), recent)
