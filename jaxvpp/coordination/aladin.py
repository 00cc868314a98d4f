"""Phase V: coordinating the fleet to a community target with interior-point ALADIN (and ADMM).

The coupled problem: every battery ``i`` minimises its own risk-aware cost (:mod:`jaxvpp.battery`)
subject to its private constraints, and the fleet must meet ``sum_i p_it = target_t`` for every step.

Interior-point ALADIN (see the README): each iteration every battery takes ONE primal-dual Newton step on
its own barrier KKT system (the inexact local solve), condenses it onto its coupled variables and sends
the aggregator an :class:`~jaxvpp.aggregator.AgentMessage` (a T x T curvature and two T-vectors). The
aggregator solves the coupling KKT system for the multiplier step; each battery recovers its own step; one
fleet-wide step length (fraction to boundary) and Mehrotra's predictor-corrector with centring per battery.
The whole loop is one ``lax.while_loop`` under ``jit``; batteries are a ``vmap`` axis.

ADMM (exchange form, residual-balancing penalty) is the baseline; ``method="centralized"`` solves the
same problem with cvxpy + Clarabel (:mod:`jaxvpp.reference`).
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from jaxvpp.battery.ipm import initial_point, kkt_measures
from jaxvpp.battery.kernel import (
    Factor,
    factor,
    factor_xt,
    kkt_residuals,
    max_step,
    newton_once,
)
from jaxvpp.battery.qp import (
    FLEET_QP_AXES,
    BatteryQP,
    Primal,
    Scales,
    apply_G,
    apply_GT,
    apply_Q,
    build_qp,
    loss_of_p,
    max_abs,
    objective,
    primal_map,
)
from jaxvpp.coordination import aggregator as agg
from jaxvpp.problem import Fleet, Market, Settings

GONDZIO_CORRECTORS = 2  #: multiple-centrality correctors per iteration
COUPLED_REFINE = 2  #: most refinement rounds of a coupled Newton solve
REFINE_RTOL = 1e-3  #: a coupled solve is refined until its residual is below this fraction of its right-hand side
#: static regularisation of each battery's condensed matrix (scaled units). Larger than the battery solver's
#: (1e-9): in the end game (W = z/s over twenty orders of magnitude) the coupled solve's refinement
#: contracted at 0.5 per round, or not at all, with 1e-9 (first error 1e6 times the right-hand side on a
#: T = 96 fleet), and by 0.02 or better per round with 1e-7; the refinement removes the bias
FACTOR_REGULARISATION = 1e-7
#: smallest centring parameter of Mehrotra's corrector: keeps the end game centred. With 0.01 the end point moved
#: with round-off: the same fleet on one device and on four (sums in another order) ended 4e-8 apart in the
#: schedules and up to 5e-4 in the (non-unique) prices; with 0.03, 1e-13 and 2e-10 (N = 1000: 41 iterations).
#: 0.05 broke the end game of a 2-battery fleet (a coupled solve off by 4e8 times its right-hand side)
SIGMA_MIN = 3e-2
ACCEPTABLE_TOL = 1e-6  #: relative accuracy accepted when the end game breaks down numerically before ``tol``
STALL_ITERATIONS = 3  #: iterations without progress, once at the acceptable level, that end the loop
RECOVERY_LEVEL = 1e-4  #: below this relative accuracy a step that worsens the best iterate 100x is rejected
RECOVERY_SIGMA = 0.5  #: centring of the retried step after a rejection
MAX_REJECTIONS = 3  #: consecutive rejections that end the loop at the best iterate
STATUSES = ("converged", "max_iter", "infeasible_target", "numerical_error")

# --------------------------------------------------------------------------------------------------
# The per-battery side of an ALADIN iteration (vmapped)
# --------------------------------------------------------------------------------------------------


def coupling_map(sc: Scales, x: Primal) -> Array:
    """``S_i x_i``: the battery's net power p (MW) from its scaled variables."""
    return sc.power * (x.d - x.c)


def coupling_dual(qp: BatteryQP, sc: Scales, lam: Array) -> Primal:
    """``S~_i' lam``: the multiplier's term in the battery's scaled dual residual."""
    v = lam * sc.power / sc.money
    return Primal(-v, v, jnp.zeros_like(qp.f_eta), jnp.zeros_like(qp.fu))


def coupling_panel(fac: Factor) -> Array:
    """``Y_i = X_i D_i E`` ((2T+1) x T): the factor's columns on the coupled variables, where ``E`` maps a
    net-power vector onto ``(c, d, eta)`` as ``(-1, +1, 0)``. It gives both the curvature and the recovery."""
    T = fac.x11.shape[0]
    s_c, s_d = fac.scale[:T], fac.scale[T : 2 * T]
    # X's charge columns are (X11; -X22 L21 X11), its discharge columns (0; X22[:, :T])
    top = fac.x11 * s_c
    return jnp.concatenate([-top, fac.x22 @ (jnp.eye(T + 1, T) * s_d + fac.l21 @ top)], axis=0)


def coupling_curvature(Y: Array, sc: Scales) -> Array:
    """``M_i = S_i K_i^-1 S~_i'`` (T x T, MW per EUR/MW) from the panel ``Y_i`` (:func:`coupling_panel`)."""
    return (sc.power**2 / sc.money) * (Y.T @ Y)


def coupling_response(
    qp: BatteryQP, fac: Factor, Y: Array, sc: Scales, s: Array, z: Array, lam: Array
) -> tuple[Primal, Array, Array]:
    """The battery's Newton step for the right-hand side ``S~_i' lam`` alone (the aggregator's price step).

    The same arithmetic as the general local solve with ``r_d = S~' lam`` and zero primal and complementarity
    residuals, but the condensed solve ``D X' X D E v`` starts from the panel: ``X D E v = Y v`` (a (2T+1) x T
    product instead of a (2T+1)^2 one, and no ``G'`` of zero residuals).
    """
    T = qp.fc.shape[0]
    v = lam * sc.power / sc.money
    y = -fac.scale * factor_xt(fac, Y @ v)
    dc, dd, deta = y[:T], y[T : 2 * T], y[2 * T]
    du = fac.w_loss * (loss_of_p(qp, dc - dd) - deta) / fac.d_u
    dx = Primal(dc, dd, deta, du)
    ds = -apply_G(qp, dx)
    return dx, ds, -z * ds / s


class LocalState(NamedTuple):
    x: Primal
    s: Array
    z: Array


class History(NamedTuple):
    """Per-iteration diagnostics (arrays of length ``max_iter``; NaN after the last iteration)."""

    primal_residual: Array
    dual_residual: Array
    coupling_residual_mw: Array
    mu: Array
    step: Array
    objective_eur: Array
    gap: Array  #: relative duality gap (ALADIN; NaN for ADMM)


class ALADINState(NamedTuple):
    local: LocalState  #: per battery (leading axis N)
    lam: Array  #: (T,) coupling multiplier (EUR per MW of p_t)
    iteration: Array
    status: Array  #: 0 running/converged, see STATUSES
    converged: Array
    primal_residual: Array
    dual_residual: Array
    coupling_residual_mw: Array
    gap: Array
    history: History
    best_local: LocalState  #: the iterate with the smallest merit so far (what is reported)
    best_lam: Array
    best_merit: Array  #: max(relative measures) / tol of the best iterate
    best_measures: tuple  #: (primal, dual, coupling, gap) of the best iterate
    since_best: Array  #: iterations since the best iterate
    rejections: Array  #: consecutive rejected steps (end-game recovery)


def _weighted(weight: Array | None, a: Array) -> Array:
    """``a`` (leading battery axis) times each battery's weight (1 real, 0 a padding replica); ``a`` itself
    without weights. Applied to every contribution to a sum over batteries (see :mod:`jaxvpp.coordination.distributed`)."""
    return a if weight is None else a * jnp.reshape(weight, weight.shape + (1,) * (a.ndim - 1))


def _local_measures(qp, sc, st: LocalState, lam):
    pres, dres, gap = kkt_measures(qp, st.x, st.s, st.z, extra_dual=coupling_dual(qp, sc, lam))
    return pres, dres, gap


@functools.partial(jax.jit, static_argnames=("tol", "max_iter", "verbose"))
def aladin_ipm(
    fleet: Fleet,
    market: Market,
    target_mw: Array,
    settings: Settings,
    tol: float = 1e-8,
    max_iter: int = 100,
    verbose: bool = False,
    warm_start: tuple[LocalState, Array] | None = None,
    weight: Array | None = None,
) -> ALADINState:
    """Interior-point ALADIN: the jitted loop (see the module docstring). Returns the final state.

    ``weight`` (N,): 1 for a battery, 0 for a padding replica of one (a fleet padded to a multiple of the
    device count, :mod:`jaxvpp.coordination.distributed`); it multiplies every contribution to a sum over batteries, so a
    replica, which follows its original's trajectory exactly, changes no sum, min or max. None: all 1.
    With weights (the sharded run) the live log is an unordered callback: JAX supports ordered effects on
    one device only; the unordered one runs once per iteration, on the mesh's first device.
    """
    # A stays the market's one (K, T) matrix: its products with the fleet's vectors are single matrix products
    qp, sc = jax.vmap(lambda b: build_qp(b, market, settings), out_axes=(FLEET_QP_AXES, 0))(fleet)
    qv = lambda f, *axes: jax.vmap(f, in_axes=(FLEET_QP_AXES, *axes))  # noqa: E731  (vmap over qp and more)
    N = fleet.size
    n_real = N if weight is None else jnp.sum(weight)
    T = market.horizon
    if warm_start is None:
        x0, s0, z0 = qv(initial_point)(qp)
        lam0 = jnp.zeros(T)
    else:
        (x0, s0, z0), lam0 = warm_start
        s0, z0 = jnp.maximum(s0, 1e-4), jnp.maximum(z0, 1e-4)
    target = jnp.asarray(target_mw)
    scale_target = 1.0 + jnp.max(jnp.abs(target))
    v_measures = qv(_local_measures, 0, 0, None)

    def measures(local: LocalState, lam):
        """Largest relative primal and dual residuals over the batteries, the fleet's relative duality gap
        (EUR, against the fleet objective: a battery with an objective near zero need not resolve its own
        relative gap to 1e-8), the coupling residual (MW) and the fleet objective (EUR)."""
        pres, dres, _ = v_measures(qp, sc, local, lam)
        r = agg.coupling_residual(_weighted(weight, jax.vmap(coupling_map)(sc, local.x)), target)
        cres = jnp.max(jnp.abs(r))
        gap_eur = jnp.sum(_weighted(weight, sc.money * jnp.sum(local.s * local.z, axis=1)))
        obj = fleet_objective(local)
        return jnp.max(pres), jnp.max(dres), gap_eur / (1.0 + jnp.abs(obj)), cres, obj

    def merit(pres, dres, gap, cres):
        """The largest measure relative to its tolerance (<= 1: converged)."""
        return jnp.maximum(jnp.maximum(pres, dres), jnp.maximum(gap, cres / scale_target)) / tol

    def fleet_objective(local: LocalState):
        return jnp.sum(_weighted(weight, sc.money * qv(objective, 0)(qp, local.x)))

    v_map = lambda sc_, x_: _weighted(weight, jax.vmap(coupling_map)(sc_, x_))  # noqa: E731  (only ever summed)
    v_dual = qv(coupling_dual, 0, None)
    v_once = qv(newton_once, 0, 0, 0, 0, 0, 0)
    v_response = qv(coupling_response, 0, 0, 0, 0, 0, None)

    def direction(fac, Y, M, cfac, local, r_d, r_p, r_c, net, tgt):
        """Newton direction of the coupled system, refined as a whole.

        Solves, for every battery, ``Q dx + G'dz + S~' dlam = -r_d``, ``G dx + ds = -r_p``,
        ``Z ds + S dz = -r_c``, and for the fleet ``sum_i (net_i + S_i dx_i) = tgt``. The approximate
        solve (local step with the battery's factor, aggregator solve, local recovery with the SAME
        factor) is consistent with the curvatures ``M_i`` the batteries sent, so the recovered steps meet
        the linearised coupling exactly; iterative refinement against the residuals of the whole coupled
        system then removes the factorisation error, until the residual is below ``REFINE_RTOL`` times
        the right-hand side (at most ``COUPLED_REFINE`` rounds: at N = 1000 only the last few
        iterations needed any, so the refinement costs little where it is not needed). (Recovering with a refined local solve instead was
        inconsistent with ``M_i``: where ``sum_i M_i`` is nearly singular the mismatch was amplified to
        tens of MW in the end game.)
        """
        s, z = local.s, local.z

        def approx(rd, rp, rc, n):
            x0, s0, z0 = v_once(qp, fac, s, z, rd, rp, rc)
            msgs = agg.AgentMessage(curvature=M, gradient=v_map(sc, x0), net_mw=n)
            dl, _ = agg.solve_coupling(cfac, msgs, tgt)
            hx, hs, hz = v_response(qp, fac, Y, sc, s, z, dl)
            return primal_map(jnp.add, x0, hx), s0 + hs, z0 + hz, dl

        def residual(d):
            dx, ds, dz, dl = d
            e_d = primal_map(
                lambda a, b, c, e: a + b + c + e,
                r_d,
                qv(apply_Q, 0)(qp, dx),
                qv(apply_GT, 0)(qp, dz),
                v_dual(qp, sc, dl),
            )
            e_p = r_p + qv(apply_G, 0)(qp, dx) + ds
            e_c = r_c + z * ds + s * dz
            return e_d, e_p, e_c, net + v_map(sc, dx)

        def size(e_d, e_p, e_c, e_n):
            return jnp.maximum(
                jnp.maximum(max_abs(e_d), max_abs(e_p)),
                jnp.maximum(max_abs(e_c), jnp.max(jnp.abs(jnp.sum(e_n, axis=0) - tgt)) / scale_target),
            )

        rhs = (r_d, r_p, r_c, net)
        goal = REFINE_RTOL * size(*rhs)

        def more(carry):
            k, _, e = carry
            return (k == 0) | ((k <= COUPLED_REFINE) & (size(*e) > goal))

        def refine(carry):
            # round 0 is the plain solve (from d = 0 the residual is the right-hand side); one traced copy
            # of the solve serves all rounds, which keeps the compiled program small
            k, d, e = carry
            c = approx(*e)
            d = (primal_map(jnp.add, d[0], c[0]), d[1] + c[1], d[2] + c[2], d[3] + c[3])
            return k + 1, d, residual(d)

        d_zero = (jax.tree.map(jnp.zeros_like, r_d), jnp.zeros_like(r_p), jnp.zeros_like(r_c), jnp.zeros_like(tgt))
        return lax.while_loop(more, refine, (jnp.asarray(0), d_zero, rhs))[1]

    def body(state: ALADINState) -> ALADINState:
        local, lam = state.local, state.lam
        s, z = local.s, local.z
        r_d, r_p = qv(kkt_residuals, 0, 0, 0)(qp, local.x, s, z)
        r_d = primal_map(jnp.add, r_d, v_dual(qp, sc, lam))
        fac = qv(lambda q, w: factor(q, w, FACTOR_REGULARISATION), 0)(qp, z / s)
        Y = jax.vmap(coupling_panel)(fac)
        M = _weighted(weight, jax.vmap(coupling_curvature)(Y, sc))
        p_now = v_map(sc, local.x)
        cfac = agg.factor_coupling(agg.AgentMessage(curvature=M, gradient=jnp.zeros_like(p_now), net_mw=p_now))
        comp = jnp.sum(s * z, axis=1)
        rows = s.shape[1]
        mu = jnp.sum(_weighted(weight, comp)) / (n_real * rows)
        # after a rejected step the retry from the same point is centred harder
        sigma_min = jnp.where(state.rejections > 0, RECOVERY_SIGMA, SIGMA_MIN)
        zero_d = jax.tree.map(jnp.zeros_like, r_d)
        zero_p = jnp.zeros_like(r_p)

        def fleet_steps(ds_, dz_):
            return agg.StepMessage(jax.vmap(max_step)(s, ds_), jax.vmap(max_step)(z, dz_), comp, jnp.full(N, rows))

        def own_len(ds_, dz_):
            """Each battery's own fraction-to-boundary step (N,): used only to set its centring (the fleet's
            step, :func:`aggregator.common_step`, is the same rule with a min over the batteries)."""
            st_ = fleet_steps(ds_, dz_)
            return jnp.minimum(1.0, 0.99 * jnp.minimum(st_.max_primal, st_.max_dual))

        def step_len(ds_, dz_):
            return jnp.minimum(*agg.common_step(fleet_steps(ds_, dz_)))

        # One loop over the coupled solves of an iteration, so that the solve is compiled once:
        # k = 0 predictor (affine), k = 1 Mehrotra corrector, k >= 2 Gondzio's centrality correctors.
        # Each is a full coupled solve with the same factorisations: local step, aggregator, recovery.
        def solve_k(k, carry):
            dirn, aff, target_c = carry
            dx, ds, dz, dlam = dirn
            ds_a, dz_a = aff

            # Mehrotra's centring target, per battery: batteries' scaled units differ, and one fleet-wide
            # mu over-centres some and under-centres others (a weighted central path). The affine step
            # that sets a battery's sigma is its OWN: with the fleet-wide step (the shortest over all
            # batteries) every battery was centred as hard as the one that blocked (51 instead of 43
            # iterations at N = 1000); sigma >= SIGMA_MIN keeps batteries whose affine step is full
            # from running off the central path in the end game.
            def mehrotra_target(_):
                a_aff = own_len(ds_a, dz_a)[:, None]
                trial = jnp.sum((s + a_aff * ds_a) * (z + a_aff * dz_a), axis=1)
                return (jnp.clip((trial / comp) ** 3, sigma_min, 1.0) * comp / rows)[:, None]

            # (lax.cond: each solve computes only its own kind's bookkeeping, which at N = 1000 was a third
            # of a solve's time when all three were formed and selected with where)
            target_c = lax.cond(k == 1, mehrotra_target, lambda _: target_c, None)

            def gondzio_rc(_):
                a_cur = step_len(ds, dz)
                a_try = jnp.minimum(1.0, 1.5 * a_cur + 0.1)
                v = (s + a_try * ds) * (z + a_try * dz)
                lo, hi = 0.1 * target_c, 10.0 * target_c
                t_v = jnp.clip(v, lo, hi) - v
                t_v = jnp.where(t_v > hi, hi, t_v)  # cap large corrections (Gondzio's safeguard)
                return -t_v, a_cur

            def newton_rc(_):
                return jnp.where(k == 0, s * z, s * z + ds_a * dz_a - target_c), jnp.asarray(0.0, s.dtype)

            r_c, a_cur = lax.cond(k >= 2, gondzio_rc, newton_rc, None)
            use_res = k <= 1
            rd_k = jax.tree.map(lambda a, b: jnp.where(use_res, a, b), r_d, zero_d)
            rp_k = jnp.where(use_res, r_p, zero_p)
            # correctors (k >= 2) carry no residuals: the coupling mismatch is priced once, by k <= 1
            new = direction(
                fac, Y, M, cfac, local, rd_k, rp_k, r_c, jnp.where(use_res, p_now, 0.0), jnp.where(use_res, target, 0.0)
            )

            # combine: k <= 1 replaces the direction; k >= 2 adds the correction if it lengthens the step
            def add_if_longer(_):
                cx, cs, cz, cl = new
                summed = (primal_map(jnp.add, dx, cx), ds + cs, dz + cz, dlam + cl)
                better = step_len(summed[1], summed[2]) >= 1.01 * a_cur
                return jax.tree.map(lambda n, o: jnp.where(better, n, o), summed, dirn)

            new_dir = lax.cond(k <= 1, lambda _: new, add_if_longer, None)
            new_aff = lax.cond(k == 0, lambda _: (new[1], new[2]), lambda _: (ds_a, dz_a), None)
            return new_dir, new_aff, target_c

        zdir = (jax.tree.map(jnp.zeros_like, local.x), jnp.zeros_like(s), jnp.zeros_like(z), jnp.zeros_like(lam))
        init = (zdir, (jnp.zeros_like(s), jnp.zeros_like(z)), jnp.zeros((N, 1), s.dtype))
        (dx, ds, dz, dlam), _, _ = lax.fori_loop(0, 2 + GONDZIO_CORRECTORS, solve_k, init)
        steps = fleet_steps(ds, dz)
        # one step length for primal and dual: with Q != 0 separate ones stalled the dual residual
        alpha = jnp.minimum(*agg.common_step(steps))
        new_local = LocalState(
            x=primal_map(lambda a, b: a + alpha * b, local.x, dx),
            s=jnp.maximum(s + alpha * ds, 1e-300),
            z=jnp.maximum(z + alpha * dz, 1e-300),
        )
        new_lam = lam + alpha * dlam
        pres, dres, gap, cres, obj = measures(new_local, new_lam)
        finite = jnp.isfinite(pres + dres + gap + cres) & jnp.all(jnp.isfinite(new_lam))
        m_new = jnp.where(finite, merit(pres, dres, gap, cres), jnp.inf)
        conv = m_new <= 1.0
        # End-game guard: near mu -> 0 the factorisations lose the accuracy the coupled solve needs, and a
        # step can throw a converging iterate away (the dual residual jumping from 1e-13 to 1e-4). A step
        # that worsens an iterate already below RECOVERY_LEVEL a hundredfold is rejected: the iterate stays
        # and the next iteration retries from it with a strongly centred direction (sigma >= RECOVERY_SIGMA).
        # A step that is not finite (the factorisation overflowed: a retry from the same point would repeat
        # it), MAX_REJECTIONS in a row, or STALL_ITERATIONS without improvement once at the acceptable
        # level end the loop at the best iterate, which counts as converged if it meets ACCEPTABLE_TOL (as
        # IPOPT's "solved to acceptable level").
        reject = (~finite) | ((m_new > 1e2 * state.best_merit) & (state.best_merit * tol <= RECOVERY_LEVEL))
        rejections = jnp.where(reject, state.rejections + 1, 0)
        better = (m_new < state.best_merit) & ~reject
        since_best = jnp.where(better, 0, state.since_best + 1)
        at_acceptable = state.best_merit * tol <= ACCEPTABLE_TOL
        breakdown = (~finite) | (rejections >= MAX_REJECTIONS) | (at_acceptable & (since_best >= STALL_ITERATIONS))
        diverged = jnp.max(jnp.abs(new_lam)) / settings.dt_hours > 1e9
        status = jnp.where(breakdown, 3, jnp.where(diverged, 2, 0))
        it = state.iteration
        hist = History(*(h.at[it].set(v) for h, v in zip(state.history, (pres, dres, cres, mu, alpha, obj, gap))))
        if verbose:
            jax.debug.callback(log_iteration, it + 1, pres, dres, cres, mu, alpha, obj, gap, ordered=weight is None)
        keep = lambda new, old: jnp.where(reject, old, new)  # noqa: E731
        take = lambda new, old: jnp.where(better, new, old)  # noqa: E731
        return ALADINState(
            local=jax.tree.map(keep, new_local, local),
            lam=keep(new_lam, lam),
            iteration=it + 1,
            status=status,
            converged=conv,
            primal_residual=pres,
            dual_residual=dres,
            coupling_residual_mw=cres,
            gap=gap,
            history=hist,
            best_local=jax.tree.map(take, new_local, state.best_local),
            best_lam=take(new_lam, state.best_lam),
            best_merit=jnp.minimum(m_new, state.best_merit),
            best_measures=jax.tree.map(take, (pres, dres, cres, gap), state.best_measures),
            since_best=since_best,
            rejections=rejections,
        )

    def cond(state: ALADINState) -> Array:
        return (~state.converged) & (state.iteration < max_iter) & (state.status == 0)

    local0 = LocalState(x0, s0, z0)
    pres, dres, gap, cres, _ = measures(local0, lam0)
    nan = jnp.full(max_iter, jnp.nan)
    m0 = merit(pres, dres, gap, cres)
    state0 = ALADINState(
        local0,
        lam0,
        jnp.asarray(0),
        jnp.asarray(0),
        jnp.asarray(False),
        pres,
        dres,
        cres,
        gap,
        History(nan, nan, nan, nan, nan, nan, nan),
        local0,
        lam0,
        jnp.where(jnp.isfinite(m0), m0, jnp.inf),
        (pres, dres, cres, gap),
        jnp.asarray(0),
        jnp.asarray(0),
    )
    final = lax.while_loop(cond, body, state0)
    # Report the best iterate (the last one unless the end-game guard stopped the loop or the limit hit).
    acceptable = final.best_merit * tol <= ACCEPTABLE_TOL
    status = jnp.where(
        final.converged,
        0,
        jnp.where(final.status == 3, jnp.where(acceptable, 0, 3), jnp.where(final.status == 0, 1, final.status)),
    )
    use_best = final.status != 2  # a diverging multiplier (infeasible target) is reported as it stands
    pick = lambda b, f: jnp.where(use_best, b, f)  # noqa: E731
    pres, dres, cres, gap = final.best_measures
    return final._replace(
        local=jax.tree.map(pick, final.best_local, final.local),
        lam=pick(final.best_lam, final.lam),
        status=status,
        converged=status == 0,
        primal_residual=pick(pres, final.primal_residual),
        dual_residual=pick(dres, final.dual_residual),
        coupling_residual_mw=pick(cres, final.coupling_residual_mw),
        gap=pick(gap, final.gap),
    )


LIVE_LOG: dict[str, object] = {"t0": None, "sink": None}


def log_iteration(it, pres, dres, cres, mu, alpha, obj, gap=float("nan")):
    t0 = LIVE_LOG["t0"] or time.perf_counter()
    sink = LIVE_LOG["sink"]
    if np.isnan(float(mu)):  # ADMM: no barrier parameter; its penalty rho travels in the step slot
        tail = f"rho {float(alpha):.2e}"
    else:
        tail = f"gap {float(gap):.2e}  mu {float(mu):.2e}  step {float(alpha):.3f}"
    line = (
        f"  it {int(it):3d}  primal {float(pres):.2e}  dual {float(dres):.2e}  coupling {float(cres):.2e} MW  "
        f"{tail}  objective {float(obj):.4f} EUR  {time.perf_counter() - t0:.2f} s"
    )
    if callable(sink):
        sink(line)
    LIVE_LOG.setdefault("times", []).append(time.perf_counter() - t0)  # type: ignore[union-attr]
