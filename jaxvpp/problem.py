"""Problem data: the battery fleet, the price scenarios and the solve settings.

These are plain pytrees (``NamedTuple`` of arrays), so they pass through ``jax.jit``, ``jax.vmap`` and
``jax.grad`` unchanged. Units are stated per field: MW for power, MWh for energy, EUR/MWh for prices,
hours for time.

The model (one battery ``i``, steps ``t = 1..T`` of ``dt`` hours; symbols as in the documentation's model page, ``docs/model.md``):

* charge ``c_t >= 0`` and discharge ``d_t >= 0`` (MW), net injection ``p_t = d_t - c_t``;
* ``c_t, d_t <= P``; ramp ``|p_t - p_{t-1}| <= R dt`` for ``t >= 2`` (no limit when ``R = inf``);
* ``e_t = e_0 + dt sum_{s<=t} (eta_c c_s - d_s / eta_d)``, ``soc_min E <= e_t <= soc_max E``, ``e_T >= e_0``;
* scenario revenue ``Rev_k = dt sum_t pi_kt p_t``; loss ``Loss_k = b - Rev_k`` with baseline ``b = 0`` or
  ``b = E[Rev]`` (``baseline="expected"``);
* ``CVaR_alpha = min_eta eta + (1/alpha) sum_k w_k max(Loss_k - eta, 0)`` (Rockafellar-Uryasev);
* minimise ``-sum_k w_k Rev_k + lambda CVaR + deg dt sum_t (c_t + d_t) + (q/2) dt sum_t (c_t^2 + d_t^2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

#: Seed battery and defaults of every fleet column (a missing column or empty cell takes these).
DEFAULTS: dict[str, float] = {
    "capacity_mwh": 2.0,
    "power_mw": 1.8,
    "ramp_mw_per_h": 1.8,
    "soc_min": 0.1,
    "soc_max": 0.9,
    "soc_initial": 0.5,
    "eta_charge": 0.85,
    "eta_discharge": 0.90,
    "risk_weight": 0.5,
    "degradation_eur_per_mwh": 1.0,
    "quadratic_cost_eur_per_mw2h": 0.01,
}

#: Fleet columns in file order (``battery_id`` comes first and is kept outside the numeric pytree).
FLEET_COLUMNS: tuple[str, ...] = tuple(DEFAULTS)


class Fleet(NamedTuple):
    """Battery parameters, one entry per battery (arrays of shape ``(N,)``, or scalars for one battery).

    ``ramp_mw_per_h = inf`` means no ramp limit.
    """

    capacity_mwh: Array  #: usable energy capacity E (MWh)
    power_mw: Array  #: charge and discharge power limit P (MW)
    ramp_mw_per_h: Array  #: ramp limit R (MW/h); inf = none
    soc_min: Array  #: lower state-of-charge bound (fraction of E)
    soc_max: Array  #: upper state-of-charge bound (fraction of E)
    soc_initial: Array  #: initial state of charge (fraction of E); also the end-of-horizon floor
    eta_charge: Array  #: charge efficiency in (0, 1]
    eta_discharge: Array  #: discharge efficiency in (0, 1]
    risk_weight: Array  #: CVaR weight lambda (dimensionless, >= 0)
    degradation_eur_per_mwh: Array  #: throughput cost deg (EUR/MWh)
    quadratic_cost_eur_per_mw2h: Array  #: quadratic power cost q (EUR/(MW^2 h))

    @property
    def size(self) -> int:
        """Number of batteries (1 for a single unbatched battery)."""
        shape = jnp.shape(self.capacity_mwh)
        return int(shape[0]) if shape else 1


class Market(NamedTuple):
    """Price scenarios shared by the fleet."""

    prices: Array  #: (K, T) scenario prices pi_kt (EUR/MWh)
    probabilities: Array  #: (K,) scenario probabilities w_k (sum to 1)

    @property
    def horizon(self) -> int:
        """Number of time steps T."""
        return int(jnp.shape(self.prices)[-1])

    @property
    def num_scenarios(self) -> int:
        """Number of scenarios K."""
        return int(jnp.shape(self.prices)[-2])


@dataclass(frozen=True)
class Settings:
    """Solve settings: a JAX pytree whose numbers are traced (not baked into the compiled program).

    ``dt_hours`` and ``alpha`` are array leaves, so changing them does not recompile, a sweep can
    ``vmap`` over them and gradients flow to them; ``baseline`` selects the model's form and is static.

    Attributes:
        dt_hours: step length dt (hours); 1.0 for hourly, 0.25 for 15-minute products.
        alpha: CVaR tail probability (0.05 = the worst 5 % of outcomes).
        baseline: ``"zero"`` (Loss = -Revenue) or ``"expected"`` (Loss = E[Revenue] - Revenue).
    """

    dt_hours: float = 1.0
    alpha: float = 0.05
    baseline: str = "zero"

    def __post_init__(self) -> None:
        if self.baseline not in ("zero", "expected"):
            raise ValueError(f"baseline must be 'zero' or 'expected', got {self.baseline!r}")
        # numbers given by a user are checked; traced values (inside jit/vmap/grad) are not
        if isinstance(self.dt_hours, (int, float)) and not (self.dt_hours > 0 and math.isfinite(self.dt_hours)):
            raise ValueError(f"dt_hours must be positive and finite, got {self.dt_hours}")
        if isinstance(self.alpha, (int, float)) and not (0.0 < self.alpha < 1.0):
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")


jax.tree_util.register_dataclass(Settings, data_fields=["dt_hours", "alpha"], meta_fields=["baseline"])


def make_fleet(n: int = 1, **overrides: float | np.ndarray) -> Fleet:
    """A fleet of ``n`` batteries with default parameters, any column overridden by a scalar or array."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown fleet parameter(s): {sorted(unknown)}")
    cols = {}
    for name, default in DEFAULTS.items():
        value = np.asarray(overrides.get(name, default), dtype=np.float64)
        cols[name] = jnp.asarray(np.broadcast_to(value, (n,)).copy())
    return Fleet(**cols)


def random_fleet(n: int, seed: int = 0, *, spread: float = 1.0) -> Fleet:
    """A heterogeneous fleet: seed-battery parameters spread realistically (reproducible by ``seed``).

    ``spread = 0`` returns copies of the seed battery. About 10 % of batteries get no ramp limit.
    """
    rng = np.random.default_rng(seed)

    def around(x: float, rel: float) -> np.ndarray:
        return x * np.exp(spread * rel * rng.standard_normal(n))

    capacity = around(2.0, 0.5)
    c_rate = np.clip(around(0.9, 0.3), 0.25, 2.0)  # P / E in 1/h
    power = capacity * c_rate
    ramp = power * np.clip(around(1.0, 0.3), 0.3, 2.0)
    ramp = np.where(rng.random(n) < 0.1 * min(spread, 1.0), np.inf, ramp)
    soc_min = np.clip(0.1 + spread * 0.05 * rng.standard_normal(n), 0.0, 0.3)
    soc_max = np.clip(0.9 + spread * 0.05 * rng.standard_normal(n), 0.7, 1.0)
    soc_initial = soc_min + (soc_max - soc_min) * np.clip(0.5 + spread * 0.2 * rng.standard_normal(n), 0.05, 0.95)
    eta_c = np.clip(0.85 + spread * 0.05 * rng.standard_normal(n), 0.7, 0.99)
    eta_d = np.clip(0.90 + spread * 0.04 * rng.standard_normal(n), 0.75, 0.99)
    risk = np.clip(around(0.5, 0.8), 0.0, 5.0)
    deg = np.clip(around(1.0, 0.5), 0.0, 20.0)
    q = np.clip(around(0.01, 0.5), 0.0, 1.0)
    return make_fleet(
        n,
        capacity_mwh=capacity,
        power_mw=power,
        ramp_mw_per_h=ramp,
        soc_min=soc_min,
        soc_max=soc_max,
        soc_initial=soc_initial,
        eta_charge=eta_c,
        eta_discharge=eta_d,
        risk_weight=risk,
        degradation_eur_per_mwh=deg,
        quadratic_cost_eur_per_mw2h=q,
    )


def synthetic_market(num_scenarios: int = 20, horizon: int = 24, seed: int = 0, *, dt_hours: float = 1.0) -> Market:
    """Quick price scenarios with a daily shape, scenario spread and occasional spikes (EUR/MWh).

    For tests and examples; the realistic generator and forecaster live in ``jaxvpp.market.ingress`` and
    ``jaxvpp.market.forecasting``.
    """
    rng = np.random.default_rng(seed)
    hours = (np.arange(horizon) + 0.5) * dt_hours
    shape = 80 + 30 * np.sin(2 * np.pi * (hours - 8) / 24) + 25 * np.exp(-((hours - 19) ** 2) / 4)
    level = rng.normal(0, 15, size=(num_scenarios, 1))
    noise = rng.normal(0, 12, size=(num_scenarios, horizon))
    spikes = (rng.random((num_scenarios, horizon)) < 0.03) * rng.exponential(150, (num_scenarios, horizon))
    prices = shape[None, :] + level + noise + spikes
    w = rng.random(num_scenarios) + 0.2
    return Market(prices=jnp.asarray(prices), probabilities=jnp.asarray(w / w.sum()))


def fleet_take(fleet: Fleet, index: int | np.ndarray) -> Fleet:
    """The sub-fleet at ``index`` (an integer keeps a single unbatched battery)."""
    return Fleet(*(jnp.asarray(a)[index] for a in fleet))
