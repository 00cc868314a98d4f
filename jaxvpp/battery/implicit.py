"""Implicit differentiation of the fleet's QP solve: a ``custom_vjp`` whose backward pass is each battery's
adjoint of its optimality conditions at the solution (no unrolling of iterations).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jax import Array

from jaxvpp.battery.ipm import (
    IPMState,
    initial_point,
    ipm_solve_fleet,
    ipm_start,
    warm_point,
)
from jaxvpp.battery.kernel import BACKWARD_REFINE, adjoint_solve
from jaxvpp.battery.qp import (
    FLEET_QP_AXES,
    BatteryQP,
    Primal,
    apply_G,
    apply_GT,
    apply_Q,
    linear_cost,
    primal_map,
    rhs_h,
)

# --------------------------------------------------------------------------------------------------
# Implicit differentiation
# --------------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def solve_fleet_qp(
    qp: BatteryQP, warm: tuple[Primal, Array, Array] | None, tol: float, max_iter: int, warm_margin: float, slots: int
) -> tuple[Primal, Array, IPMState]:
    """Solve every battery's QP (``qp`` with :data:`FLEET_QP_AXES`); differentiable in ``qp`` through each
    battery's optimality conditions.

    Returns the primal solutions, the multipliers ``z`` (scaled units) and the solver states (leading axis N).
    """
    st = _solve_fleet(qp, warm, tol, max_iter, warm_margin, slots)
    return st.x, st.z, st


def _solve_fleet(qp, warm, tol, max_iter, warm_margin, slots):
    if warm is None:
        x0, s0, z0 = jax.vmap(initial_point, in_axes=(FLEET_QP_AXES,))(qp)
    else:
        x0, s0, z0 = jax.vmap(lambda q, x, s, z: warm_point(q, x, s, z, warm_margin), in_axes=(FLEET_QP_AXES, 0, 0, 0))(
            qp, *warm
        )
    start = jax.vmap(lambda q, x, s, z: ipm_start(q, x, s, z, tol), in_axes=(FLEET_QP_AXES, 0, 0, 0))(qp, x0, s0, z0)
    return ipm_solve_fleet(qp, start, tol, max_iter, slots)


def _solve_fwd(qp, warm, tol, max_iter, warm_margin, slots):
    st = _solve_fleet(qp, warm, tol, max_iter, warm_margin, slots)
    return (st.x, st.z, st), (qp, st.x, st.s, st.z)


def _adjoint_one(qp, x, s, z, gx, gz):
    """One battery's cotangent of its QP data, by the adjoint of its optimality conditions at the solution."""
    a, b = adjoint_solve(qp, s, z, gx, gz, refine=BACKWARD_REFINE)

    def residual(qp_):
        r_d = primal_map(lambda p, q, r: p + q + r, apply_Q(qp_, x), linear_cost(qp_), apply_GT(qp_, z))
        return r_d, rhs_h(qp_) - apply_G(qp_, x)

    _, vjp = jax.vjp(residual, qp)
    (g_qp,) = vjp((primal_map(jnp.negative, a), -b))
    return g_qp


def _solve_bwd(tol, max_iter, warm_margin, slots, res, cts):
    qp, x, s, z = res
    gx, gz, _ = cts
    gx = jax.tree.map(lambda g, v: jnp.zeros_like(v) if g is None else g, gx, x)
    gz = jnp.zeros_like(z) if gz is None else gz
    g_qp = jax.vmap(_adjoint_one, in_axes=(FLEET_QP_AXES, 0, 0, 0, 0, 0))(qp, x, s, z, gx, gz)
    return g_qp._replace(A=jnp.sum(g_qp.A, axis=0)), None  # the shared A collects every battery's share


solve_fleet_qp.defvjp(_solve_fwd, _solve_bwd)
