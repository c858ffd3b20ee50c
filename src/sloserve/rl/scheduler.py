"""The learned QoS scheduler: a :class:`QosScheduler` whose choice comes from a policy network.

Used three ways: by the training environment (``act`` hands out the agent's pending action), by the
simulator and by the server (``act`` runs a saved Stable-Baselines3 policy). Selected by name
``qos_rl`` with ``params: {model_path: PATH}``: everything else (variants, profiles, utility, pool
layout) is read from the ``.json`` saved next to the policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sloserve.core.cluster import InstanceView
from sloserve.core.config import ConfigError
from sloserve.core.profile_io import profile_to_dict
from sloserve.policies.base import PolicyContext
from sloserve.policies.params import PolicyParams, parse_params
from sloserve.policies.qos import QosSpec, qos_spec_from_params
from sloserve.policies.qos_scheduling import QosScheduler, capped, check_variants_run
from sloserve.rl.features import QosFeatures

Act = Callable[[np.ndarray], int | None]
"""Observation → action number, or None to leave the server idle for now."""

FORMAT = "sloserve-rl-policy/v1"


class RLQosScheduler(QosScheduler):
    """Choice = ``features.decode(act(features(...)))``; see the module docstring."""

    def __init__(
        self,
        spec: QosSpec,
        features: QosFeatures,
        act: Act,
        *,
        rate_tau: float = 1.0,
        max_queue_size: int = 0,
    ):
        super().__init__(spec, rate_tau=rate_tau, max_queue_size=max_queue_size)
        self.features = features
        self.act = act
        self._checked = False

    def choose(
        self, now: float, instance: InstanceView, instances: Sequence[InstanceView]
    ) -> tuple[int, int] | None:
        if not self._checked:
            self.features.check_pool(instances)
            self._checked = True
        a = self.act(self.features(self, now, instance, instances))
        return None if a is None else self.features.decode(a)


def qos_params_of(spec: QosSpec) -> dict[str, Any]:
    """Self-contained QoS parameters (profiles inline) that rebuild ``spec``."""
    u = spec.utility
    return {
        "variants": [{"name": v.name, "accuracy": v.accuracy} for v in spec.variants],
        "profiles": [profile_to_dict(p) for p in spec.profiles.profiles.values()],
        "utility": {
            "target_ms": u.target * 1e3,
            "cutoff_ms": u.cutoff * 1e3,
            "alpha": u.alpha,
            "decay": u.decay,
            "steepness": u.steepness,
        },
        "batch_sizes": list(spec.batch_sizes),
    }


def metadata_path(model_path: str | Path) -> Path:
    """The ``.json`` next to a saved policy ``X.zip`` (or ``X``)."""
    p = Path(model_path)
    return p.with_suffix(".json") if p.suffix == ".zip" else p.with_name(p.name + ".json")


def save_metadata(model_path: str | Path, features: QosFeatures, extra: dict[str, Any]) -> None:
    """Write what loading needs besides the network: QoS parameters and the pool layout."""
    meta = {
        "format": FORMAT,
        "qos": qos_params_of(features.spec),
        "servers": list(features.servers),
        "n_oldest": features.n_oldest,
        "hint": features.hint,
        **extra,
    }
    metadata_path(model_path).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_metadata(model_path: str | Path) -> tuple[QosFeatures, dict[str, Any]]:
    """Features (with their spec) and the raw metadata of a saved policy."""
    path = metadata_path(model_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found (saved next to the policy by `sloserve train-rl`)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a policy's metadata (JSON): {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ConfigError(f"{path}: format must be {FORMAT!r}, got {got!r}")
    missing = [key for key in ("qos", "servers", "n_oldest") if key not in meta]
    if missing:
        raise ConfigError(f"{path}: {', '.join(missing)}: missing (write it again with `sloserve train-rl`)")
    try:
        spec = qos_spec_from_params(meta["qos"])
        features = QosFeatures(spec, meta["servers"], int(meta["n_oldest"]), bool(meta.get("hint", True)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc.args[0] if exc.args else exc}") from None
    return features, meta


def load_act(model_path: str | Path) -> Act:
    """A deterministic action function from a saved Stable-Baselines3 policy (imports torch)."""
    import torch
    from stable_baselines3 import DQN, PPO

    torch.set_num_threads(1)
    meta = json.loads(metadata_path(model_path).read_text(encoding="utf-8"))
    algo: Any = {"ppo": PPO, "dqn": DQN}[str(meta.get("algo", "ppo"))]
    path = Path(model_path)
    if not path.exists() and path.with_suffix(".zip").exists():
        path = path.with_suffix(".zip")
    if not path.exists():
        raise ConfigError(f"{model_path}: saved policy not found")
    try:
        model = algo.load(str(path), device="cpu")
    except (ValueError, KeyError, OSError, RuntimeError) as exc:  # not a zip, or not SB3's
        raise ConfigError(f"{path}: not a policy saved by `sloserve train-rl`: {exc}") from None

    def act(obs: np.ndarray) -> int:
        action, _ = model.predict(obs, deterministic=True)
        return int(action)

    return act


def load_rl_scheduler(model_path: str | Path, *, max_queue_size: int = 0) -> RLQosScheduler:
    """A fresh scheduler running the saved policy at ``model_path``."""
    features, meta = load_metadata(model_path)
    return RLQosScheduler(
        features.spec,
        features,
        load_act(model_path),
        rate_tau=float(meta.get("rate_tau", 1.0)),
        max_queue_size=max_queue_size,
    )


class RlSchedulerParams(PolicyParams):
    """``model_path`` (the ``.zip`` written by ``sloserve train-rl``) and ``base_dir`` (what a
    relative ``model_path`` is relative to; default the working directory)."""

    model_path: str
    base_dir: str = "."


def make_rl_scheduler(ctx: PolicyContext, **params: Any) -> RLQosScheduler:
    """Registry factory ``qos_rl`` (:class:`RlSchedulerParams`)."""
    if "model_path" not in params:
        raise ValueError("qos_rl needs params.model_path (a policy saved by `sloserve train-rl`)")
    p = parse_params(RlSchedulerParams, params, "qos_rl")
    path = Path(p.model_path)
    sched = load_rl_scheduler(
        path if path.is_absolute() else Path(p.base_dir) / path, max_queue_size=ctx.max_queue_size
    )
    check_variants_run(sched.spec, ctx, "qos_rl")
    return capped(sched, ctx)
