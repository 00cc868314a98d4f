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


def factor_coupling(messages: AgentMessage, regularisation: float = 1e-11) -> CouplingFactor:
    """Add up the batteries' curvatures and factor them (the coupling QP's KKT matrix).

    ``sum_i M_i`` is positive semidefinite and, in the end game of an LP-like problem, nearly singular:
    at steps where every battery sits at a bound its diagonal is of the order of the barrier parameter.
    It is equilibrated (Jacobi) and regularised before the factorisation; the caller refines the
    coupled solve iteratively, so the regularisation does not bias the answer.
    """
    M = jnp.sum(messages.curvature, axis=0)
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


def common_step(steps: StepMessage, fraction: float = 0.99) -> tuple[Array, Array]:
    """Fleet-wide primal and dual step lengths: the fraction-to-boundary rule over every battery's bounds."""
    return (
        jnp.minimum(1.0, fraction * jnp.min(steps.max_primal)),
        jnp.minimum(1.0, fraction * jnp.min(steps.max_dual)),
    )
