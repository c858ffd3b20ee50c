"""Latency profiles: fitting, interpolation, the profile file format and its errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from sloserve.core.config import ConfigError
from sloserve.core.profile_io import load_profiles, profiles_from_data, save_profiles
from sloserve.core.profiles import (
    AffineProfile,
    CostedProfile,
    ProfilePoint,
    ProfileSet,
    SpongeProfile,
    TabulatedProfile,
    fit_affine,
    fit_sponge,
    max_batch_within,
    throughput,
)
from sloserve.sim.bounds import fluid_ceiling

MS = 1e-3


def test_fit_affine_recovers_known_coefficients() -> None:
    pts = [ProfilePoint(b, 1, 1, 0.004 + 0.0015 * b, (0.004 + 0.0015 * b) * 1.2) for b in (1, 2, 4, 8, 16)]
    p = fit_affine("m", pts)
    assert p.alpha == pytest.approx(0.004, rel=1e-6)
    assert p.beta == pytest.approx(0.0015, rel=1e-6)
    assert p.tail_factor == pytest.approx(1.2)
    assert p.max_batch == 16
    with pytest.raises(ValueError, match=">= 2 points"):
        fit_affine("m", pts[:1])


def test_fit_sponge_recovers_known_coefficients() -> None:
    g, d, e, h = 0.003, 0.0002, 0.002, 0.0005
    pts = [
        ProfilePoint(b, c, 1, g * b / c + d * b + e / c + h, 2 * (g * b / c + d * b + e / c + h))
        for b in (1, 2, 4, 8)
        for c in (1, 2, 4)
    ]
    p = fit_sponge("m", pts)
    assert (p.gamma, p.delta, p.epsilon, p.eta) == pytest.approx((g, d, e, h), rel=1e-5)
    assert p.latency(8, 4) == pytest.approx(g * 2 + d * 8 + e / 4 + h)
    with pytest.raises(ValueError, match=">= 4 points"):
        fit_sponge("m", pts[:3])


def test_slowdown_applies_to_co_located_instances() -> None:
    p = AffineProfile("m", alpha=0.01, beta=0.0, slowdown=(1.0, 1.5, 2.5))
    assert [p.latency(1, 1, k) for k in (1, 2, 3, 4)] == pytest.approx([0.01, 0.015, 0.025, 0.035])
    assert throughput(p, 1, 1, 2) == pytest.approx(2 / 0.015)


def test_tabulated_interpolates_in_batch_and_inverse_cores() -> None:
    pts = (
        ProfilePoint(1, 1, 1, 0.010, 0.012),
        ProfilePoint(4, 1, 1, 0.016, 0.020),
        ProfilePoint(1, 4, 1, 0.004, 0.005),
        ProfilePoint(4, 4, 1, 0.010, 0.011),
        ProfilePoint(1, 1, 2, 0.018, 0.022),
    )
    p = TabulatedProfile("m", pts, slowdown=(1.0, 1.8, 2.4))
    assert p.latency(1) == pytest.approx(0.010)
    assert p.latency(2) == pytest.approx(0.012)  # linear between 1 and 4
    assert p.latency(8) == pytest.approx(0.024)  # extrapolates with the last slope
    assert p.tail_latency(4) == pytest.approx(0.020)
    # 2 cores: weight on 1/c between 1/1 and 1/4 -> (1/2 - 1/4) / (1 - 1/4) = 1/3 on the 1-core value
    assert p.latency(1, 2) == pytest.approx(0.010 / 3 + 0.004 * 2 / 3)
    assert p.latency(1, 16) == pytest.approx(0.004)  # clamps outside measured cores
    assert p.latency(1, 1, 2) == pytest.approx(0.018)  # measured at k = 2
    assert p.latency(1, 1, 3) == pytest.approx(0.018 * 2.4 / 1.8)  # nearest k, rescaled by s(k)
    assert p.max_batch == 4
    with pytest.raises(ValueError, match="at least one point"):
        TabulatedProfile("m", ())


def test_max_batch_within_budget() -> None:
    p = AffineProfile("m", alpha=0.01, beta=0.002, max_batch=64, tail_factor=1.5)
    # tail: (0.01 + 0.002 b) * 1.5 <= 0.06  ->  b <= 15
    assert max_batch_within(p, 0.06) == 15
    assert max_batch_within(p, 0.0601, tail=False) == 25
    assert max_batch_within(p, 0.001) == 0


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_profile_file_round_trip(tmp_path: Path, suffix: str) -> None:
    tab = TabulatedProfile(
        "resnet",
        (ProfilePoint(1, 1, 1, 0.0121, 0.013), ProfilePoint(8, 2, 1, 0.05, 0.06)),
        slowdown=(1.0, 1.7),
    )
    aff = AffineProfile("mlp", alpha=0.001, beta=0.00025, max_batch=64, tail_factor=1.1, hardware="gpu")
    spo = SpongeProfile("bert", gamma=0.003, delta=0.0001, epsilon=0.002, eta=0.0005, max_batch=16)
    path = tmp_path / f"profiles{suffix}"
    save_profiles([tab, aff, spo], path)
    back = load_profiles(path)
    assert len(back) == 3 and back.models() == ["bert", "mlp", "resnet"]
    for orig in (tab, aff, spo):
        got = back.get(orig.model)
        assert type(got) is type(orig) and got.hardware == orig.hardware and got.max_batch == orig.max_batch
        for b, c, k in ((1, 1, 1), (4, 2, 1), (8, 2, 2)):
            assert got.latency(b, c, k) == pytest.approx(orig.latency(b, c, k))
            assert got.tail_latency(b, c, k) == pytest.approx(orig.tail_latency(b, c, k))
    assert back.hardware_for("mlp") == ["gpu"]


def test_documented_example_loads(tmp_path: Path) -> None:
    import sloserve.core.profile_io as pio

    doc = pio.__doc__ or ""
    example = doc.split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    ps = load_profiles(path)
    assert ps.get("resnet18").latency(1) == pytest.approx(12.1 * MS)
    assert ps.get("mlp").latency(4) == pytest.approx((1.0 + 4 * 0.25) * MS)


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"model": "m", "kind": "affine", "alpha_ms": -1, "beta_ms": 1}, "profiles.0.affine.alpha_ms"),
        ({"model": "m", "kind": "affine", "alpha_ms": 1}, "profiles.0.affine.beta_ms"),
        ({"model": "m", "kind": "tabulated", "points": []}, "profiles.0.tabulated.points"),
        (
            {"model": "m", "kind": "tabulated", "points": [{"batch": 0, "median_ms": 1, "p99_ms": 1}]},
            "profiles.0.tabulated.points.0.batch",
        ),
        ({"model": "m", "kind": "cubic"}, "profiles.0"),
        (
            {"model": "m", "kind": "affine", "alpha_ms": 1, "beta_ms": 1, "colour": "red"},
            "profiles.0.affine.colour",
        ),
        ({"model": "m", "kind": "affine", "alpha_ms": 1, "beta_ms": 1, "slowdown": [0.5]}, "slowdown.0"),
        ({"model": "m", "kind": "affine", "alpha_ms": 0, "beta_ms": 0}, "alpha_ms + beta_ms must be > 0"),
        (
            {"model": "m", "kind": "affine", "alpha_ms": math.inf, "beta_ms": 1},
            "alpha_ms: Input should be a finite number",
        ),
        (
            {"model": "m", "kind": "sponge", "gamma_ms": 0, "delta_ms": 0, "epsilon_ms": 0, "eta_ms": 0},
            "are all 0",
        ),
        (
            {"model": "m", "kind": "tabulated", "points": [{"batch": 1, "median_ms": 2, "p99_ms": 1}]},
            "p99_ms (1) is below median_ms (2)",
        ),
        (
            {"model": "m", "kind": "tabulated", "points": [{"batch": 1, "median_ms": 1, "p99_ms": 1}] * 2},
            "points.1: (batch, cores, instances) (1, 1, 1) appears twice",
        ),
    ],
)
def test_bad_profile_file_names_file_and_field(
    tmp_path: Path, profile: dict[str, object], field: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"profiles": [profile]}))
    with pytest.raises(ConfigError) as err:
        load_profiles(path)
    assert str(path) in str(err.value)
    assert field in str(err.value)


def test_two_profiles_of_one_model_on_one_hardware_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    one = {"model": "m", "hardware": "cpu", "kind": "affine", "alpha_ms": 1, "beta_ms": 1}
    path.write_text(yaml.safe_dump({"profiles": [one, {**one, "alpha_ms": 2}]}))
    with pytest.raises(ConfigError, match=r"twice.yaml: profiles.1: a second profile of 'm' on 'cpu'"):
        load_profiles(path)


def test_unreadable_profile_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_profiles(tmp_path / "none.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_profiles(bad)
    with pytest.raises(ConfigError, match="format"):
        profiles_from_data(
            {"format": "v0", "profiles": [{"model": "m", "kind": "affine", "alpha_ms": 1, "beta_ms": 1}]}
        )


def test_profile_set_lookup_errors() -> None:
    ps = ProfileSet()
    ps.add(AffineProfile("m", 0.01, 0.0, hardware="cpu"))
    ps.add(AffineProfile("m", 0.005, 0.0, hardware="gpu"))
    assert ps.get("m", "gpu").latency(1) == pytest.approx(0.005)
    with pytest.raises(KeyError, match="several hardware"):
        ps.get("m")
    with pytest.raises(KeyError, match="no profile for model 'x'"):
        ps.get("x")
    with pytest.raises(KeyError, match="on hardware 'tpu'"):
        ps.get("m", "tpu")


def test_tabulated_lookups_are_memoised_and_exact() -> None:
    """The memo returns what the interpolation computes, for every kind of lookup (measured point,
    between points, past the last point, between core counts, other instance counts)."""
    points = tuple(
        ProfilePoint(b, c, 1, 0.001 * (1 + b) / c, 0.0013 * (1 + b) / c) for b in (1, 2, 4, 8) for c in (1, 4)
    )
    profile = TabulatedProfile("m", points, slowdown=(1.0, 1.3))
    for batch in (1, 3, 8, 12):
        for cores in (1, 2, 4, 6):
            for instances in (1, 2, 3):
                for tail in (False, True):
                    want = profile._lookup(batch, cores, instances, tail=tail)
                    ask = profile.tail_latency if tail else profile.latency
                    assert ask(batch, cores, instances) == want
                    assert ask(batch, cores, instances) == want  # served from the memo
    assert profile == TabulatedProfile("m", points, slowdown=(1.0, 1.3))  # the memo is not compared


def test_a_costed_profile_adds_the_servers_costs_to_every_batch() -> None:
    base = AffineProfile("m", alpha=2 * MS, beta=1 * MS, tail_factor=1.5, max_batch=16, hardware="cpu")
    costed = CostedProfile(base, per_row=0.5 * MS, per_batch=0.3 * MS)
    assert costed.latency(4) == pytest.approx((2 + 4 + 0.3 + 4 * 0.5) * MS)
    assert costed.tail_latency(4) == pytest.approx(1.5 * (2 + 4) * MS + (0.3 + 4 * 0.5) * MS)
    assert (costed.model, costed.hardware, costed.max_batch) == ("m", "cpu", 16)
    assert CostedProfile(base, per_row=0.0).latency(8, 2) == base.latency(8, 2)
    with pytest.raises(ValueError, match=r"per_row=-0\.001"):
        CostedProfile(base, per_row=-1 * MS)


def test_the_servers_costs_lower_the_fluid_ceiling_as_the_batches_they_allow_say() -> None:
    base = AffineProfile("m", alpha=2 * MS, beta=1 * MS, max_batch=64)
    slo = 20.2 * MS
    # alone: batch 18 fits (2 + 18 = 20 ms), 900 rows/s; with 0.25 ms per row and 1 ms per batch
    # batch 13 is the largest that fits (2 + 1 + 13 * 1.25 = 19.25 ms): 13 / 19.25 ms
    assert fluid_ceiling(base, slo) == pytest.approx(18 / (20 * MS))
    costed = CostedProfile(base, per_row=0.25 * MS, per_batch=1 * MS)
    assert max_batch_within(costed, slo, tail=False) == 13
    assert fluid_ceiling(costed, slo) == pytest.approx(13 / (19.25 * MS))


def test_extrapolation_past_the_largest_batch_never_falls() -> None:
    """Found by review: points that fell at their end (2.0, 3.0, 2.5 ms) extrapolated to a negative
    latency at batch 16, which crashed the simulator and the capacity search."""
    from sloserve.core.profiles import ProfilePoint, TabulatedProfile

    ms = 1e-3
    points = [ProfilePoint(b, 1, 1, t * ms, t * 1.1 * ms) for b, t in ((1, 2.0), (2, 3.0), (4, 2.5))]
    points.append(ProfilePoint(16, 2, 1, 6.0 * ms, 6.6 * ms))  # max_batch 16 comes from 2 cores
    profile = TabulatedProfile("m", tuple(points))
    assert profile.latency(16, 1, 1) == pytest.approx(10.0 * ms)  # 2.5 ms for 4 rows, per row
    assert profile.tail_latency(16, 1, 1) >= profile.latency(16, 1, 1) > profile.latency(4, 1, 1)
    rising = TabulatedProfile("r", tuple(ProfilePoint(b, 1, 1, b * ms, b * ms) for b in (1, 2, 4)))
    assert rising.latency(8) == pytest.approx(8 * ms)  # a rising table extrapolates along its slope
