"""Building blocks of ``experiments/aladin_variants.py``: textbook ALADIN and a warm-startable ADMM copy.

Everything is vectorised over the fleet (``jax.vmap``); only the ALADIN / ADMM outer iterations are
Python loops, so that the globalisation (the barrier schedule) can be written plainly.

Units: the coupling multiplier ``lam`` is EUR per MW of ``p_t`` (``linear_price`` of
:func:`jaxvpp.battery.qp.build_qp`), powers are MW, the curvature ``M_i`` is MW per (EUR/MW), the barrier
parameter ``tau`` is in the solver's scaled units (the complementarity ``s_j z_j`` of one row).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

import jaxvpp  # noqa: F401  (float64)
from jaxvpp.battery.ipm import initial_point
from jaxvpp.battery.kernel import factor, factor_net, kkt_residuals, max_step, newton_direction, newton_once
from jaxvpp.battery.qp import Primal, build_qp
from jaxvpp.battery.solution import schedule_metrics, solve_batteries
from jaxvpp.coordination.admm import ADMMCarry, admm_start, admm_step
from jaxvpp.coordination.aladin import coupling_curvature, coupling_dual, coupling_map
from jaxvpp.problem import Fleet, Market, Settings


class Local(NamedTuple):
    """Per-battery primal-dual point of the local problem (scaled units, leading battery axis)."""

    x: Primal
    s: Array
    z: Array


def _inf(tree) -> Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)]))


def barrier_point(qp, x, s, z, tau, max_steps: int, tol: float):
    """Solve ONE battery's barrier problem at a fixed barrier parameter ``tau`` (``s o z = tau``).

    A primal-dual interior-point loop that stops on the central path instead of at the optimum: while
    Mehrotra's centring target ``sigma mu`` is above ``tau`` it takes predictor-corrector steps towards
    it, then plain Newton steps on ``r_c = s o z - tau``. Fraction-to-boundary 0.99, at most
    ``max_steps`` steps; converged when the dual and primal residuals are below ``tol`` and
    ``|s o z - tau| <= 1e-6 tau``. Returns the point, the steps taken and the final error (in units of
    ``tol``'s scale: max of the residuals and ``tol * 1e6 |s o z - tau| / tau``).
    """
    m = s.shape[0]

    def error(x, s, z):
        r_d, r_p = kkt_residuals(qp, x, s, z)
        return jnp.maximum(
            jnp.maximum(_inf(r_d), jnp.max(jnp.abs(r_p))), 1e6 * tol * jnp.max(jnp.abs(s * z - tau)) / tau
        )

    def cond(c):
        _, _, _, k, err = c
        return (k < max_steps) & (err > tol)

    def body(c):
        x, s, z, k, _ = c
        r_d, r_p = kkt_residuals(qp, x, s, z)
        fac = factor(qp, z / s)
        mu = jnp.vdot(s, z) / m
        _dx_a, ds_a, dz_a = newton_direction(qp, fac, s, z, r_d, r_p, s * z, refine=0)
        a_aff = jnp.minimum(max_step(s, ds_a), max_step(z, dz_a))
        mu_aff = jnp.vdot(s + a_aff * ds_a, z + a_aff * dz_a) / m
        centre = jnp.clip((mu_aff / mu) ** 3, 0.0, 1.0) * mu
        far = centre > tau
        # far from tau: Mehrotra corrector towards sigma mu; near: Newton on the barrier system itself
        r_c = jnp.where(far, s * z + ds_a * dz_a - centre, s * z - tau)
        dx, ds, dz = newton_direction(qp, fac, s, z, r_d, r_p, r_c, refine=1)
        # fraction to boundary: min(1, 0.99 * largest feasible step)
        a = jnp.minimum(max_step(s, ds / 0.99), max_step(z, dz / 0.99))
        x = jax.tree.map(lambda v, dv: v + a * dv, x, dx)
        s = jnp.maximum(s + a * ds, 1e-300)
        z = jnp.maximum(z + a * dz, 1e-300)
        return x, s, z, k + 1, error(x, s, z)

    x, s, z, k, err = lax.while_loop(cond, body, (x, s, z, jnp.asarray(0), error(x, s, z)))
    return x, s, z, k, err


def barrier_fleet(qp, local: Local, tau, max_steps: int, tol: float):
    """:func:`barrier_point` for every battery, warm-started from ``local``; batteries whose warm solve
    fails are solved again from the interior-point solver's cold starting point (only if any failed)."""
    v = jax.vmap(barrier_point, in_axes=(0, 0, 0, 0, None, None, None))
    x, s, z, k, err = v(qp, local.x, local.s, local.z, tau, max_steps, tol)
    failed = ~(err <= tol)

    def cold(_):
        x0, s0, z0 = jax.vmap(initial_point)(qp)
        xc, sc_, zc, kc, ec = v(qp, x0, s0, z0, tau, max_steps, tol)
        pick = lambda a, b: jnp.where(failed.reshape(failed.shape + (1,) * (a.ndim - 1)), a, b)
        return (
            jax.tree.map(pick, xc, x),
            pick(sc_, s),
            pick(zc, z),
            jnp.where(failed, k + kc, k),
            jnp.where(failed, ec, err),
        )

    return lax.cond(jnp.any(failed), cold, lambda _: (x, s, z, k, err), None)


def _fleet_qp(fleet, market, settings, lam, rho, zc):
    T = market.horizon
    return jax.vmap(lambda b, c: build_qp(b, market, settings, lam, jnp.full(T, rho), c))(fleet, zc)


def fleet_objective(fleet: Fleet, market: Market, settings: Settings, x: Primal, power: Array) -> Array:
    """The fleet's exact objective (EUR, without coordination terms) of the schedules in ``x``."""
    met = jax.vmap(lambda b, c, d: schedule_metrics(b, market, settings, c, d))(
        fleet, x.c * power[:, None], x.d * power[:, None]
    )
    return jnp.sum(met["objective_eur"])


def coupling_qp(M: Array, g: Array, p: Array, target: Array) -> tuple[Array, Array]:
    """ALADIN's coupling QP ``min sum_i 1/2 dp_i' M_i^-1 dp_i + g_i' dp_i  s.t.  sum_i (p_i + dp_i) = target``.

    Its KKT conditions give ``dp_i = -M_i (g_i + mu)`` and ``(sum_i M_i) mu = sum_i p_i - target -
    sum_i M_i g_i``; solved with Jacobi equilibration. Returns ``(mu, dp)``.
    """
    Msum = jnp.sum(M, axis=0)
    rhs = jnp.sum(p, axis=0) - target - jnp.einsum("nij,nj->i", M, g)
    d = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(Msum), 1e-300))
    mu = d * jnp.linalg.solve(Msum * d[:, None] * d[None, :], d * rhs)
    dp = -jnp.einsum("nij,nj->ni", M, g + mu[None, :])
    return mu, dp


class TBOut(NamedTuple):
    local: Local
    p: Array  #: (N, T) local solutions (MW)
    lam: Array  #: new multiplier
    zc: Array  #: new proximal centres
    coupling_residual_mw: Array  #: max_t |sum_i p_i - target| of the local solutions
    objective_eur: Array  #: exact fleet objective of the local solutions
    newton_steps: Array  #: max over batteries of the local Newton steps
    local_error: Array  #: max over batteries of the local solve's final residual
    cond_coupling: Array  #: condition number of the equilibrated sum_i M_i


@functools.partial(jax.jit, static_argnames=("settings", "curvature", "max_steps", "local_tol"))
def textbook_iteration(
    fleet,
    market,
    settings,
    target,
    lam,
    zc,
    rho,
    tau,
    local: Local,
    step,
    curvature: str = "barrier",
    max_steps: int = 40,
    local_tol: float = 1e-10,
) -> TBOut:
    """One textbook ALADIN iteration (vectorised over the fleet).

    1. local solves ``min f_i + lam'p_i + rho/2 |p_i - zc_i|^2``: to the barrier point at ``tau``
       (``curvature="barrier"``) or to full accuracy with the batched interior-point solver
       (``curvature="active"``: ``W = z/s`` at the converged point, i.e. the active set);
    2. curvature ``M_i = S (Q_f + G'WG)^-1 S'`` of f_i itself (no proximal term), gradient
       ``g_i = -lam - rho (p_i - zc_i)`` from local stationarity, and the coupling QP;
    3. ``zc <- p + step dp``, ``lam <- lam + step (mu - lam)``.
    """
    N, T = zc.shape
    qp, sc = _fleet_qp(fleet, market, settings, lam, rho, zc)
    if curvature == "barrier":
        x, s, z, k, err = barrier_fleet(qp, local, tau, max_steps, local_tol)
    else:
        sol, (x, s, z) = solve_batteries(
            fleet,
            market,
            settings,
            linear_price=jnp.broadcast_to(lam, (N, T)),
            prox_weight=jnp.full((N, T), rho),
            prox_center=zc,
            warm_start=(local.x, local.s, local.z),
            return_state=True,
            tol=1e-9,
        )
        k, err = sol.iterations, jnp.maximum(sol.primal_residual, sol.dual_residual)
    fac = jax.vmap(factor_net)(qp._replace(rho=jnp.zeros_like(qp.rho)), z / s)
    M = jax.vmap(coupling_curvature)(fac, sc)
    p = jax.vmap(coupling_map)(sc, x)
    g = -lam[None, :] - rho * (p - zc)
    mu, dp = coupling_qp(M, g, p, target)
    Msum = jnp.sum(M, axis=0)
    dg = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(Msum), 1e-300))
    cond = jnp.linalg.cond(Msum * dg[:, None] * dg[None, :])
    return TBOut(
        local=Local(x, s, z),
        p=p,
        lam=lam + step * (mu - lam),
        zc=p + step * dp,
        coupling_residual_mw=jnp.max(jnp.abs(jnp.sum(p, axis=0) - target)),
        objective_eur=fleet_objective(fleet, market, settings, x, fleet.power_mw),
        newton_steps=jnp.max(k),
        local_error=jnp.max(err),
        cond_coupling=cond,
    )


@functools.partial(jax.jit, static_argnames=("settings",))
def barrier_tangent(fleet, market, settings, lam, zc, rho, local: Local, dtau):
    """First-order predictor of the coupled barrier solution when tau changes by ``dtau``.

    At a converged point (local barrier solutions with ``sum_i p_i = target``) the tangent of the barrier
    path solves, per battery, ``K_i dx_i + S~_i' dlam = -G_i' (dtau / s_i)`` (``K_i = Q_f + G'WG`` of f_i,
    no proximal term) with ``sum_i S_i dx_i = 0``: the ALADIN messages (``M_i`` and one T-vector per
    battery) and one T x T solve. Returns ``dlam`` (EUR/MW), ``dp`` (N, T) MW and the local step.
    """
    qp, sc = _fleet_qp(fleet, market, settings, lam, rho, zc)
    qf = qp._replace(rho=jnp.zeros_like(qp.rho))
    s, z = local.s, local.z
    fac = jax.vmap(factor_net)(qf, z / s)
    M = jax.vmap(coupling_curvature)(fac, sc)
    zero_d = jax.tree.map(jnp.zeros_like, local.x)
    zero_p = jnp.zeros_like(s)
    once = jax.vmap(newton_once)
    dx0, ds0, dz0 = once(qf, fac, s, z, zero_d, zero_p, jnp.full_like(s, -dtau))
    v = jax.vmap(coupling_map)(sc, dx0)
    Msum = jnp.sum(M, axis=0)
    d = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(Msum), 1e-300))
    dlam = d * jnp.linalg.solve(Msum * d[:, None] * d[None, :], d * jnp.sum(v, axis=0))
    hx, hs, hz = once(qf, fac, s, z, jax.vmap(coupling_dual, in_axes=(0, 0, None))(qf, sc, dlam), zero_p, zero_p)
    dx = jax.tree.map(jnp.add, dx0, hx)
    ds, dz = ds0 + hs, dz0 + hz
    dp = v - jnp.einsum("nij,j->ni", M, dlam)
    # move the local warm start along the tangent too (fraction to boundary, per battery)
    a = jnp.minimum(jax.vmap(max_step)(s, ds / 0.99), jax.vmap(max_step)(z, dz / 0.99))
    moved = Local(
        jax.tree.map(lambda x_, dx_: x_ + (a.reshape(a.shape + (1,) * (x_.ndim - 1))) * dx_, local.x, dx),
        s + a[:, None] * ds,
        z + a[:, None] * dz,
    )
    return dlam, dp, moved


@functools.partial(jax.jit, static_argnames=("settings",))
def cold_local(fleet, market, settings):
    """The interior-point solver's cold starting point for every battery (no price, no proximal term)."""
    qp, _ = jax.vmap(lambda b: build_qp(b, market, settings))(fleet)
    return Local(*jax.vmap(initial_point)(qp))


# --------------------------------------------------------------------------------------------------
# ADMM: the library's own iteration, stepped from Python so that any state can start it
# --------------------------------------------------------------------------------------------------


@jax.jit
def admm_iteration(fleet, market, settings, target, st: ADMMCarry):
    """One iteration of ``jaxvpp.coordination.admm`` (its :func:`~jaxvpp.coordination.admm_step`).

    Returns the new carry, the coupling residual (MW, max over steps), the exact fleet objective (EUR),
    and whether the library's own stopping test (tol 1e-6 MW per battery) holds.
    """
    carry, _, _, cres, obj, conv = admm_step(fleet, market, settings, target, st, 1e-6)
    return carry, cres, obj, conv


admm_cold_carry = jax.jit(admm_start)  #: the library ADMM's starting point
