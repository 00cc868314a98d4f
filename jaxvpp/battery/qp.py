"""The problem in the solver's form: one battery's risk-aware QP, scaled, and its structured operators.

Each battery's convex quadratic program (the model of :mod:`jaxvpp.problem`: expected profit minus a CVaR
penalty) is written as ``min 1/2 x'Qx + f'x  s.t.  G x <= h`` over ``x = (c, d, eta, u)``, with ``2T + 1 + K``
unknowns per battery (:class:`Primal`). :func:`build_qp` builds it as a :class:`BatteryQP` in scaled units,
with the scale factors (:class:`Scales`); ``G``, ``G'``, ``Q`` and ``h`` are applied from their structure
(:func:`apply_G`, :func:`apply_GT`, :func:`apply_Q`, :func:`rhs_h`), never formed as dense matrices.

Structure that the solver exploits:

* the energy trajectory is eliminated: ``e = e_0 + dt L (eta_c c - d / eta_d)`` with ``L`` the
  lower-triangular ones matrix, so the energy rows' block of the Newton matrix is ``L' diag(w) L``, whose
  entries are suffix sums of ``w``; ramp rows give a tridiagonal block in ``p``; bounds are diagonal;
* the CVaR auxiliaries ``u_k`` have a diagonal block and are condensed out exactly, leaving a rank-K term
  ``A' diag(omega) A`` in ``p`` with ``omega = w_loss w_u / (w_loss + w_u)``;
* the remaining ``(2T + 1) x (2T + 1)`` system is factored by :mod:`jaxvpp.battery.kernel`.

Every battery is scaled before the solve (powers by P, energies by E, money by a price scale), so one
tolerance serves batteries of 0.1 MW and 100 MW alike. A risk weight of zero is handled structurally: the
CVaR block is replaced by a decoupled, bounded one (the reported CVaR is always the exact CVaR of the
schedule).

:func:`build_qp` accepts the extra linear price and proximal term that coordination adds to each battery's
objective; the Newton kernel built on these operators (:func:`jaxvpp.battery.kernel.factor_net`,
:func:`jaxvpp.battery.kernel.net_solve_start`, :func:`jaxvpp.battery.kernel.kkt_residuals`) is what the
coordination layer calls every ALADIN iteration.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
from jax import Array, lax

from jaxvpp.problem import Fleet, Market, Settings

# --------------------------------------------------------------------------------------------------
# Problem data in the solver's (scaled) form
# --------------------------------------------------------------------------------------------------


class Primal(NamedTuple):
    """A vector in the space of one battery's unknowns (scaled units)."""

    c: Array  #: (T,) charge / P
    d: Array  #: (T,) discharge / P
    eta: Array  #: () CVaR threshold / money scale
    u: Array  #: (K,) CVaR excess losses / money scale


class BatteryQP(NamedTuple):
    """One battery's QP ``min 1/2 x'Qx + f'x  s.t.  G x <= h`` in structured, scaled form.

    Rows of ``G x <= h`` in order: ``-c <= 0``, ``c <= ub_c``, ``-d <= 0``, ``d <= ub_d``, energy upper
    ``L(gc c - gd d) <= e_hi``, energy lower ``-L(gc c - gd d) <= e_lo``, ramp ``+-mask D(d - c) <= r_hi``,
    ``-u <= 0`` and loss rows ``-r A (d - c) - eta - u <= 0`` with ``r = risk_on``.

    ``A`` depends on the market alone (every battery's money scale is proportional to its power scale), so a
    fleet shares one: built under ``vmap`` from an unbatched market it stays unbatched, and its products with
    the fleet's vectors are single matrix products rather than N small ones.
    """

    qc: Array  #: (T,) Hessian diagonal on c
    qd: Array  #: (T,) Hessian diagonal on d
    rho: Array  #: (T,) Hessian on p = d - c (proximal weight)
    fc: Array  #: (T,) linear cost on c
    fd: Array  #: (T,) linear cost on d
    f_eta: Array  #: () linear cost on eta
    fu: Array  #: (K,) linear cost on u
    ub_c: Array  #: () upper bound on c
    ub_d: Array  #: () upper bound on d
    gc: Array  #: () energy per unit charge per step
    gd: Array  #: () energy per unit discharge per step
    e_hi: Array  #: (T,) headroom to the upper energy bound
    e_lo: Array  #: (T,) headroom to the lower energy bound (last step: to e_0)
    ramp_mask: Array  #: () 1.0 with a ramp limit, 0.0 without
    r_hi: Array  #: (T-1,) ramp bound per step
    A: Array  #: (K, T) loss coefficients on p (shared by a fleet)
    risk_on: Array  #: () 1.0 with a CVaR term, 0.0 for a risk weight of zero (the loss rows then decouple)


#: ``vmap`` axes of a fleet's QP: every field batched except the shared loss matrix ``A``
FLEET_QP_AXES = BatteryQP(**{f: 0 for f in BatteryQP._fields})._replace(A=None)


class Scales(NamedTuple):
    """Scale factors between physical and solver units (constants: ``stop_gradient``)."""

    power: Array  #: MW per unit of c, d
    energy: Array  #: MWh per unit of the energy rows
    money: Array  #: EUR per unit of objective (and of eta, u)


def num_rows(T: int, K: int) -> int:
    """Number of inequality rows of one battery's QP."""
    return 6 * T + 2 * (T - 1) + 2 * K


def row_slices(T: int, K: int) -> dict[str, slice]:
    sizes = [
        ("c_lo", T),
        ("c_hi", T),
        ("d_lo", T),
        ("d_hi", T),
        ("e_hi", T),
        ("e_lo", T),
        ("r_hi", T - 1),
        ("r_lo", T - 1),
        ("u_lo", K),
        ("loss", K),
    ]
    out, start = {}, 0
    for name, size in sizes:
        out[name] = slice(start, start + size)
        start += size
    return out


def _safe_where(cond: Array, x: Array, fallback: float) -> Array:
    """``where(cond, x, fallback)`` whose gradient is finite where ``x`` is not."""
    return jnp.where(cond, jnp.where(cond, x, fallback), fallback)


def build_qp(
    battery: Fleet,
    market: Market,
    settings: Settings,
    linear_price: Array | None = None,
    prox_weight: Array | None = None,
    prox_center: Array | None = None,
) -> tuple[BatteryQP, Scales]:
    """One battery's QP in scaled form (call under ``vmap`` for a fleet).

    Args:
        battery: one battery's parameters (scalar fields).
        market: prices (K, T) EUR/MWh and probabilities (K,).
        settings: dt (hours), alpha, baseline.
        linear_price: optional (T,) extra cost per MW of net injection p_t (EUR/MW), i.e. the objective
            gains ``linear_price' p``. Coordination passes its multiplier here.
        prox_weight: optional (T,) or () proximal weight (EUR/MW^2): adds ``prox_weight/2 |p - prox_center|^2``.
        prox_center: optional (T,) proximal centre (MW).

    Returns:
        The scaled QP and the scale factors.
    """
    T = market.horizon
    dt = settings.dt_hours
    b = battery
    prices = jnp.asarray(market.prices)
    w = jnp.asarray(market.probabilities)

    P_s = lax.stop_gradient(b.power_mw)
    E_s = lax.stop_gradient(b.capacity_mwh)
    mean_price = lax.stop_gradient(jnp.mean(jnp.abs(prices)))
    money = lax.stop_gradient(dt * P_s * jnp.maximum(mean_price, 1.0) * T)
    scales = Scales(power=P_s, energy=E_s, money=money)

    expected_price = w @ prices  # (T,) EUR/MWh
    # Linear cost on p (EUR per MW): -E[Revenue] = -dt pibar' p ; plus coordination price.
    lin_p = -dt * expected_price
    if linear_price is not None:
        lin_p = lin_p + linear_price
    rho = jnp.zeros(T)
    if prox_weight is not None:
        rho = jnp.broadcast_to(jnp.asarray(prox_weight, dtype=prices.dtype), (T,))
        center = jnp.zeros(T) if prox_center is None else prox_center
        lin_p = lin_p - rho * center
    deg = b.degradation_eur_per_mwh * dt
    q = b.quadratic_cost_eur_per_mw2h * dt

    # Risk: loss_k = baseline - Rev_k = -dt a_k' p ; a_k = pi_k (- pibar for the expected baseline).
    a = prices - expected_price[None, :] if settings.baseline == "expected" else prices
    risk = b.risk_weight
    active = risk > 0.0
    lam = jnp.where(active, risk, 1.0)  # decoupled, bounded CVaR block when lambda == 0
    # dt a P_s / money, written without the battery's P_s (it cancels) so that A stays the market's alone
    A = a / lax.stop_gradient(jnp.maximum(mean_price, 1.0) * T)

    e0 = b.soc_initial * b.capacity_mwh
    e_max = b.soc_max * b.capacity_mwh
    e_min = jnp.full(T, b.soc_min * b.capacity_mwh).at[T - 1].set(jnp.maximum(b.soc_min * b.capacity_mwh, e0))
    has_ramp = jnp.isfinite(b.ramp_mw_per_h)
    r_hi = _safe_where(has_ramp, b.ramp_mw_per_h * dt / P_s, 1.0)

    qp = BatteryQP(
        qc=jnp.full(T, q) * P_s**2 / money,
        qd=jnp.full(T, q) * P_s**2 / money,
        rho=rho * P_s**2 / money,
        fc=(deg - lin_p) * P_s / money,
        fd=(deg + lin_p) * P_s / money,
        f_eta=lam,
        fu=lam * w / settings.alpha,
        ub_c=b.power_mw / P_s,
        ub_d=b.power_mw / P_s,
        gc=dt * b.eta_charge * P_s / E_s,
        gd=dt / b.eta_discharge * P_s / E_s,
        e_hi=jnp.full(T, (e_max - e0) / E_s),
        e_lo=(e0 - e_min) / E_s,
        ramp_mask=has_ramp.astype(prices.dtype),
        r_hi=jnp.full(T - 1, r_hi),
        A=A,
        risk_on=active.astype(prices.dtype),
    )
    return qp, scales


# --------------------------------------------------------------------------------------------------
# Structured operators
# --------------------------------------------------------------------------------------------------


def _dot(a: Primal, b: Primal) -> Array:
    return sum(jnp.vdot(x, y) for x, y in zip(a, b))


def primal_map(f, *trees):
    return Primal(*(f(*xs) for xs in zip(*trees)))


def max_abs(tree) -> Array:
    """Largest absolute entry over every leaf of a pytree (the infinity norm of its flattened leaves)."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)]))


def _lower_ones(T: int) -> np.ndarray:
    """The lower-triangular ones matrix L (cumulative sums as one matrix product: XLA on CPU compiles a
    product far faster than its scan lowering of cumsum, and for T <= 96 it costs no more)."""
    return np.tril(np.ones((T, T)))


def loss_of_p(qp: BatteryQP, p: Array) -> Array:
    """``r A p`` (K,): the loss rows' coefficients times a net-power vector (scaled units)."""
    return qp.risk_on * (qp.A @ p)


def loss_of_p_t(qp: BatteryQP, v: Array) -> Array:
    """``r A' v`` (T,): the transpose of :func:`loss_of_p`."""
    return qp.risk_on * (v @ qp.A)


def apply_G(qp: BatteryQP, x: Primal) -> Array:
    """``G x`` as a flat (m,) vector."""
    p = x.d - x.c
    energy = _lower_ones(p.shape[0]) @ (qp.gc * x.c - qp.gd * x.d)
    dp = qp.ramp_mask * (p[1:] - p[:-1])
    loss = -loss_of_p(qp, p) - x.eta - x.u
    return jnp.concatenate([-x.c, x.c, -x.d, x.d, energy, -energy, dp, -dp, -x.u, loss])


def apply_GT(qp: BatteryQP, z: Array) -> Primal:
    """``G' z`` for a flat (m,) vector ``z``."""
    T, K = qp.fc.shape[0], qp.fu.shape[0]
    sl = row_slices(T, K)
    nu = z[sl["e_hi"]] - z[sl["e_lo"]]
    s_nu = _lower_ones(nu.shape[0]).T @ nu  # L' nu
    mu = qp.ramp_mask * (z[sl["r_hi"]] - z[sl["r_lo"]])
    d_mu = jnp.concatenate([jnp.zeros(1), mu]) - jnp.concatenate([mu, jnp.zeros(1)])  # D' mu
    z_loss = z[sl["loss"]]
    g_p = d_mu - loss_of_p_t(qp, z_loss)  # gradient in p
    gc = -z[sl["c_lo"]] + z[sl["c_hi"]] + qp.gc * s_nu - g_p
    gd = -z[sl["d_lo"]] + z[sl["d_hi"]] - qp.gd * s_nu + g_p
    return Primal(gc, gd, -jnp.sum(z_loss), -z[sl["u_lo"]] - z_loss)


def rhs_h(qp: BatteryQP) -> Array:
    """The right-hand side ``h`` as a flat (m,) vector."""
    T, K = qp.fc.shape[0], qp.fu.shape[0]
    zT, zK = jnp.zeros(T), jnp.zeros(K)
    ones_c = jnp.full(T, qp.ub_c)
    ones_d = jnp.full(T, qp.ub_d)
    return jnp.concatenate([zT, ones_c, zT, ones_d, qp.e_hi, qp.e_lo, qp.r_hi, qp.r_hi, zK, zK])


def apply_Q(qp: BatteryQP, x: Primal) -> Primal:
    """``Q x``."""
    rp = qp.rho * (x.d - x.c)
    return Primal(qp.qc * x.c - rp, qp.qd * x.d + rp, jnp.zeros_like(x.eta), jnp.zeros_like(x.u))


def linear_cost(qp: BatteryQP) -> Primal:
    """``f``."""
    return Primal(qp.fc, qp.fd, qp.f_eta, qp.fu)


def objective(qp: BatteryQP, x: Primal) -> Array:
    """``1/2 x'Qx + f'x`` (scaled units)."""
    return 0.5 * _dot(x, apply_Q(qp, x)) + _dot(linear_cost(qp), x)
