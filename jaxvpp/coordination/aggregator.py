"""The aggregator of ALADIN: it prices the community mismatch from what the batteries send, nothing else.

Every ALADIN iteration each battery condenses its Newton step onto its coupled variables (its net power
p_t, MW) and sends an :class:`AgentMessage`; the aggregator adds the messages up and solves the coupling
QP, which for equality coupling is the T x T KKT system

    (sum_i M_i) dlambda = (sum_i p_i - target) + sum_i v_i,

by a Cholesky factorisation (:func:`factor_coupling`, once per iteration; :func:`solve_coupling`, for
every right-hand side), and sends the multiplier step ``dlambda`` back. The aggregator never sees a
battery's parameters, constraints, prices or risk preferences: its functions take messages only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array


class AgentMessage(NamedTuple):
    """What one battery (or, with a leading axis, every battery) sends the aggregator.

    All quantities are physical: MW for powers, MW per (EUR/MW) for the curvature.
    """

    curvature: Array  #: (T, T) M_i = S_i K_i^-1 S_i': response of p_i to a multiplier step (MW per EUR/MW)
    gradient: Array  #: (T,) v_i = S_i dx_i^0: p_i's Newton step at the current multiplier (MW)
    net_mw: Array  #: (T,) current p_i (MW)


class StepMessage(NamedTuple):
    """Step-length information one battery sends (no parameters): its own fraction-to-boundary bounds."""

    max_primal: Array  #: () largest primal step keeping its slacks positive
    max_dual: Array  #: () largest dual step keeping its multipliers positive
    complementarity: Array  #: () s'z after a trial step (scaled units, summed over its rows)
    rows: Array  #: () number of its inequality rows


def coupling_residual(net_mw: Array, target_mw: Array) -> Array:
    """``sum_i p_i - target`` (MW, per step) from the batteries' reported net powers (N, T)."""
    return jnp.sum(net_mw, axis=0) - target_mw


class CouplingFactor(NamedTuple):
    """The factored coupling matrix ``sum_i M_i`` (Jacobi-equilibrated Cholesky), built once per iteration."""

    scale: Array  #: (T,) 1 / sqrt(diag(sum_i M_i))
    chol: Array  #: (T, T) lower Cholesky factor of the equilibrated, regularised matrix


def factor_coupling(
    messages: AgentMessage, regularisation: float = 1e-11, elastic_curvature: Array | None = None
) -> CouplingFactor:
    """Add up the batteries' curvatures and factor them (the coupling QP's KKT matrix).

    ``sum_i M_i`` is positive semidefinite and, in the end game of an LP-like problem, nearly singular:
    at steps where every battery sits at a bound its diagonal is of the order of the barrier parameter.
    ``elastic_curvature`` (T,), MW per (EUR/MW): the aggregator's own elastic variables' diagonal
    (:func:`elastic_curvature`), added before the factorisation; it is part of the system, not a
    regularisation. The sum is equilibrated (Jacobi) and regularised; the caller refines the coupled solve
    iteratively, so the regularisation does not bias the answer.
    """
    M = jnp.sum(messages.curvature, axis=0)
    if elastic_curvature is not None:
        M = M + jnp.diag(elastic_curvature)
    T = M.shape[0]
    d = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(M), 1e-300))
    return CouplingFactor(scale=d, chol=jnp.linalg.cholesky(M * d[:, None] * d[None, :] + regularisation * jnp.eye(T)))


def solve_coupling(factor: CouplingFactor, messages: AgentMessage, target_mw: Array) -> tuple[Array, Array]:
    """The coupling QP's KKT solve: the multiplier step (EUR/MW per step) and the mismatch it prices (MW).

    Solves ``(sum_i M_i) dlambda = (sum_i net_i - target) + sum_i v_i`` with the factor of
    :func:`factor_coupling`. ``messages`` carries a leading battery axis.
    """
    r = coupling_residual(messages.net_mw, target_mw)
    rhs = factor.scale * (r + jnp.sum(messages.gradient, axis=0))
    y = jax.scipy.linalg.solve_triangular(factor.chol, rhs, lower=True)
    return factor.scale * jax.scipy.linalg.solve_triangular(factor.chol.T, y, lower=False), r


STEP_BISECTIONS = 40  #: bisection steps of :func:`fleet_step` (a step length to about 1e-12)


def battery_bounds(steps: StepMessage, fraction: float = 0.99) -> Array:
    """Each battery's own step bound (N,): the fraction to the boundary of its slacks and multipliers (at
    most 1)."""
    return jnp.minimum(1.0, fraction * jnp.minimum(steps.max_primal, steps.max_dual))


def fleet_step(
    steps: StepMessage, stragglers: Array = 0.0, weight: Array | None = None, fraction: float = 0.99
) -> Array:
    """The fleet's step length: the largest ``t <= 1`` that at most ``stragglers`` batteries cannot take.

    A battery can take a step up to its own bound (:func:`battery_bounds`). With ``stragglers = 0`` the
    fleet's step is the smallest of these bounds (one step for the whole fleet); with ``stragglers = k`` it is
    the ``(k+1)``-th smallest, and the ``k`` batteries below it each take their own bound (the caller's rule).
    ``weight`` (N,): 0 for a padding replica, which does not count (it has its original's bound). The search
    is a bisection on counts, sums over the batteries alone, so a fleet split over devices needs all-reduces
    and no gather.
    """
    own = battery_bounds(steps, fraction)
    shortest = jnp.min(own)
    if isinstance(stragglers, (int, float)) and stragglers == 0:
        return shortest  # known to be none when traced: no search
    w = jnp.ones_like(own) if weight is None else weight

    def admissible(t):
        return jnp.sum(jnp.where(own < t, w, 0.0)) <= stragglers

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        ok = admissible(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, STEP_BISECTIONS, bisect, (shortest, jnp.ones_like(shortest)))
    return jnp.where(stragglers > 0, jnp.where(admissible(1.0), 1.0, lo), shortest)


# --------------------------------------------------------------------------------------------------
# Elastic coupling: the aggregator's own variables, which keep the multiplier bounded
# --------------------------------------------------------------------------------------------------
#
# The coupled problem is solved in elastic form: ``sum_i p_i + u - w = target`` with ``u, w >= 0`` (MW),
# each priced at ``rho`` (EUR per MW of p_t), an exact penalty. Its multiplier satisfies
# ``z_u = rho + lam >= 0`` and ``z_w = rho - lam >= 0``, so ``|lam| < rho``. Where the target leaves the
# fleet no slack (for instance a target scaled from the fleet's own schedule, when every battery must end
# the day exactly as full as it began and all have the same efficiencies), the multipliers of the plain
# problem form an unbounded set; an interior-point method then lets the multiplier drift by orders of
# magnitude until the batteries' barrier systems lose all accuracy. The elastic variables bound it. When
# ``rho`` exceeds the smallest optimal multiplier (:func:`elastic_penalty`), the elastic problem has the
# plain problem's solution with ``u = w = 0``; a target the fleet cannot meet ends with ``u - w != 0``.

ELASTIC_FACTOR = 10.0  #: the penalty rho as a multiple of the largest marginal value a battery reports
ELASTIC_START = 1e-2  #: the elastic variables' starting margin, relative to 1 + max|target| (MW)


class Elastic(NamedTuple):
    """The aggregator's elastic variables (MW): ``sum_i p_i + u - w = target``."""

    u: Array  #: (T,) >= 0: the fleet's shortfall below the target that the penalty pays for
    w: Array  #: (T,) >= 0: the excess above the target


def elastic_penalty(marginal_value_bounds: Array) -> Array:
    """The penalty ``rho`` (T,), EUR per MW of p_t, from the bound each battery sends once (N, T): an upper
    bound on the value of one MW of its net power at each step. ``ELASTIC_FACTOR`` times the largest, plus 1."""
    return ELASTIC_FACTOR * (jnp.max(marginal_value_bounds, axis=0) + 1.0)


def elastic_start(residual_mw: Array, scale_mw: Array) -> Elastic:
    """Elastic variables that close the starting coupling residual ``sum_i p_i - target`` (MW), with a margin."""
    margin = ELASTIC_START * scale_mw
    return Elastic(u=jnp.maximum(-residual_mw, 0.0) + margin, w=jnp.maximum(residual_mw, 0.0) + margin)


def elastic_duals(rho: Array, lam: Array) -> tuple[Array, Array]:
    """The elastic variables' multipliers ``(rho + lam, rho - lam)`` (EUR/MW), positive while ``|lam| < rho``."""
    return rho + lam, rho - lam


def elastic_curvature(el: Elastic, rho: Array, lam: Array) -> Array:
    """``u / z_u + w / z_w`` (T,), MW per (EUR/MW): how the elastic variables answer a multiplier step."""
    zu, zw = elastic_duals(rho, lam)
    return el.u / zu + el.w / zw


def elastic_complementarity(el: Elastic, rho: Array, lam: Array) -> tuple[Array, Array]:
    """``(u z_u, w z_w)`` (T,) each, EUR: the elastic rows' complementarity."""
    zu, zw = elastic_duals(rho, lam)
    return el.u * zu, el.w * zw


def elastic_gradient(el: Elastic, rho: Array, lam: Array, r_cu: Array, r_cw: Array) -> Array:
    """The elastic rows' part of the coupling right-hand side (MW) for complementarity residuals
    ``r_cu = u z_u - sigma mu`` and ``r_cw`` (EUR): ``-r_cu / z_u + r_cw / z_w``."""
    zu, zw = elastic_duals(rho, lam)
    return -r_cu / zu + r_cw / zw


def elastic_step(el: Elastic, rho: Array, lam: Array, dlam: Array, r_cu: Array, r_cw: Array) -> Elastic:
    """The elastic variables' Newton step for the multiplier step ``dlam`` (``dz_u = dlam``, ``dz_w = -dlam``)."""
    zu, zw = elastic_duals(rho, lam)
    return Elastic(u=(-r_cu - el.u * dlam) / zu, w=(-r_cw + el.w * dlam) / zw)


def elastic_max_step(el: Elastic, rho: Array, lam: Array, d_el: Elastic, dlam: Array) -> Array:
    """Largest step in (0, 1] that keeps ``u, w, z_u, z_w`` positive (the aggregator's fraction to the boundary)."""
    zu, zw = elastic_duals(rho, lam)

    def room(v, dv):
        return jnp.min(jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf))

    return jnp.minimum(
        1.0,
        jnp.minimum(jnp.minimum(room(el.u, d_el.u), room(el.w, d_el.w)), jnp.minimum(room(zu, dlam), room(zw, -dlam))),
    )
