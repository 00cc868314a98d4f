"""The interior-point method for one battery (Mehrotra predictor-corrector), vmapped over the fleet as a
queue of lock-step slots: :func:`ipm_start`, :func:`ipm_step` and :func:`ipm_solve_fleet`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jax import Array, lax

from jaxvpp.battery.kernel import (
    CORRECTOR_REFINE,
    PREDICTOR_REFINE,
    REGULARISATION,
    STEP_FRACTION,
    condensed_matrix,
    factor,
    kkt_residuals,
    max_step,
    newton_direction,
    refine_direction,
    solve_condensed,
)
from jaxvpp.battery.qp import (
    FLEET_QP_AXES,
    BatteryQP,
    Primal,
    apply_G,
    apply_GT,
    apply_Q,
    linear_cost,
    max_abs,
    objective,
    primal_map,
    rhs_h,
)

# --------------------------------------------------------------------------------------------------
# The interior-point method for one battery (vmapped over the fleet)
# --------------------------------------------------------------------------------------------------


class IPMState(NamedTuple):
    """Iterate and diagnostics of one battery's interior-point solve."""

    x: Primal
    s: Array  #: (m,) slacks
    z: Array  #: (m,) multipliers
    iterations: Array
    converged: Array  #: bool
    primal_residual: Array  #: relative
    dual_residual: Array  #: relative
    gap: Array  #: relative complementarity gap
    r_d: Primal  #: dual residual ``Qx + f + G'z`` at the iterate (carried to the next iteration)
    r_p: Array  #: (m,) primal residual ``Gx + s - h`` at the iterate
    refine: Array  #: bool: the battery's directions are refined (set once a step fell short of its promise)


def kkt_measures(
    qp: BatteryQP, x: Primal, s: Array, z: Array, extra_dual: Primal | None = None
) -> tuple[Array, Array, Array]:
    """Relative primal residual, dual residual and complementarity gap (``extra_dual`` is added to the
    dual residual: coordination's multiplier term)."""
    r_d, r_p = kkt_residuals(qp, x, s, z)
    if extra_dual is not None:
        r_d = primal_map(jnp.add, r_d, extra_dual)
    return kkt_measures_of(qp, x, s, z, r_d, r_p)


def kkt_measures_of(
    qp: BatteryQP, x: Primal, s: Array, z: Array, r_d: Primal, r_p: Array
) -> tuple[Array, Array, Array]:
    """:func:`kkt_measures` from residuals ``r_d, r_p`` already computed at ``(x, s, z)``."""
    h = rhs_h(qp)
    pres = jnp.max(jnp.abs(r_p)) / (1.0 + jnp.maximum(jnp.max(jnp.abs(h)), jnp.max(jnp.abs(apply_G(qp, x)))))
    dres = max_abs(r_d) / (
        1.0 + jnp.maximum(max_abs(linear_cost(qp)), jnp.maximum(max_abs(apply_Q(qp, x)), max_abs(apply_GT(qp, z))))
    )
    gap = jnp.vdot(s, z) / (1.0 + jnp.abs(objective(qp, x)))
    return pres, dres, gap


def initial_point(qp: BatteryQP) -> tuple[Primal, Array, Array]:
    """A cold start: the least-squares point of CVXOPT/qpax, shifted into the interior."""
    m = rhs_h(qp).shape[0]
    # With all row weights 1 the condensed matrix is well conditioned, and this one solve uses LAPACK's
    # Cholesky (a custom call) rather than :func:`inv_cholesky`: a second traced copy of the blocked
    # factorisation made up a fifth of every solver program and its compile time.
    kmat, w_loss, d_u = condensed_matrix(qp, jnp.ones(m))
    kmat = kmat + REGULARISATION * jnp.eye(kmat.shape[0])
    chol = jax.scipy.linalg.cho_factor(kmat, lower=True)
    rhs = primal_map(lambda a, b: -a + b, linear_cost(qp), apply_GT(qp, rhs_h(qp)))
    x = solve_condensed(qp, w_loss, d_u, lambda ry: jax.scipy.linalg.cho_solve(chol, ry), rhs)
    z = apply_G(qp, x) - rhs_h(qp)
    s = -z
    s = jnp.where(jnp.min(s) > 0, s, s + 1.0 - jnp.min(s))
    z = jnp.where(jnp.min(z) > 0, z, z + 1.0 - jnp.min(z))
    return x, s, z


def warm_point(qp: BatteryQP, x: Primal, s: Array, z: Array, margin: float) -> tuple[Primal, Array, Array]:
    """A warm start from an earlier iterate, pushed off the boundary by ``margin``."""
    s = jnp.maximum(rhs_h(qp) - apply_G(qp, x), margin)
    z = jnp.maximum(z, margin)
    return x, s, z


def ipm_start(qp: BatteryQP, x0: Primal, s0: Array, z0: Array, tol: float) -> IPMState:
    """The solver state at ``(x0, s0, z0)`` (converged already if it meets the tolerance)."""
    r_d, r_p = kkt_residuals(qp, x0, s0, z0)
    pres, dres, gap = kkt_measures_of(qp, x0, s0, z0, r_d, r_p)
    return IPMState(
        x0,
        s0,
        z0,
        jnp.asarray(0),
        (pres <= tol) & (dres <= tol) & (gap <= tol),
        pres,
        dres,
        gap,
        r_d,
        r_p,
        jnp.asarray(False),
    )


def step_fraction(mu: Array, pres: Array, dres: Array) -> Array:
    """Fraction to the boundary of a step: :data:`STEP_FRACTION` far from the optimum, ``1 - max(mu, residuals)``
    close to it. A fixed fraction lets the complementarity fall at most a hundredfold per iteration; near the
    optimum the Newton step is nearly exact and a fraction that tends to 1 recovers its fast local
    convergence."""
    return 1.0 - jnp.minimum(1.0 - STEP_FRACTION, jnp.maximum(mu, jnp.maximum(pres, dres)))


def ipm_step(
    qp: BatteryQP, st: IPMState, tol: float, max_iter: int, refine: Array | bool, active: Array | bool = True
) -> IPMState:
    """One Mehrotra predictor-corrector iteration of one battery (a failed step sets ``iterations`` to
    ``max_iter``, which stops the battery). Where ``active`` is false the state comes back unchanged (a
    finished or empty slot of :func:`ipm_solve_fleet`).

    The corrector direction is refined (:data:`CORRECTOR_REFINE` rounds) where ``refine`` is true. Under
    ``vmap`` pass an unbatched ``refine`` (any battery of the batch asking for it, ``IPMState.refine``): it
    stays a real branch, so a batch in which no battery asks does not pay for it.
    """
    x, s, z = st.x, st.s, st.z
    m = s.shape[0]
    r_d, r_p = st.r_d, st.r_p
    mu = jnp.vdot(s, z) / m
    # the (c, d, eta) factor: the net-power one (factor_net, as coordination uses) took the same iterations and a
    # tenth less time, but a battery that starts full (e_T >= e_0 = e_max pins the end, no strictly feasible
    # point) stalled in its end game under vmap, where this factor converges in 16 iterations
    fac = factor(qp, z / s)
    # predictor (affine scaling)
    dx_a, ds_a, dz_a = newton_direction(qp, fac, s, z, r_d, r_p, s * z, refine=PREDICTOR_REFINE)
    a_p, a_d = max_step(s, ds_a), max_step(z, dz_a)
    a_aff = jnp.minimum(a_p, a_d)
    mu_aff = jnp.vdot(s + a_aff * ds_a, z + a_aff * dz_a) / m
    sigma = jnp.clip((mu_aff / mu) ** 3, 0.0, 1.0)
    # corrector with centring
    r_c = s * z + ds_a * dz_a - sigma * mu
    d = newton_direction(qp, fac, s, z, r_d, r_p, r_c, refine=0)
    dx, ds, dz = lax.cond(
        refine, lambda d_: refine_direction(qp, fac, s, z, r_d, r_p, r_c, d_, CORRECTOR_REFINE), lambda d_: d_, d
    )
    tau = jnp.where(st.refine, STEP_FRACTION, step_fraction(mu, st.primal_residual, st.dual_residual))
    alpha = tau * jnp.minimum(max_step(s, ds), max_step(z, dz))
    alpha = jnp.minimum(alpha, 1.0)
    x_n = primal_map(lambda a, b: a + alpha * b, x, dx)
    s_n = jnp.maximum(s + alpha * ds, 1e-300)
    z_n = jnp.maximum(z + alpha * dz, 1e-300)
    r_dn, r_pn = kkt_residuals(qp, x_n, s_n, z_n)
    pres, dres, gap = kkt_measures_of(qp, x_n, s_n, z_n, r_dn, r_pn)
    ok = jnp.all(jnp.isfinite(jnp.concatenate([s_n, z_n]))) & jnp.isfinite(pres + dres + gap)
    conv = (pres <= tol) & (dres <= tol) & (gap <= tol)
    # The residuals are linear in the step: an exact direction leaves (1 - alpha) of them. A residual above the
    # tolerance that does not even halve where the step promised that much is the reduced solve's round-off
    # (W = z/s spans twenty orders of magnitude near the optimum). Such a step is undone, and from then on the
    # battery's directions are refined and its step fraction stays at STEP_FRACTION. Without this, one battery of
    # the 728 in the tests' random fleets stalled; refining every battery in every iteration costs 19 % more per
    # iteration (256 slots, T = 24, K = 20), and at N = 1000 no battery asks for it.
    promise = jnp.maximum(0.5, 2.0 * (1.0 - alpha))
    short = ((pres > tol) & (max_abs(r_pn) > promise * max_abs(r_p))) | (
        (dres > tol) & (max_abs(r_dn) > promise * max_abs(r_d))
    )
    retry = ok & short & ~st.refine  # the first short step is undone and retried, refined
    accept = ok & ~retry & active
    keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
    return IPMState(
        x=jax.tree.map(keep, x_n, x),
        s=keep(s_n, s),
        z=keep(z_n, z),
        iterations=jnp.where(active, jnp.where(ok, st.iterations + 1, max_iter), st.iterations),
        converged=jnp.where(active, conv & accept, st.converged),
        primal_residual=keep(pres, st.primal_residual),
        dual_residual=keep(dres, st.dual_residual),
        gap=keep(gap, st.gap),
        r_d=jax.tree.map(keep, r_dn, r_d),
        r_p=keep(r_pn, r_p),
        refine=st.refine | (short & active),
    )


def _take(tree, idx: Array):
    return jax.tree.map(lambda a: a[idx], tree)


def _select(mask: Array, new, old):
    """``where(mask, new, old)`` leaf by leaf, ``mask`` (B,) over the leading axis."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


def ipm_solve_fleet(qp: BatteryQP, start: IPMState, tol: float, max_iter: int, slots: int) -> IPMState:
    """Solve every battery of a fleet (``qp`` with :data:`FLEET_QP_AXES`, ``start`` with a leading axis N)
    from its start, ``slots`` batteries at a time.

    The slots run in lock-step (one vmapped iteration each round); a battery that has converged or stopped
    leaves its slot, which takes the next battery in line from its start. A battery thus costs its own
    iterations, not the slowest battery's of its batch (batteries of one fleet typically need between 9 and
    17 iterations at T = 24, and a plain lock-step batch would pay the most for each). One traced copy of the
    iteration serves all rounds.
    """
    N = start.iterations.shape[0]
    B = min(N, slots)
    v_step = jax.vmap(lambda q, st, r, a: ipm_step(q, st, tol, max_iter, r, a), in_axes=(FLEET_QP_AXES, 0, None, 0))
    batched = [f for f in BatteryQP._fields if getattr(FLEET_QP_AXES, f) == 0]

    def qp_at(idx):
        return qp._replace(**{f: getattr(qp, f)[idx] for f in batched})

    def done(st):
        return st.converged | (st.iterations >= max_iter)

    def cond(carry):
        slot_of = carry[0]
        return jnp.any(slot_of < N)

    def body(carry):
        slot_of, nxt, work_qp, work, out = carry
        live = (slot_of < N) & ~done(work)
        work = v_step(work_qp, work, jnp.any(live & work.refine), live)
        fin = (slot_of < N) & done(work)
        out = jax.tree.map(lambda o, w: o.at[jnp.where(fin, slot_of, N)].set(w, mode="drop"), out, work)
        # finished slots take the next batteries in line (index N: none left, the slot stays empty)
        cand = nxt + jnp.cumsum(fin) - 1
        new_of = jnp.where(fin, jnp.where(cand < N, cand, N), slot_of)
        load = fin & (new_of < N)

        def refill(args):
            wq, w = args
            idx = jnp.minimum(new_of, N - 1)
            new_qp = qp._replace(**{f: _select(load, getattr(qp, f)[idx], getattr(wq, f)) for f in batched})
            return new_qp, _select(load, _take(start, idx), w)

        work_qp, work = lax.cond(jnp.any(load), refill, lambda a: a, (work_qp, work))
        return new_of, nxt + jnp.sum(fin), work_qp, work, out

    first = jnp.arange(B)
    carry = (first, jnp.asarray(B), qp_at(first), _take(start, first), start)
    return lax.while_loop(cond, body, carry)[4]
