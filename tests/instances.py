"""Seeded coordination instances: heterogeneous fleets with binding, feasible community targets.

Shared by the coordination tests. Few distinct shapes, so that few programs are compiled.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxvpp.battery.solution import solve_batteries
from jaxvpp.problem import Settings, make_fleet, random_fleet, synthetic_market

#: (N, K, T, dt): N from 2 to 300, K from 1 to 30, 24 hourly and 96 quarter-hourly steps
SHAPES = [
    (2, 6, 24, 1.0),
    (8, 5, 96, 0.25),
    (25, 1, 24, 1.0),
    (60, 30, 24, 1.0),
    (300, 20, 24, 1.0),
    (13, 12, 96, 0.25),
    (120, 8, 24, 1.0),
]
TARGET_KINDS = ("scaled", "blend")


def make_instance(seed: int, shape: tuple[int, int, int, float], mixed: bool = False, kind: str = "scaled"):
    """A fleet, market, settings and target (MW per step).

    ``kind="scaled"``: the target is theta times the uncoordinated fleet profile. ``kind="blend"``: a
    convex combination (with weight left on the zero schedule) of the uncoordinated profiles under this
    market and under another day's prices, so its shape differs from what the fleet wants. Both are
    feasible (every battery's schedule scaled towards zero stays feasible, and a convex combination of
    feasible schedules is feasible) and binding. ``mixed`` adds pure-LP (q = 0) and risk-neutral
    (lambda = 0) batteries; every fleet has a battery without a ramp limit.
    """
    rng = np.random.default_rng(seed)
    N, K, T, dt = shape
    fleet = random_fleet(N, seed=seed)
    fleet = fleet._replace(ramp_mw_per_h=fleet.ramp_mw_per_h.at[-1].set(jnp.inf))
    if mixed:
        n0 = max(1, N // 5)
        fleet = fleet._replace(
            quadratic_cost_eur_per_mw2h=fleet.quadratic_cost_eur_per_mw2h.at[:n0].set(0.0),
            risk_weight=fleet.risk_weight.at[-n0:].set(0.0),
        )
    market = synthetic_market(K, T, seed=seed, dt_hours=dt)
    settings = Settings(dt_hours=dt, alpha=float(rng.choice([0.05, 0.1, 0.25])))
    free = np.asarray(jnp.sum(solve_batteries(fleet, market, settings).net_mw, axis=0))
    if kind == "scaled":
        target = float(rng.uniform(0.2, 0.8)) * free
    elif kind == "blend":
        other = synthetic_market(K, T, seed=seed + 10_000, dt_hours=dt)
        free2 = np.asarray(jnp.sum(solve_batteries(fleet, other, settings).net_mw, axis=0))
        a, b = rng.uniform(0.1, 0.5, size=2)
        target = a * free + b * free2
    else:
        raise ValueError(kind)
    return fleet, market, settings, target


def random_instance(seed: int):
    """Instance ``seed`` of the test set: shape by ``seed % len(SHAPES)``, mixed and target kind drawn."""
    rng = np.random.default_rng(10_000 + seed)
    shape = SHAPES[seed % len(SHAPES)]
    mixed = bool(rng.random() < 0.5)
    kind = TARGET_KINDS[int(rng.integers(len(TARGET_KINDS)))]
    return make_instance(seed, shape, mixed=mixed, kind=kind)


#: fleets whose batteries share their efficiencies: identical copies, or sizes in proportion 2 : 1 : 1
ROUNDOFF_KINDS = ("identical", "proportional")


def roundoff_instance(seed: int, kind: str, theta: float = 0.5, shape: tuple[int, int, float] = (20, 24, 1.0)):
    """A fleet of three batteries with the same efficiencies and a target of ``theta`` times its own
    uncoordinated net power, unrounded (the idle steps carry round-off such as 1e-11 MW).

    Such a target leaves the fleet no slack in energy: every battery must end the day as full as it began,
    and with equal efficiencies no shift between batteries creates any; the plain coupled problem then has
    an unbounded set of multipliers.
    """
    K, T, dt = shape
    if kind == "identical":
        fleet = make_fleet(3, capacity_mwh=1.0, power_mw=0.5)
    elif kind == "proportional":
        fleet = make_fleet(3, capacity_mwh=np.array([2.0, 1.0, 1.0]), power_mw=np.array([1.0, 0.5, 0.5]))
    else:
        raise ValueError(kind)
    market = synthetic_market(K, T, seed=seed, dt_hours=dt)
    settings = Settings(dt_hours=dt)
    free = np.asarray(jnp.sum(solve_batteries(fleet, market, settings).net_mw, axis=0))
    return fleet, market, settings, theta * free
