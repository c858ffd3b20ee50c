"""The profile file format (YAML or JSON), shared by the profiler, simulator and planners.

```yaml
format: sloserve-profile/v1
profiles:
  - model: resnet18          # model name
    hardware: cpu            # hardware type name (default "cpu")
    kind: tabulated          # tabulated | affine | sponge
    slowdown: [1.0, 1.7]     # optional s(k): latency factor with k co-located instances
    points:                  # tabulated: measurements (times in milliseconds)
      - {batch: 1, cores: 1, instances: 1, median_ms: 12.1, p99_ms: 13.0}
  - model: mlp
    kind: affine             # latency = alpha_ms + beta_ms * batch
    alpha_ms: 1.0
    beta_ms: 0.25
    tail_factor: 1.1         # p99 / median (default 1)
    max_batch: 64            # at most 4096, as batch sizes in points (MAX_PROFILE_BATCH)
  - model: bert
    kind: sponge             # latency = gamma*b/c + delta*b + epsilon/c + eta
    gamma_ms: 3.0
    delta_ms: 0.1
    epsilon_ms: 2.0
    eta_ms: 0.5
```
Times in files are milliseconds; in memory they are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from sloserve.core.config import ConfigError, StrictModel, read_document, validate, write_document
from sloserve.core.profiles import (
    MAX_PROFILE_BATCH,
    AffineProfile,
    ModelProfile,
    ProfilePoint,
    ProfileSet,
    SpongeProfile,
    TabulatedProfile,
)

FORMAT: Literal["sloserve-profile/v1"] = "sloserve-profile/v1"
MS = 1e-3

PositiveMs = Annotated[float, Field(ge=0)]


class _PointSchema(StrictModel):
    batch: int = Field(ge=1, le=MAX_PROFILE_BATCH)
    cores: int = Field(default=1, ge=1)
    instances: int = Field(default=1, ge=1)
    median_ms: float = Field(gt=0)
    p99_ms: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> _PointSchema:
        if self.p99_ms < self.median_ms:
            raise ValueError(f"p99_ms ({self.p99_ms:g}) is below median_ms ({self.median_ms:g})")
        return self


class _Common(StrictModel):
    model: str = Field(min_length=1)
    hardware: str = "cpu"
    slowdown: tuple[Annotated[float, Field(ge=1.0)], ...] = ()


class _TabulatedSchema(_Common):
    kind: Literal["tabulated"]
    points: list[_PointSchema] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> _TabulatedSchema:
        seen: set[tuple[int, int, int]] = set()
        for i, p in enumerate(self.points):
            key = (p.batch, p.cores, p.instances)
            if key in seen:
                raise ValueError(f"points.{i}: (batch, cores, instances) {key} appears twice")
            seen.add(key)
        return self


class _AffineSchema(_Common):
    kind: Literal["affine"]
    alpha_ms: PositiveMs
    beta_ms: PositiveMs
    tail_factor: float = Field(default=1.0, ge=1.0)
    max_batch: int = Field(default=128, ge=1, le=MAX_PROFILE_BATCH)

    @model_validator(mode="after")
    def _takes_time(self) -> _AffineSchema:
        if self.alpha_ms + self.beta_ms <= 0:
            raise ValueError("alpha_ms + beta_ms must be > 0 (a batch of one would take no time)")
        return self


class _SpongeSchema(_Common):
    kind: Literal["sponge"]
    gamma_ms: PositiveMs
    delta_ms: PositiveMs
    epsilon_ms: PositiveMs
    eta_ms: PositiveMs
    tail_factor: float = Field(default=1.0, ge=1.0)
    max_batch: int = Field(default=128, ge=1, le=MAX_PROFILE_BATCH)

    @model_validator(mode="after")
    def _takes_time(self) -> _SpongeSchema:
        if self.gamma_ms + self.delta_ms + self.epsilon_ms + self.eta_ms <= 0:
            raise ValueError("gamma_ms, delta_ms, epsilon_ms, eta_ms are all 0 (a batch would take no time)")
        return self


_ProfileSchema = Annotated[_TabulatedSchema | _AffineSchema | _SpongeSchema, Field(discriminator="kind")]


class ProfileFileSchema(StrictModel):
    """Top level of a profile file."""

    format: Literal["sloserve-profile/v1"] = FORMAT
    profiles: list[_ProfileSchema] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_each(self) -> ProfileFileSchema:
        seen: set[tuple[str, str]] = set()
        for i, p in enumerate(self.profiles):
            if (p.model, p.hardware) in seen:
                raise ValueError(f"profiles.{i}: a second profile of {p.model!r} on {p.hardware!r}")
            seen.add((p.model, p.hardware))
        return self


def _from_schema(s: _TabulatedSchema | _AffineSchema | _SpongeSchema) -> ModelProfile:
    slowdown = tuple(s.slowdown)
    if isinstance(s, _TabulatedSchema):
        pts = tuple(
            ProfilePoint(p.batch, p.cores, p.instances, p.median_ms * MS, p.p99_ms * MS) for p in s.points
        )
        return TabulatedProfile(model=s.model, points=pts, hardware=s.hardware, slowdown=slowdown)
    if isinstance(s, _AffineSchema):
        return AffineProfile(
            model=s.model,
            alpha=s.alpha_ms * MS,
            beta=s.beta_ms * MS,
            hardware=s.hardware,
            max_batch=s.max_batch,
            tail_factor=s.tail_factor,
            slowdown=slowdown,
        )
    return SpongeProfile(
        model=s.model,
        gamma=s.gamma_ms * MS,
        delta=s.delta_ms * MS,
        epsilon=s.epsilon_ms * MS,
        eta=s.eta_ms * MS,
        hardware=s.hardware,
        max_batch=s.max_batch,
        tail_factor=s.tail_factor,
        slowdown=slowdown,
    )


def profile_to_dict(p: ModelProfile) -> dict[str, Any]:
    """The file form of one profile (milliseconds)."""
    out: dict[str, Any] = {"model": p.model, "hardware": p.hardware}
    if isinstance(p, TabulatedProfile):
        out["kind"] = "tabulated"
        out["points"] = [
            {
                "batch": q.batch,
                "cores": q.cores,
                "instances": q.instances,
                "median_ms": round(q.median / MS, 6),
                "p99_ms": round(q.p99 / MS, 6),
            }
            for q in p.points
        ]
    elif isinstance(p, AffineProfile):
        out |= {
            "kind": "affine",
            "alpha_ms": p.alpha / MS,
            "beta_ms": p.beta / MS,
            "tail_factor": p.tail_factor,
            "max_batch": p.max_batch,
        }
    elif isinstance(p, SpongeProfile):
        out |= {
            "kind": "sponge",
            "gamma_ms": p.gamma / MS,
            "delta_ms": p.delta / MS,
            "epsilon_ms": p.epsilon / MS,
            "eta_ms": p.eta / MS,
            "tail_factor": p.tail_factor,
            "max_batch": p.max_batch,
        }
    else:
        raise TypeError(f"cannot save profile of type {type(p).__name__}")
    slowdown = getattr(p, "slowdown", ())
    if slowdown:
        out["slowdown"] = list(slowdown)
    return out


def profiles_from_data(data: Any, source: str = "<data>") -> ProfileSet:
    """Validate plain data in the profile file format and build a :class:`ProfileSet`."""
    if data is None:
        raise ConfigError(
            f"{source}: the file is empty; a profile file holds 'format: {FORMAT}' and a 'profiles' list"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping with 'format' and 'profiles', got {type(data).__name__} "
            f"{str(data)[:40]!r}"
        )
    parsed = validate(ProfileFileSchema, data, source)
    out = ProfileSet()
    for s in parsed.profiles:
        out.add(_from_schema(s))
    return out


def load_profiles(path: str | Path) -> ProfileSet:
    """Read a profile file; raises ``ConfigError`` naming the file and field on bad input."""
    return profiles_from_data(read_document(path), str(path))


def save_profiles(profiles: ProfileSet | list[ModelProfile], path: str | Path) -> None:
    """Write profiles in the file format (JSON for ``.json``, YAML otherwise)."""
    items = list(profiles.profiles.values()) if isinstance(profiles, ProfileSet) else profiles
    write_document({"format": FORMAT, "profiles": [profile_to_dict(p) for p in items]}, path)
