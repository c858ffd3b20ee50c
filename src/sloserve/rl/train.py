"""Training the QoS policy with Stable-Baselines3 (PPO or DQN) on the CPU, reproducibly from a seed.

PPO starts from the heuristic (ours, *spec*): the policy network first imitates the heuristic's
choices (shown to it in the observation) and its value head fits their discounted returns, for
``imitation_steps`` decisions; PPO then improves on it. Without this warm start PPO settles within a
few hundred thousand decisions on "always the small variant", which is good under heavy load and
poor under light load.

Same seed, same setup, same library versions → the same policy (single torch thread, seeded env).
The policy is saved as ``OUT.zip`` (Stable-Baselines3) plus ``OUT.json`` (what loading needs).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sloserve import cli_args
from sloserve.core.config import ConfigError
from sloserve.rl.config import QosSetup, TrainParams, training_workload
from sloserve.rl.env import QosEnv
from sloserve.rl.scheduler import save_metadata

DQN_TRAIN_FREQ = 4
"""DQN collects this many decisions between updates (Stable-Baselines3's default)."""

Progress = Callable[[int, int, float | None], None]
"""Called as ``(steps done, steps total, mean utility of recent episodes or None)``."""


@dataclass(frozen=True)
class TrainResult:
    path: Path
    """The saved ``.zip``."""
    timesteps: int
    """Decisions actually trained on (PPO trains whole rollouts of ``n_steps``)."""
    episodes: int
    recent_mean_utility: float | None
    """Mean per-request utility over the last (up to 10) training episodes."""
    imitation_agreement: float | None = None
    """Share of imitation decisions where the warm-started policy picks the heuristic's action."""


def make_env(setup: QosSetup, params: TrainParams | None = None) -> QosEnv:
    """The training environment of ``setup``."""
    p = params or setup.file.train
    return QosEnv(setup.pool, lambda rng: training_workload(rng, p.workload), rate_tau=p.rate_tau)


def policy_path(out: str | Path, field: str | None = None) -> Path:
    """``out`` as the ``.zip`` to save, checked before training: a :class:`ConfigError` (naming
    ``field``, where the path came from) when it is a directory or its directory cannot be made."""
    path = Path(out)
    if path.suffix != ".zip":
        path = path.with_suffix(".zip")
    try:
        return cli_args.output_file(str(path))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{field}: {exc}" if field else str(exc)) from None


def planned_timesteps(p: TrainParams) -> int:
    """Decisions ``model.learn(p.timesteps)`` trains on: PPO rounds up to whole rollouts, DQN to
    whole collections of :data:`DQN_TRAIN_FREQ` steps."""
    step = p.n_steps if p.algo == "ppo" else DQN_TRAIN_FREQ
    return -(-p.timesteps // step) * step


def build_model(env: QosEnv, p: TrainParams) -> Any:
    """A fresh PPO or DQN model for ``env`` (single-threaded torch, seeded; it logs nothing)."""
    import torch
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.logger import Logger

    torch.set_num_threads(1)
    model: PPO | DQN
    if p.algo == "ppo":
        model = PPO(
            "MlpPolicy",
            env,
            learning_rate=p.learning_rate,
            n_steps=p.n_steps,
            batch_size=p.batch_size,
            n_epochs=p.n_epochs,
            gamma=p.gamma,
            ent_coef=p.ent_coef,
            gae_lambda=p.gae_lambda,
            target_kl=p.target_kl,
            policy_kwargs={"net_arch": list(p.net)},
            seed=p.seed,
            device="cpu",
            verbose=0,
        )
    else:
        model = DQN(
            "MlpPolicy",
            env,
            learning_rate=p.learning_rate,
            batch_size=p.batch_size,
            gamma=p.gamma,
            learning_starts=min(1000, p.timesteps // 10),
            train_freq=DQN_TRAIN_FREQ,
            exploration_fraction=0.3,
            policy_kwargs={"net_arch": list(p.net)},
            seed=p.seed,
            device="cpu",
            verbose=0,
        )
    model.set_logger(Logger(None, []))  # SB3's default makes an empty /tmp/SB3-<time> folder per run
    return model


def imitate_heuristic(model: Any, env: QosEnv, p: TrainParams) -> float:
    """Behaviour cloning of the heuristic into a PPO policy (actions and value); returns the share of
    decisions where the trained policy's most likely action equals the heuristic's."""
    import torch

    obs_l: list[np.ndarray] = []
    act_l: list[int] = []
    rew_l: list[float] = []
    done_l: list[bool] = []
    obs, _ = env.reset(seed=p.seed + 10_007)
    while len(obs_l) < p.imitation_steps:
        a = env.features.hint_action(obs)
        obs_l.append(obs)
        act_l.append(a)
        obs, r, done, _, _ = env.step(a)
        rew_l.append(r)
        done_l.append(done)
        if done:
            obs, _ = env.reset()
    n = len(obs_l)
    returns = np.zeros(n, dtype=np.float32)
    g = 0.0
    for i in reversed(range(n)):
        g = rew_l[i] + (0.0 if done_l[i] else p.gamma * g)
        returns[i] = g
    o = torch.as_tensor(np.array(obs_l))
    a_t = torch.as_tensor(np.array(act_l))
    g_t = torch.as_tensor(returns)
    policy = model.policy
    policy.set_training_mode(True)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(p.seed)
    for _ in range(p.imitation_epochs):
        for idx in torch.split(torch.randperm(n, generator=gen), 256):
            values, log_prob, _ = policy.evaluate_actions(o[idx], a_t[idx])
            loss = -log_prob.mean() + 0.5 * ((values.flatten() - g_t[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        predicted = policy.get_distribution(o).distribution.probs.argmax(dim=1)
    return float((predicted == a_t).float().mean())


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
    path = policy_path(out) if out is not None else policy_path(p.out, "train.out")
    total = planned_timesteps(p)
    env = make_env(setup, p)
    model = build_model(env, p)
    imitation = None
    if p.algo == "ppo" and p.imitation_steps > 0:
        imitation = imitate_heuristic(model, make_env(setup, p), p)
    utilities: list[float] = []

    class _Report(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "qos" in info:
                    utilities.append(float(info["qos"]["mean_utility"]))
            if progress is not None and self.num_timesteps % 256 == 0:
                progress(self.num_timesteps, total, float(np.mean(utilities[-10:])) if utilities else None)
            return True

    model.learn(total_timesteps=p.timesteps, callback=_Report())
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    save_metadata(
        path,
        env.features,
        {
            "algo": p.algo,
            "seed": p.seed,
            "timesteps": model.num_timesteps,
            "rate_tau": p.rate_tau,
            "net": list(p.net),
            "imitation_agreement": imitation,
            "train": p.model_dump(),
        },
    )
    recent = float(np.mean(utilities[-10:])) if utilities else None
    if progress is not None:
        progress(model.num_timesteps, model.num_timesteps, recent)
    return TrainResult(path, model.num_timesteps, len(utilities), recent, imitation)
