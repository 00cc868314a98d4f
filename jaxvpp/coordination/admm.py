"""ADMM baseline for coordinating the fleet to a target: exchange ADMM with residual balancing.

Every iteration each battery solves its own problem (warm-started, :func:`jaxvpp.battery.solve_batteries`)
with the current coupling price as a linear term and a proximal term that pulls its net power towards its
share of the target; the price then moves by the remaining mismatch, and the penalty is rebalanced when
the primal and dual residuals drift apart. It needs far more iterations than interior-point ALADIN
(:mod:`jaxvpp.coordination.aladin`) on these nearly linear batteries and serves as the comparison.

:func:`admm_start` is the cold start, :func:`admm_step` one iteration, :func:`admm` the jitted loop.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

from jaxvpp.battery.solution import solve_batteries
from jaxvpp.coordination.aladin import History, Status, emit_iteration
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
    """An ADMM run's carry, iteration count, last residuals and history."""

    carry: ADMMCarry
    iteration: Array
    primal_residual: Array  #: norm of the per-battery mismatch (MW)
    dual_residual: Array  #: rho times the change of the centred powers (EUR/MW)
    converged: Array
    history: History
    status: Array  #: a :attr:`~jaxvpp.coordination.aladin.Status.code` (converged or max_iter)


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


@functools.partial(jax.jit, static_argnames=("tol", "max_iter"))
def admm(
    fleet: Fleet,
    market: Market,
    target_mw: Array,
    settings: Settings,
    tol: float = 1e-6,
    max_iter: int = 300,
    warm_start: ADMMCarry | None = None,
    log_id: Array | None = None,
) -> ADMMState:
    """Exchange ADMM: :func:`admm_step` until the coupling residual per battery and the dual residual fall
    below ``tol`` (MW), from :func:`admm_start` or from ``warm_start`` (the ``carry`` of an earlier run).

    ``log_id``: the call id of a :func:`~jaxvpp.coordination.aladin.live_log` (one line per iteration; None:
    no log).
    """
    target = jnp.asarray(target_mw)
    nan = jnp.full(max_iter, jnp.nan)

    def body(st: ADMMState) -> ADMMState:
        carry, pres, dres, cres, obj, conv = admm_step(fleet, market, settings, target, st.carry, tol)
        it = st.iteration
        row = History(
            primal_residual=pres,
            dual_residual=dres,
            coupling_residual_mw=cres,
            mu=jnp.nan,
            step=st.carry.rho,
            objective_eur=obj,
            gap=jnp.nan,
        )
        hist = jax.tree.map(lambda h, v: h.at[it].set(v), st.history, row)
        if log_id is not None:
            emit_iteration(log_id, it + 1, row, ordered=True)
        return st._replace(
            carry=carry, iteration=it + 1, primal_residual=pres, dual_residual=dres, converged=conv, history=hist
        )

    def cond(st):
        return (~st.converged) & (st.iteration < max_iter)

    carry0 = admm_start(fleet, market, settings) if warm_start is None else warm_start
    st0 = ADMMState(
        carry=carry0,
        iteration=jnp.asarray(0),
        primal_residual=jnp.asarray(jnp.inf),
        dual_residual=jnp.asarray(jnp.inf),
        converged=jnp.asarray(False),
        history=History(
            primal_residual=nan,
            dual_residual=nan,
            coupling_residual_mw=nan,
            mu=nan,
            step=nan,
            objective_eur=nan,
            gap=nan,
        ),
        status=jnp.asarray(Status.MAX_ITER.code),
    )
    final = lax.while_loop(cond, body, st0)
    return final._replace(status=jnp.where(final.converged, Status.CONVERGED.code, Status.MAX_ITER.code))
