"""Physical results of the battery solver (MW, MWh, EUR) and :func:`solve_batteries`, its entry point."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jax import Array

from jaxvpp.battery.implicit import solve_fleet_qp
from jaxvpp.battery.qp import FLEET_QP_AXES, Primal, build_qp
from jaxvpp.problem import Fleet, Market, Settings

# --------------------------------------------------------------------------------------------------
# Physical results
# --------------------------------------------------------------------------------------------------


def cvar(losses: Array, probabilities: Array, alpha: float) -> Array:
    """Exact CVaR (EUR) of a discrete loss distribution at tail probability ``alpha``.

    ``min_eta eta + (1/alpha) sum_k w_k max(L_k - eta, 0)``; the minimum is attained at one of the
    ``L_k``, so it is evaluated there (piecewise linear, differentiable almost everywhere).
    """
    excess = jnp.maximum(losses[None, :] - losses[:, None], 0.0)  # [j, k] = max(L_k - L_j, 0)
    return jnp.min(losses + excess @ probabilities / alpha)


class BatterySolution(NamedTuple):
    """A battery's optimal schedule and its economics (batched over the fleet when vmapped)."""

    charge_mw: Array  #: (T,) c_t (MW)
    discharge_mw: Array  #: (T,) d_t (MW)
    net_mw: Array  #: (T,) p_t = d_t - c_t (MW)
    soc_mwh: Array  #: (T,) e_t after step t (MWh)
    objective_eur: Array  #: the minimised objective (EUR), without coordination terms
    expected_revenue_eur: Array  #: sum_k w_k Rev_k (EUR)
    cvar_eur: Array  #: CVaR_alpha of the loss (EUR)
    degradation_eur: Array  #: deg dt sum (c + d) + q/2 dt sum (c^2 + d^2) (EUR)
    iterations: Array  #: interior-point iterations
    converged: Array  #: bool
    primal_residual: Array
    dual_residual: Array
    gap: Array


def schedule_metrics(
    battery: Fleet, market: Market, settings: Settings, charge: Array, discharge: Array
) -> dict[str, Array]:
    """Economics of a schedule of one battery: SoC (MWh), revenue, CVaR, costs and objective (EUR)."""
    dt = settings.dt_hours
    prices, w = jnp.asarray(market.prices), jnp.asarray(market.probabilities)
    p = discharge - charge
    soc = battery.soc_initial * battery.capacity_mwh + dt * jnp.cumsum(
        battery.eta_charge * charge - discharge / battery.eta_discharge
    )
    revenue = dt * prices @ p  # (K,)
    expected = w @ revenue
    losses = (expected - revenue) if settings.baseline == "expected" else -revenue
    cv = cvar(losses, w, settings.alpha)
    cost = battery.degradation_eur_per_mwh * dt * jnp.sum(charge + discharge) + 0.5 * (
        battery.quadratic_cost_eur_per_mw2h * dt * jnp.sum(charge**2 + discharge**2)
    )
    obj = -expected + battery.risk_weight * cv + cost
    return dict(
        net_mw=p, soc_mwh=soc, expected_revenue_eur=expected, cvar_eur=cv, degradation_eur=cost, objective_eur=obj
    )


@jax.jit
def fleet_metrics(
    fleet: Fleet, market: Market, settings: Settings, charge: Array, discharge: Array
) -> dict[str, Array]:
    """:func:`schedule_metrics` of every battery (leading battery axis; schedules (N, T) in MW), as one compiled
    program (run op by op, the vmapped metrics would compile dozens of small programs per call site)."""
    return jax.vmap(lambda b, c, d: schedule_metrics(b, market, settings, c, d))(fleet, charge, discharge)


@functools.partial(jax.jit, static_argnames=("tol", "max_iter", "warm_margin", "return_state", "chunk_size"))
def solve_batteries(
    fleet: Fleet,
    market: Market,
    settings: Settings = Settings(),
    *,
    linear_price: Array | None = None,
    prox_weight: Array | None = None,
    prox_center: Array | None = None,
    warm_start: tuple[Primal, Array, Array] | None = None,
    tol: float = 1e-9,
    max_iter: int = 80,
    warm_margin: float = 1e-4,
    return_state: bool = False,
    chunk_size: int = 256,
):
    """Solve every battery's risk-aware problem at once (vmapped, jitted, differentiable).

    Args:
        fleet: battery parameters, fields of shape (N,).
        market: prices (K, T) EUR/MWh and probabilities (K,), shared by the fleet.
        settings: dt (hours), alpha, baseline (static).
        linear_price: optional (N, T) extra cost per MW of p_t (EUR/MW), e.g. a coordination price.
        prox_weight: optional (N, T) or (N,) proximal weight (EUR/MW^2) on ``|p - prox_center|^2 / 2``.
        prox_center: optional (N, T) proximal centre (MW).
        warm_start: the solver state of an earlier call (``return_state=True``) to start from.
        tol: relative tolerance on primal and dual residuals and the complementarity gap.
        max_iter: iteration limit per battery.
        warm_margin: how far a warm start is pushed into the interior (scaled units).
        return_state: also return the final solver state, for warm starts.
        chunk_size: batteries solved at once (a lock-step batch whose slots take the next battery in line as
            soon as theirs has converged: :func:`ipm_solve_fleet`).

    Returns:
        BatterySolution: the fleet's schedules and economics, with a leading battery axis; with
            ``return_state=True`` the pair ``(solution, state)``, the state being what ``warm_start`` takes.
    """
    N = fleet.size
    T = market.horizon
    if prox_weight is not None:
        prox_weight = jnp.broadcast_to(jnp.asarray(prox_weight), (N, T)) if jnp.ndim(prox_weight) != 2 else prox_weight

    def build(b, lp, pw, pc):
        return build_qp(b, market, settings, lp, pw, pc)

    qp, sc = jax.vmap(build, out_axes=(FLEET_QP_AXES, 0))(fleet, linear_price, prox_weight, prox_center)
    x, _, st = solve_fleet_qp(qp, warm_start, tol, max_iter, warm_margin, chunk_size)
    charge, discharge = x.c * sc.power[:, None], x.d * sc.power[:, None]
    met = fleet_metrics(fleet, market, settings, charge, discharge)
    sol = BatterySolution(
        charge_mw=charge,
        discharge_mw=discharge,
        net_mw=met["net_mw"],
        soc_mwh=met["soc_mwh"],
        objective_eur=met["objective_eur"],
        expected_revenue_eur=met["expected_revenue_eur"],
        cvar_eur=met["cvar_eur"],
        degradation_eur=met["degradation_eur"],
        iterations=st.iterations,
        converged=st.converged,
        primal_residual=st.primal_residual,
        dual_residual=st.dual_residual,
        gap=st.gap,
    )
    return (sol, (st.x, st.s, st.z)) if return_state else sol
