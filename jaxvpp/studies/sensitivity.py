"""Sensitivities of the coordinated optimum by implicit differentiation.

The coordinated problem (see :mod:`jaxvpp.coordination`)

    minimise  sum_i f_i(x_i; theta_i, market, settings)   s.t.  x_i in X_i(theta_i),  sum_i p_i = target

is solved by interior-point ALADIN (not differentiated: no iteration is traced). Its optimum is then made
differentiable through its optimality conditions, in two layers of the implicit function theorem:

1. **Each battery given the multiplier.** At the optimum every battery's schedule solves its *own* problem
   with the coupling multiplier ``lambda`` (EUR per MW of ``p_t``) as a linear price,
   ``x_i = argmin f_i(x_i) + lambda' p_i``. This is exact wherever that local solution is unique, which the
   quadratic power cost guarantees (``q_i > 0``: strictly convex in charge and discharge). So
   ``x_i = x_i(theta_i, market, settings, lambda)`` is differentiated as the battery solver differentiates
   its own optimum, by a custom VJP that re-solves nothing: the transposed local KKT system on the active
   set (:func:`jaxvpp.battery.kernel.adjoint_solve`), then the VJP of the local KKT residual through
   :func:`jaxvpp.battery.qp.build_qp`.
2. **The multiplier.** ``lambda`` is defined by the T equations ``g = sum_i p_i(theta_i, lambda) - target = 0``,
   and a second custom VJP differentiates through them. It needs ``J = dg/dlambda = sum_i dp_i/dlambda``
   (T x T, symmetric negative semidefinite: each term is minus the battery's active-set response, the matrix
   ALADIN's aggregator adds up), computed by T local adjoint solves per battery that share one
   factorisation, then one T x T solve.

Both layers together are the implicit derivative of the whole coupled KKT system (eliminating the local
blocks first is its Schur complement on the coupling rows, the structure of an ALADIN step). It is
simpler than assembling the coupled adjoint by hand and reuses the battery solver's tested adjoint; the
price is the requirement ``q_i > 0`` (with ``q_i = 0`` a battery that is marginal for the coupling is
indifferent between schedules, its local response is singular and the gradient is not defined by this
route; :attr:`Sensitivities.smooth` is then ``False``). Where every battery is idle or at a bound at some step,
``J`` is singular, the coupling multiplier is not unique and the optimum has a kink in the target; the
solve then uses the pseudo-inverse and reports ``condition``.

Gradients reach every numeric fleet parameter, the scenario prices and probabilities, ``alpha``, ``dt`` and
the target. By the envelope theorem ``d objective / d target_t = dt * coupling_price_t`` (EUR per MW): the
coupling price (EUR/MWh) is the marginal cost of raising the target.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxvpp.battery.kernel import BACKWARD_REFINE, adjoint_solve
from jaxvpp.battery.qp import (
    Primal,
    apply_G,
    apply_GT,
    apply_Q,
    build_qp,
    linear_cost,
    primal_map,
    rhs_h,
)
from jaxvpp.battery.solution import fleet_metrics, solve_batteries
from jaxvpp.coordination.aladin import Status, aladin_ipm
from jaxvpp.problem import FLEET_COLUMNS, Fleet, Market, Settings

#: Relative eigenvalue below which ``J = sum_i dp_i/dlambda`` counts as singular (pseudo-inverse there).
SINGULAR_RTOL = 1e-10


class Optimum(NamedTuple):
    """A converged point (the solver's scaled variables) that the differentiable functions start from."""

    x: Primal  #: per battery (leading axis N), scaled units
    s: Array  #: (N, m) slacks
    z: Array  #: (N, m) multipliers of the local rows
    lam: Array  #: (T,) coupling multiplier, EUR per MW of p_t (zeros without a target)


# --------------------------------------------------------------------------------------------------
# Layer 1: one battery's optimum given the multiplier (custom VJP, no re-solve)
# --------------------------------------------------------------------------------------------------


@jax.custom_vjp
def _local_at(battery: Fleet, market: Market, settings: Settings, lam: Array, x: Primal, s: Array, z: Array) -> Primal:
    """``x``, the optimum of ``min f(x) + lam' p`` for one battery, as a function of its data and ``lam``.

    ``x, s, z`` must be that optimum (they are returned as they are); the VJP is the battery solver's
    implicit one (active set ``z > s``).
    """
    return x


def _local_fwd(battery, market, settings, lam, x, s, z):
    return x, (battery, market, settings, lam, x, s, z)


def _local_bwd(res, gx):
    battery, market, settings, lam, x, s, z = res
    qp, _ = build_qp(battery, market, settings, linear_price=lam)
    a, b = adjoint_solve(qp, s, z, gx, jnp.zeros_like(z), refine=BACKWARD_REFINE)

    def residual(battery_, market_, settings_, lam_):
        qp_, _ = build_qp(battery_, market_, settings_, linear_price=lam_)
        r_d = primal_map(lambda p, q, r: p + q + r, apply_Q(qp_, x), linear_cost(qp_), apply_GT(qp_, z))
        return r_d, rhs_h(qp_) - apply_G(qp_, x)

    _, vjp = jax.vjp(residual, battery, market, settings, lam)
    g_b, g_m, g_s, g_l = vjp((primal_map(jnp.negative, a), -b))
    return g_b, g_m, g_s, g_l, None, None, None


_local_at.defvjp(_local_fwd, _local_bwd)


def _fleet_at(fleet: Fleet, market: Market, settings: Settings, lam: Array, opt: Optimum) -> Primal:
    return jax.vmap(_local_at, in_axes=(0, None, None, None, 0, 0, 0))(
        fleet, market, settings, lam, opt.x, opt.s, opt.z
    )


def _net_sum(fleet: Fleet, market: Market, settings: Settings, lam: Array, opt: Optimum) -> Array:
    """``sum_i p_i`` (MW) through the local optima (the scales are the solver's constant power scales)."""
    x = _fleet_at(fleet, market, settings, lam, opt)
    power = jax.lax.stop_gradient(fleet.power_mw)[:, None]
    return jnp.sum(power * (x.d - x.c), axis=0)


# --------------------------------------------------------------------------------------------------
# Layer 2: the coupling multiplier (custom VJP through sum_i p_i(lambda) = target)
# --------------------------------------------------------------------------------------------------


def coupling_jacobian(fleet: Fleet, market: Market, settings: Settings, opt: Optimum) -> Array:
    """``J = d(sum_i p_i)/d lambda`` at the optimum (T x T, MW per EUR/MW; symmetric negative semidefinite)."""
    return jax.jacrev(_net_sum, argnums=3)(fleet, market, settings, opt.lam, opt)


def _pinv_sym(J: Array) -> tuple[Array, Array]:
    """Pseudo-inverse of the symmetric part of ``J`` and its condition number (inf when singular)."""
    Js = 0.5 * (J + J.T)
    w, V = jnp.linalg.eigh(Js)
    big = jnp.max(jnp.abs(w))
    keep = jnp.abs(w) > SINGULAR_RTOL * big
    inv = jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
    cond = jnp.where(jnp.all(keep), big / jnp.min(jnp.abs(w)), jnp.inf)
    return (V * inv) @ V.T, cond


@jax.custom_vjp
def _multiplier(fleet: Fleet, market: Market, settings: Settings, target: Array, opt: Optimum) -> Array:
    """The coupling multiplier ``lambda`` (EUR/MW) as a function of the problem data (``opt.lam`` forward)."""
    return opt.lam


def _mult_fwd(fleet, market, settings, target, opt):
    return opt.lam, (fleet, market, settings, target, opt)


def _mult_bwd(res, g_lam):
    fleet, market, settings, target, opt = res
    J = coupling_jacobian(fleet, market, settings, opt)
    Jinv, _ = _pinv_sym(J)
    v = Jinv @ g_lam  # J is symmetric: J' v = g_lam
    _, vjp = jax.vjp(lambda f, m, s: _net_sum(f, m, s, opt.lam, opt), fleet, market, settings)
    g_f, g_m, g_s = vjp(-v)
    return g_f, g_m, g_s, v.astype(target.dtype), None


_multiplier.defvjp(_mult_fwd, _mult_bwd)


# --------------------------------------------------------------------------------------------------
# Differentiable outputs of the optimum
# --------------------------------------------------------------------------------------------------


class Outputs(NamedTuple):
    """Differentiable outputs of the (coordinated) optimum."""

    objective_eur: Array  #: (N,) each battery's objective (without the coupling term)
    expected_revenue_eur: Array  #: (N,)
    cvar_eur: Array  #: (N,)
    net_mw: Array  #: (N, T)
    coupling_price_eur_per_mwh: Array  #: (T,) -lambda / dt (zeros without a target)


def outputs(fleet: Fleet, market: Market, settings: Settings, target: Array | None, opt: Optimum) -> Outputs:
    """The optimum's economics as differentiable functions of ``(fleet, market, settings, target)``.

    ``opt`` is the converged point (from :func:`solve`); it is not differentiated. Without a target the
    batteries are independent and ``lambda = 0``.
    """
    if target is None:
        lam = jnp.zeros(market.horizon)
    else:
        lam = _multiplier(fleet, market, settings, target, opt)
    x = _fleet_at(fleet, market, settings, lam, opt)
    power = jax.lax.stop_gradient(fleet.power_mw)[:, None]
    charge, discharge = x.c * power, x.d * power
    met = fleet_metrics(fleet, market, settings, charge, discharge)
    return Outputs(
        met["objective_eur"], met["expected_revenue_eur"], met["cvar_eur"], met["net_mw"], -lam / settings.dt_hours
    )


class SolveInfo(NamedTuple):
    """How the solve behind a sensitivity ended."""

    status: Status
    converged: bool
    iterations: int


def solve(
    fleet: Fleet,
    market: Market,
    settings: Settings,
    target: Array | np.ndarray | None,
    *,
    tol: float = 1e-9,
    max_iter: int = 100,
) -> tuple[Optimum, SolveInfo]:
    """The optimum to differentiate at: ALADIN with a target, the batched battery solver without.

    ``tol`` is ALADIN's relative tolerance (the battery solver gets ``min(tol, 1e-10)``).
    """
    if target is None:
        sol, (x, s, z) = solve_batteries(fleet, market, settings, tol=min(tol, 1e-10), max_iter=150, return_state=True)
        conv = bool(np.all(np.asarray(sol.converged)))
        return (
            Optimum(x, s, z, jnp.zeros(market.horizon)),
            SolveInfo(
                status=Status.CONVERGED if conv else Status.MAX_ITER,
                converged=conv,
                iterations=int(np.max(np.asarray(sol.iterations))),
            ),
        )
    st = aladin_ipm(fleet, market, jnp.asarray(target, dtype=jnp.float64), settings, tol=tol, max_iter=max_iter)
    status = Status.from_code(st.status)
    return Optimum(st.local.x, st.local.s, st.local.z, st.lam), SolveInfo(
        status=status, converged=status == Status.CONVERGED, iterations=int(st.iteration)
    )


# --------------------------------------------------------------------------------------------------
# The Python API
# --------------------------------------------------------------------------------------------------


@dataclass
class Sensitivities:
    """Gradients of the optimum's total objective (EUR) and, if asked, Jacobians of other outputs.

    Units: ``d_objective_d_fleet[col]`` is EUR per unit of the column (EUR per MWh of capacity, EUR per MW
    of power, EUR per unit of risk weight, ...), one entry per battery; ``d_objective_d_prices`` EUR per
    (EUR/MWh), shape (K, T); ``d_objective_d_probabilities`` EUR per unit probability (the raw partial
    derivatives: only directions that keep the sum at 1 are meaningful); ``d_objective_d_target`` EUR per
    MW, (T,).
    """

    objective_eur: float
    expected_revenue_eur: np.ndarray  #: (N,)
    cvar_eur: np.ndarray  #: (N,)
    coupling_price_eur_per_mwh: np.ndarray  #: (T,)
    d_objective_d_fleet: dict[str, np.ndarray]  #: column -> (N,)
    d_objective_d_prices: np.ndarray  #: (K, T)
    d_objective_d_probabilities: np.ndarray  #: (K,)
    d_objective_d_alpha: float
    d_objective_d_dt_hours: float
    d_objective_d_target: np.ndarray | None  #: (T,) EUR/MW; None without a target
    status: Status  #: how the solve ended (a ``str``: ``"converged"``, ...)
    converged: bool
    iterations: int
    smooth: bool  #: every battery has q > 0 and J is nonsingular (the gradient is the derivative)
    condition: float  #: condition number of J = d(sum p)/d lambda (inf: singular; nan without a target)
    #: output name -> input name -> Jacobian (output dims first); filled when ``jacobians=True``
    jacobians: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _inputs_grad_tree(g_fleet: Fleet, g_market: Market, g_settings: Settings, g_target) -> dict[str, np.ndarray]:
    out = {f"fleet.{c}": np.asarray(getattr(g_fleet, c)) for c in FLEET_COLUMNS}
    out["prices"] = np.asarray(g_market.prices)
    out["probabilities"] = np.asarray(g_market.probabilities)
    out["alpha"] = np.asarray(g_settings.alpha)
    out["dt_hours"] = np.asarray(g_settings.dt_hours)
    if g_target is not None:
        out["target"] = np.asarray(g_target)
    return out


def _as_float_settings(settings: Settings) -> Settings:
    return Settings(
        dt_hours=jnp.asarray(settings.dt_hours, dtype=jnp.float64),
        alpha=jnp.asarray(settings.alpha, dtype=jnp.float64),
        baseline=settings.baseline,
    )


def sensitivities(
    fleet: Fleet,
    market: Market,
    target: np.ndarray | Array | None,
    settings: Settings = Settings(),
    *,
    jacobians: bool = False,
    tol: float = 1e-9,
    max_iter: int = 100,
) -> Sensitivities:
    """Solve (ALADIN with a target, the battery solver without) and differentiate the optimum.

    The total objective's gradient is one reverse pass. With ``jacobians=True`` the Jacobians of each
    battery's expected revenue and CVaR ((N,) outputs) and of the coupling price ((T,)) with respect to
    every input are added (``jax.jacrev``: one reverse pass per output row, vmapped), under
    ``jacobians["expected_revenue_eur" | "cvar_eur" | "coupling_price_eur_per_mwh"][input]`` with inputs
    ``fleet.<column>``, ``prices``, ``probabilities``, ``alpha``, ``dt_hours`` and ``target``.
    """
    settings = _as_float_settings(settings)
    market = Market(jnp.asarray(market.prices, jnp.float64), jnp.asarray(market.probabilities, jnp.float64))
    fleet = Fleet(*(jnp.asarray(a, jnp.float64) for a in fleet))
    tgt = None if target is None else jnp.asarray(target, jnp.float64)
    opt, info = solve(fleet, market, settings, tgt, tol=tol, max_iter=max_iter)
    return _differentiate(fleet, market, settings, tgt, opt, info, jacobians)


@functools.partial(jax.jit, static_argnames=("with_target",))
def _value_and_grad(fleet, market, settings, target, opt, with_target: bool):
    def total(f, m, s, t):
        out = outputs(f, m, s, t if with_target else None, opt)
        return jnp.sum(out.objective_eur), out

    (val, out), grads = jax.value_and_grad(total, argnums=(0, 1, 2, 3), has_aux=True)(fleet, market, settings, target)
    J = coupling_jacobian(fleet, market, settings, opt) if with_target else jnp.eye(market.horizon)
    _, cond = _pinv_sym(J)
    return val, out, grads, cond


@functools.partial(jax.jit, static_argnames=("with_target",))
def _jacobians(fleet, market, settings, target, opt, with_target: bool):
    def vec(f, m, s, t):
        out = outputs(f, m, s, t if with_target else None, opt)
        return out.expected_revenue_eur, out.cvar_eur, out.coupling_price_eur_per_mwh

    return jax.jacrev(vec, argnums=(0, 1, 2, 3))(fleet, market, settings, target)


def _differentiate(fleet, market, settings, tgt, opt, info: SolveInfo, jacobians: bool) -> Sensitivities:
    with_target = tgt is not None
    t_arg = tgt if with_target else jnp.zeros(market.horizon)
    val, out, (g_f, g_m, g_s, g_t), cond = _value_and_grad(fleet, market, settings, t_arg, opt, with_target)
    q_ok = bool(np.all(np.asarray(fleet.quadratic_cost_eur_per_mw2h) > 0))
    cond = float(cond) if with_target else float("nan")
    res = Sensitivities(
        objective_eur=float(val),
        expected_revenue_eur=np.asarray(out.expected_revenue_eur),
        cvar_eur=np.asarray(out.cvar_eur),
        coupling_price_eur_per_mwh=np.asarray(out.coupling_price_eur_per_mwh),
        d_objective_d_fleet={c: np.asarray(getattr(g_f, c)) for c in FLEET_COLUMNS},
        d_objective_d_prices=np.asarray(g_m.prices),
        d_objective_d_probabilities=np.asarray(g_m.probabilities),
        d_objective_d_alpha=float(g_s.alpha),
        d_objective_d_dt_hours=float(g_s.dt_hours),
        d_objective_d_target=np.asarray(g_t) if with_target else None,
        status=info.status,
        converged=info.converged,
        iterations=info.iterations,
        smooth=bool(q_ok and (not with_target or np.isfinite(cond))),
        condition=cond,
    )
    if jacobians:
        jac = _jacobians(fleet, market, settings, t_arg, opt, with_target)
        names = ("expected_revenue_eur", "cvar_eur", "coupling_price_eur_per_mwh")
        for name, per_input in zip(names, jac):
            tree = _inputs_grad_tree(*per_input[:3], per_input[3] if with_target else None)
            res.jacobians[name] = tree
    return res
