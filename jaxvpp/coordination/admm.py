"""ADMM baseline (exchange form with residual balancing) for coordinating the fleet to a target."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

from jaxvpp.battery.solution import solve_batteries
from jaxvpp.coordination.aladin import History, log_iteration
from jaxvpp.problem import Fleet, Market, Settings

# --------------------------------------------------------------------------------------------------
# ADMM baseline (exchange form with residual balancing)
# --------------------------------------------------------------------------------------------------


class ADMMCarry(NamedTuple):
    """What one ADMM iteration hands the next (and what a warm start supplies)."""

    p: Array  #: (N, T) net powers (MW)
    price: Array  #: (T,) y: price on p (EUR/MW)
    rho: Array  #: () penalty (EUR/MW^2)
    warm: tuple  #: the local solver's state, for warm-started local solves


class ADMMState(NamedTuple):
    carry: ADMMCarry
    iteration: Array
    primal_residual: Array
    dual_residual: Array
    converged: Array
    history: History


def admm_start(fleet: Fleet, market: Market, settings: Settings) -> ADMMCarry:
    """ADMM's cold start: every battery's uncoordinated optimum, zero price, a penalty from the price level."""
    sol0, warm0 = solve_batteries(fleet, market, settings, return_state=True)
    rho0 = 0.1 * settings.dt_hours * jnp.mean(jnp.abs(market.prices)) / jnp.maximum(jnp.mean(fleet.power_mw), 1e-3)
    return ADMMCarry(sol0.net_mw, jnp.zeros(market.horizon), jnp.asarray(rho0, dtype=jnp.float64), warm0)


def admm_step(
    fleet: Fleet, market: Market, settings: Settings, target_mw: Array, st: ADMMCarry, tol: float
) -> tuple[ADMMCarry, Array, Array, Array, Array, Array]:
    """One exchange-ADMM iteration: local solves with the price and a proximal term (warm-started), the
    price update by the mismatch, and residual balancing of the penalty (x2 or /2 when the primal and dual
    residuals differ by more than 10x).

    Returns the next carry, the primal and dual residuals, the coupling residual (MW, max over steps), the
    fleet objective (EUR) and whether both the coupling residual per battery and the dual residual are
    below ``tol`` (MW).
    """
    N, T = fleet.size, market.horizon
    r = (jnp.sum(st.p, axis=0) - target_mw) / N
    center = st.p - r[None, :]
    sol, warm = solve_batteries(
        fleet,
        market,
        settings,
        linear_price=jnp.broadcast_to(st.price, (N, T)),
        prox_weight=jnp.full((N, T), st.rho),
        prox_center=center,
        warm_start=st.warm,
        return_state=True,
    )
    p = sol.net_mw
    r_new = (jnp.sum(p, axis=0) - target_mw) / N
    price = st.price + st.rho * r_new
    pres = jnp.linalg.norm(r_new)
    dres = st.rho * jnp.linalg.norm((p - r_new[None]) - (st.p - r[None])) / jnp.sqrt(N)
    rho = jnp.where(pres > 10 * dres, 2 * st.rho, jnp.where(dres > 10 * pres, st.rho / 2, st.rho))
    cres = jnp.max(jnp.abs(r_new)) * N
    # the dual residual was formed with the penalty of this iteration (st.rho), so it is converted back to
    # MW with that one, not with the rebalanced penalty of the next
    conv = (cres / N <= tol) & (dres / jnp.maximum(st.rho, 1e-12) / jnp.sqrt(T) <= tol)
    return ADMMCarry(p, price, rho, warm), pres, dres, cres, jnp.sum(sol.objective_eur), conv


@functools.partial(jax.jit, static_argnames=("tol", "max_iter", "verbose"))
def admm(
    fleet: Fleet,
    market: Market,
    target_mw: Array,
    settings: Settings,
    tol: float = 1e-6,
    max_iter: int = 300,
    verbose: bool = False,
    warm_start: ADMMCarry | None = None,
) -> ADMMState:
    """Exchange ADMM: :func:`admm_step` until the coupling residual per battery and the dual residual fall
    below ``tol`` (MW), from :func:`admm_start` or from ``warm_start`` (the ``carry`` of an earlier run).
    """
    target = jnp.asarray(target_mw)
    nan = jnp.full(max_iter, jnp.nan)

    def body(st: ADMMState) -> ADMMState:
        carry, pres, dres, cres, obj, conv = admm_step(fleet, market, settings, target, st.carry, tol)
        it = st.iteration
        rho = st.carry.rho
        hist = History(*(h.at[it].set(v) for h, v in zip(st.history, (pres, dres, cres, jnp.nan, rho, obj, jnp.nan))))
        if verbose:
            jax.debug.callback(log_iteration, it + 1, pres, dres, cres, jnp.nan, rho, obj, ordered=True)
        return ADMMState(carry, it + 1, pres, dres, conv, hist)

    def cond(st):
        return (~st.converged) & (st.iteration < max_iter)

    carry0 = admm_start(fleet, market, settings) if warm_start is None else warm_start
    st0 = ADMMState(
        carry0,
        jnp.asarray(0),
        jnp.asarray(jnp.inf),
        jnp.asarray(jnp.inf),
        jnp.asarray(False),
        History(nan, nan, nan, nan, nan, nan, nan),
    )
    return lax.while_loop(cond, body, st0)
