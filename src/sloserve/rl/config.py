"""The QoS setup file (``sloserve-qos/v1``) read by ``sloserve train-rl`` and ``sloserve experiment qos``.

```yaml
format: sloserve-qos/v1
qos:                      # parameters every QoS scheduler gets (policies.qos.QosParams)
  variants: [{name: mobilenet_v2, accuracy: 0.7188}, {name: resnet50, accuracy: 0.7613}]
  profiles: profiles.yaml # relative to this file, or inline profile entries
  utility: {target_ms: 150, cutoff_ms: 450, alpha: 2, decay: linear}
  batch_sizes: [1, 2, 4, 8, 16, 32]
pool:                     # the heterogeneous servers
  servers: [{hardware: fast, count: 2}, {hardware: slow, count: 2}]
  noise_cv: 0.1
train: {...}              # TrainParams
eval: {...}               # EvalParams (held-out workloads)
triton: {...}             # parameters of the qos_triton baseline
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import Field, model_validator

from sloserve.core.config import ConfigError, Seed, StrictModel, load_model_file
from sloserve.data import TRACES
from sloserve.policies.base import PolicyContext
from sloserve.policies.params import MACHINE_LIMIT
from sloserve.policies.qos import QosSpec, qos_spec_from_params
from sloserve.sim.experiment import MAX_REQUESTS_PER_RUN
from sloserve.sim.hetero import HeteroPool
from sloserve.sim.workload import Workload, from_trace_csv, gamma, mmpp_on_off, piecewise

Positive = Annotated[float, Field(gt=0)]
AboveOne = Annotated[float, Field(gt=1)]


def _bounded(field: str, rate: float, seconds: float) -> None:
    if rate * seconds > MAX_REQUESTS_PER_RUN:
        raise ValueError(
            f"{field}: {rate:g} req/s for {seconds:g} s is {rate * seconds:.3g} requests per run; "
            f"the simulator takes at most {MAX_REQUESTS_PER_RUN:.0e}"
        )


class ServerTypeParams(StrictModel):
    hardware: str = Field(min_length=1, description="hardware type; profiles name it")
    count: int = Field(ge=1, le=MACHINE_LIMIT, description="servers of this type")


class PoolParams(StrictModel):
    servers: list[ServerTypeParams] = Field(min_length=1)
    noise_cv: float = Field(default=0.1, ge=0, description="lognormal noise on service times")


class TrainWorkloadParams(StrictModel):
    """Each training episode draws one workload: bursty on/off (MMPP), piecewise Poisson, or Gamma."""

    rate: tuple[Positive, Positive] = Field(description="req/s range, drawn log-uniformly")
    cv: tuple[Positive, Positive] = Field(default=(1.0, 3.0), description="inter-arrival CV range (Gamma)")
    duration_s: float = Field(default=20.0, gt=0)
    piecewise_share: float = Field(default=0.5, ge=0, le=1, description="share of piecewise episodes")
    segment_s: float = Field(default=4.0, gt=0, description="segment length of piecewise episodes")
    bursty_share: float = Field(default=0.0, ge=0, le=1, description="share of on/off (MMPP) episodes")
    burst_factor: tuple[AboveOne, AboveOne] = Field(
        default=(3.0, 15.0), description="MMPP: range of the ON rate over the mean rate, above 1 (OFF: 0.3x)"
    )

    @model_validator(mode="after")
    def _ranges(self) -> TrainWorkloadParams:
        for name in ("rate", "cv", "burst_factor"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: the range [{low:g}, {high:g}] runs backwards")
        shares = self.bursty_share + self.piecewise_share
        if shares > 1 + 1e-9:
            raise ValueError(
                f"bursty_share + piecewise_share: {self.bursty_share:g} + {self.piecewise_share:g} "
                f"= {shares:g}; the shares must sum to at most 1 (the rest are Gamma episodes)"
            )
        _bounded("rate", self.rate[1] * self.burst_factor[1], self.duration_s)
        return self


class TrainParams(StrictModel):
    algo: Literal["ppo", "dqn"] = "ppo"
    timesteps: int = Field(default=100_000, ge=1, description="decisions to train on")
    seed: Seed = 0
    net: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default=[64, 64], min_length=1, description="hidden layer sizes"
    )
    learning_rate: float = Field(default=1e-4, gt=0)
    gamma: float = Field(default=0.95, gt=0, le=1, description="discount per decision")
    n_steps: int = Field(default=1024, ge=8, description="PPO rollout length")
    batch_size: int = Field(default=256, ge=8)
    n_epochs: int = Field(default=10, ge=1, description="PPO epochs per rollout")
    ent_coef: float = Field(default=0.001, ge=0)
    gae_lambda: float = Field(default=0.95, gt=0, le=1, description="PPO: GAE lambda")
    target_kl: float | None = Field(default=0.02, gt=0, description="PPO: stop an update past this KL")
    rate_tau: float = Field(default=1.0, gt=0, description="time constant of the rate estimate, s")
    imitation_steps: int = Field(
        default=20_000, ge=0, description="PPO: decisions of the heuristic to imitate before RL (0: none)"
    )
    imitation_epochs: int = Field(default=10, ge=1, description="passes over the imitation data")
    workload: TrainWorkloadParams
    out: str = Field(default="results/qos/policy.zip", description="where the policy is saved")


class EvalParams(StrictModel):
    """Held-out workloads: seeds and rates not used in training, and a replayed trace."""

    seeds: list[Seed] = Field(default=[1001, 1002, 1003, 1004, 1005], min_length=1)
    rates: list[Positive] = Field(default=[100.0, 250.0, 450.0], min_length=1)
    cv: float = Field(default=2.0, gt=0)
    duration_s: float = Field(default=30.0, gt=0)
    trace: str | None = Field(
        default=None,
        description="TIMESTAMP CSV, or a shipped trace: azure_code, azure_conv",
    )
    trace_rate: float = Field(default=250.0, gt=0, description="mean rate the trace is scaled to")
    trace_window_s: float = Field(default=600.0, gt=0, description="window of the trace (original time)")

    @model_validator(mode="after")
    def _bounded_runs(self) -> EvalParams:
        _bounded("rates", max(self.rates), self.duration_s)
        return self


class QosSetupFile(StrictModel):
    format: Literal["sloserve-qos/v1"] = "sloserve-qos/v1"
    qos: dict[str, Any]
    pool: PoolParams
    train: TrainParams
    eval: EvalParams = EvalParams()
    triton: dict[str, Any] = Field(default_factory=dict, description="params of the qos_triton baseline")


@dataclass(frozen=True)
class QosSetup:
    """A loaded setup: the file's values and the objects built from them."""

    file: QosSetupFile
    spec: QosSpec
    pool: HeteroPool
    base_dir: Path
    """Directory of the setup file (relative profile and trace paths start there)."""

    def context(self) -> PolicyContext:
        """What the QoS schedulers are built for: one task, the largest batch, the utility's target."""
        spec = self.spec
        return PolicyContext(
            model="task", max_batch=spec.batch_sizes[-1], slo=spec.utility.target, runs_variants=True
        )

    def qos_params(self) -> dict[str, Any]:
        """Scheduler params for the registry's QoS factories (with ``base_dir``)."""
        return {**self.file.qos, "base_dir": str(self.base_dir)}

    def trace_path(self) -> Path | None:
        t = self.file.eval.trace
        if t is None:
            return None
        if t in TRACES:
            return TRACES[t]
        p = Path(t)
        return p if p.is_absolute() else self.base_dir / p


def load_setup(path: str | Path) -> QosSetup:
    """Read and validate a QoS setup file; errors name the file and the section (and field)."""
    from sloserve.policies.registry import make_scheduler

    f = load_model_file(QosSetupFile, path)
    base = Path(path).resolve().parent
    spec = _built(path, "qos", lambda: qos_spec_from_params(f.qos, base))
    servers = tuple(s.hardware for s in f.pool.servers for _ in range(s.count))
    setup = QosSetup(f, spec, _built(path, "pool", lambda: HeteroPool(spec, servers, f.pool.noise_cv)), base)
    _built(
        path,
        "triton",
        lambda: make_scheduler("qos_triton", setup.context(), {**setup.qos_params(), **f.triton}),
    )
    _built(path, "eval.trace", lambda: trace_workloads(setup, f.eval.seeds))
    return setup


_T = TypeVar("_T")


def _built(path: str | Path, section: str, build: Callable[[], _T]) -> _T:
    """``build()``, with what refuses the section's values as a :class:`ConfigError` naming it."""
    try:
        return build()
    except (ValueError, KeyError) as exc:
        text = str(exc.args[0] if exc.args else exc)
        said = text if text.startswith(f"{section}: ") else f"{section}: {text}"
        raise ConfigError(f"{path}: {said}") from None


def training_workload(rng: np.random.Generator, p: TrainWorkloadParams) -> Workload:
    """One episode's workload, drawn from the training distribution with ``rng``."""
    lo, hi = np.log(p.rate[0]), np.log(p.rate[1])
    seed = int(rng.integers(2**31))
    u = rng.random()
    if u < p.bursty_share:
        rate = float(np.exp(rng.uniform(lo, hi)))
        k = float(rng.uniform(*p.burst_factor))
        on_share = 0.7 / (k - 0.3)  # keeps the mean rate at `rate`
        mean_on = float(rng.uniform(0.05, 0.3))
        return mmpp_on_off(
            k * rate, 0.3 * rate, mean_on, mean_on * (1 - on_share) / on_share, p.duration_s, seed
        )
    if u < p.bursty_share + p.piecewise_share:
        n = max(1, int(np.ceil(p.duration_s / p.segment_s)))
        rates = np.exp(rng.uniform(lo, hi, n))
        return piecewise(rates, p.duration_s / n, seed)
    rate = float(np.exp(rng.uniform(lo, hi)))
    cv = float(rng.uniform(*p.cv))
    return gamma(rate, cv, p.duration_s, seed)


def eval_workloads(setup: QosSetup, quick: bool = False) -> list[tuple[str, int, Workload]]:
    """Held-out workloads as (name, seed, workload): Gamma at each eval rate per seed, and the trace."""
    e = setup.file.eval
    seeds = e.seeds[:2] if quick else e.seeds
    duration = min(e.duration_s, 10.0) if quick else e.duration_s
    out = [(f"gamma {r:g}/s cv={e.cv:g}", s, gamma(r, e.cv, duration, s)) for r in e.rates for s in seeds]
    return [*out, *trace_workloads(setup, seeds)]


def trace_workloads(setup: QosSetup, seeds: list[int]) -> list[tuple[str, int, Workload]]:
    """The eval trace's windows as (name, seed, workload), one per seed (none without a trace);
    a missing trace or an empty window is a :class:`ConfigError`."""
    e = setup.file.eval
    trace = setup.trace_path()
    if trace is None:
        return []
    window = e.trace_window_s
    return [
        (
            f"trace {trace.stem} @{e.trace_rate:g}/s",
            s,
            from_trace_csv(trace, target_rate=e.trace_rate, start=k * window, duration=window),
        )
        for k, s in enumerate(seeds)
    ]
