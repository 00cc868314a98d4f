"""Phase IV: the local agent. Every battery's risk-aware problem, solved for the whole fleet at once.

Each battery solves the convex quadratic program of :mod:`jaxvpp.problem` (expected profit minus a CVaR
penalty) by a primal-dual interior-point method (Mehrotra predictor-corrector) written in JAX: float64,
``jit``-compiled, batched with ``vmap`` over batteries (a batched ``while_loop`` over a fixed number of slots
that run in lock-step; a battery that has converged leaves its slot to the next one in line), differentiable
by implicit differentiation of the optimality conditions (a ``custom_vjp``; no unrolling of iterations).

Structure that the solver exploits (per battery, ``x = (c, d, eta, u)`` with ``2T + 1 + K`` unknowns):

* the energy trajectory is eliminated: ``e = e_0 + dt L (eta_c c - d / eta_d)`` with ``L`` the
  lower-triangular ones matrix, so the energy rows' block of the Newton matrix is ``L' diag(w) L``, whose
  entries are suffix sums of ``w``; ramp rows give a tridiagonal block in ``p``; bounds are diagonal;
* the CVaR auxiliaries ``u_k`` have a diagonal block and are condensed out exactly, leaving a rank-K term
  ``A' diag(omega) A`` in ``p`` with ``omega = w_loss w_u / (w_loss + w_u)``;
* the remaining ``(2T + 1) x (2T + 1)`` system is solved by Cholesky with static regularisation and
  iterative refinement.

Every battery is scaled before the solve (powers by P, energies by E, money by a price scale), so one
tolerance serves batteries of 0.1 MW and 100 MW alike. A risk weight of zero is handled structurally: the
CVaR block is replaced by a decoupled, bounded one (the reported CVaR is always the exact CVaR of the
schedule).

The same per-battery Newton kernel (:func:`factor`, :func:`solve_factored`, :func:`kkt_residuals`) is what
the coordination layer calls every ALADIN iteration; :func:`build_qp` accepts the extra linear price and
proximal term that coordination adds to each battery's objective.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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


def _row_slices(T: int, K: int) -> dict[str, slice]:
    sizes = [("c_lo", T), ("c_hi", T), ("d_lo", T), ("d_hi", T), ("e_hi", T), ("e_lo", T),
             ("r_hi", T - 1), ("r_lo", T - 1), ("u_lo", K), ("loss", K)]
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


def _pmap(f, *trees):
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
    sl = _row_slices(T, K)
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


# --------------------------------------------------------------------------------------------------
# The Newton kernel: K = Q + G' W G, condensed onto y = (c, d, eta) and factored
# --------------------------------------------------------------------------------------------------


class Factor(NamedTuple):
    """A factored, condensed Newton matrix of one battery: ``K^-1 = D X' X D``.

    ``X = L^-1`` for the equilibrated matrix ``D K D = L L'``, split after the T charge rows, is kept as its
    diagonal blocks and the off-diagonal block of ``L``: ``X = [[X11, 0], [-X22 L21 X11, X22]]``. Applying
    ``X`` through ``L21`` costs the same matrix-vector products as through ``X21``, and saves the two
    (T+1) x T x T matrix products that forming ``X21`` took in every factorisation.
    """

    x11: Array  #: (T, T) block of ``X`` on the charge rows and columns
    l21: Array  #: (T+1, T) block of ``L`` on the discharge and eta rows, charge columns
    x22: Array  #: (T+1, T+1) block of ``X`` on the discharge and eta rows and columns
    scale: Array  #: (2T+1,) Jacobi equilibration ``D = diag(K)^-1/2``
    w_loss: Array  #: (K,) weights of the loss rows
    d_u: Array  #: (K,) diagonal of the u block


REGULARISATION = 1e-9  #: static regularisation of the condensed matrix (scaled units)
PREDICTOR_REFINE = 0  #: refinement steps of the affine (predictor) direction
CORRECTOR_REFINE = 1  #: refinement steps of the combined (corrector) direction, once a battery asks for them
STEP_FRACTION = 0.99  #: fraction to the boundary, far from the optimum (it tends to 1 as mu and the residuals fall)
BACKWARD_REFINE = 6  #: refinement steps of the implicit-differentiation solve
ADJOINT_PENALTY = 1e6  #: penalty weight on active rows in the implicit-differentiation solve
PIVOT_FLOOR = 1e-14  #: smallest Cholesky pivot of the equilibrated matrix (unit diagonal); refinement corrects


def _condensed_blocks(qp: BatteryQP, W: Array):
    """The blocks of the condensed Newton matrix on ``(c, d, eta)``: ``K_cc, K_cd = K_dc, K_dd`` (T x T),
    the eta column ``k = (-A'omega, A'omega)``, ``k_eta = sum(omega)``, the loss-row weights and the u-block
    diagonal."""
    T, K = qp.fc.shape[0], qp.fu.shape[0]
    sl = _row_slices(T, K)
    # the blocks are written as elementwise selections on an index grid (no gathers, no diag matrices), which
    # XLA fuses: 10.5-12.7 ms -> 7.7-8.5 ms for 1000 batteries (T = 24, K = 20) on this CPU
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    w_e = W[sl["e_hi"]] + W[sl["e_lo"]]
    suffix = jnp.cumsum(w_e[::-1])[::-1]
    Me = jnp.where(i >= j, suffix[:, None], suffix[None, :])  # suffix[max(i, j)] = L' diag(w_e) L
    w_r = qp.ramp_mask * (W[sl["r_hi"]] + W[sl["r_lo"]])
    wr_pad = jnp.concatenate([jnp.zeros(1), w_r, jnp.zeros(1)])
    ramp_diag = wr_pad[:-1] + wr_pad[1:]
    wr_next = wr_pad[1:]  # w_r[t] couples steps t and t + 1
    off = jnp.where(i == j + 1, wr_next[None, :], jnp.where(j == i + 1, wr_next[:, None], 0.0))
    w_loss, w_u = W[sl["loss"]], W[sl["u_lo"]]
    d_u = w_loss + w_u
    omega = w_loss * w_u / d_u
    # A' diag(omega) A as omega' (K x T^2 outer products): under vmap with the shared A, one (N x K) x (K x T^2)
    # matrix product for the whole fleet
    gram = qp.risk_on * (omega @ jnp.reshape(qp.A[:, :, None] * qp.A[:, None, :], (K, T * T)))
    Bp = jnp.where(i == j, (ramp_diag + qp.rho)[:, None], 0.0) - off + jnp.reshape(gram, (T, T))
    Aw = loss_of_p_t(qp, omega)  # (T,)
    # materialised once: without the barrier XLA fused (and recomputed) Me and Bp into each of the blocks'
    # consumers, and the solver ran 5-10 % slower at N = 1000 (alternating runs)
    Me, Bp = lax.optimization_barrier((Me, Bp))
    Kcc = jnp.where(i == j, (qp.qc + W[sl["c_lo"]] + W[sl["c_hi"]])[:, None], 0.0) + qp.gc**2 * Me + Bp
    Kdd = jnp.where(i == j, (qp.qd + W[sl["d_lo"]] + W[sl["d_hi"]])[:, None], 0.0) + qp.gd**2 * Me + Bp
    Kcd = -qp.gc * qp.gd * Me - Bp
    return Kcc, Kcd, Kdd, Aw, jnp.sum(omega), w_loss, d_u


def condensed_matrix(qp: BatteryQP, W: Array) -> tuple[Array, Array, Array]:
    """The Newton matrix ``Q + G' diag(W) G`` condensed onto ``(c, d, eta)``, built from its blocks.

    Returns the dense (2T+1, 2T+1) matrix, the loss-row weights and the u-block diagonal.
    """
    Kcc, Kcd, Kdd, Aw, k_eta, w_loss, d_u = _condensed_blocks(qp, W)
    top = jnp.concatenate([Kcc, Kcd, -Aw[:, None]], axis=1)
    mid = jnp.concatenate([Kcd.T, Kdd, Aw[:, None]], axis=1)
    bot = jnp.concatenate([-Aw, Aw, k_eta[None]])[None, :]
    return jnp.concatenate([top, mid, bot], axis=0), w_loss, d_u


def _small_inv_chol(A: Array) -> Array:
    """Inverse of the Cholesky factor of a small SPD matrix (batched in leading axes).

    Left-looking: step ``j`` forms column ``j`` of ``L`` from ``A``'s row ``j`` and the columns before it, and
    row ``j`` of ``X = L^-1`` by forward substitution, in one ``fori_loop`` over the columns. A right-looking
    Cholesky rewrote the whole trailing matrix at every step, and a second loop formed the inverse: for 256
    equilibrated 24 x 24 matrices 1.24 ms against 0.74-0.89 ms here (25 x 25: 1.38 -> 0.90-1.09 ms). ``L`` is
    kept transposed (its columns as rows) so that every step writes one contiguous row of each array.
    """
    n = A.shape[-1]
    idx = jnp.arange(n)

    def step(j, carry):
        Lt, X = carry  # Lt[..., k, :] = column k of L
        lj = jnp.where(idx < j, Lt[..., :, j], 0.0)  # row j of L left of the diagonal
        v = A[..., j, :] - jnp.einsum("...k,...ki->...i", lj, Lt)  # A symmetric: row j = column j
        pivot = jnp.sqrt(jnp.maximum(v[..., j], PIVOT_FLOOR))  # modified Cholesky: no pivot below the floor
        col = jnp.where(idx >= j, v / pivot[..., None], 0.0)
        row = (jnp.where(idx == j, 1.0, 0.0) - jnp.einsum("...k,...kj->...j", lj, X)) / pivot[..., None]
        return Lt.at[..., j, :].set(col), X.at[..., j, :].set(row)

    return lax.fori_loop(0, n, step, (jnp.zeros_like(A), jnp.zeros_like(A)))[1]


@functools.partial(jax.jit, static_argnames=("block",))
def inv_cholesky(A: Array, block: int | None = None) -> Array:
    """``X = L^-1`` for ``A = L L'`` by recursive 2 x 2 blocking.

    Written with matrix products so that a batch of small matrices runs at matrix-multiply speed on CPU
    (the batched LAPACK Cholesky and triangular solves were measured 3-5x slower here). A ``jit`` of its own
    so that JAX traces it once per shape and process: a coordination program factors in two places (start
    and iteration), and tracing the recursion took 0.37 s each time, paid by every ``jaxvpp coordinate``.
    """
    n = A.shape[-1]
    if block is None:
        block = 13  # leaves of 12 or 13: T = 24 splits into 12 + 12 and 12 + 13, T = 96 into 24 such leaves
    if n <= block:
        return _small_inv_chol(A)
    k = n // 2
    X11 = inv_cholesky(A[..., :k, :k], block)
    L21 = A[..., k:, :k] @ jnp.swapaxes(X11, -1, -2)
    X22 = inv_cholesky(A[..., k:, k:] - L21 @ jnp.swapaxes(L21, -1, -2), block)
    X21 = -(X22 @ L21) @ X11
    top = jnp.concatenate([X11, jnp.zeros(A.shape[:-2] + (k, n - k), A.dtype)], -1)
    return jnp.concatenate([top, jnp.concatenate([X21, X22], -1)], -2)


def factor(qp: BatteryQP, W: Array, regularisation: float = REGULARISATION) -> Factor:
    """Build, equilibrate and factor the condensed Newton matrix for row weights ``W = z / s``
    (``regularisation`` is added to its diagonal, scaled units; the caller's refinement removes it).

    The first level of :func:`inv_cholesky`'s blocking is done here, on the blocks as they are built (charge
    rows | discharge and eta rows): the dense matrix is never assembled, and its inverse factor never
    concatenated, which saved the copies of two (2T+1)^2 arrays per battery and factorisation.
    """
    Kcc, Kcd, Kdd, Aw, k_eta, w_loss, d_u = _condensed_blocks(qp, W)
    T = Kcc.shape[0]
    K11 = Kcc + regularisation * jnp.eye(T)
    K22 = jnp.concatenate([jnp.concatenate([Kdd, Aw[:, None]], axis=1),
                           jnp.concatenate([Aw, k_eta[None]])[None, :]], axis=0) + regularisation * jnp.eye(T + 1)
    sc, sd = 1.0 / jnp.sqrt(jnp.diagonal(K11)), 1.0 / jnp.sqrt(jnp.diagonal(K22))
    A11 = K11 * sc[:, None] * sc[None, :]
    A21 = jnp.concatenate([Kcd, -Aw[None, :]], axis=0) * sd[:, None] * sc[None, :]  # K_dc = K_cd' = K_cd
    A22 = K22 * sd[:, None] * sd[None, :]
    X11 = inv_cholesky(A11)
    L21 = A21 @ X11.T
    X22 = inv_cholesky(A22 - L21 @ L21.T)
    return Factor(x11=X11, l21=L21, x22=X22, scale=jnp.concatenate([sc, sd]), w_loss=w_loss, d_u=d_u)


def factor_x(fac: Factor, b: Array) -> Array:
    """``X b`` (b of shape (2T+1,) or (2T+1, r))."""
    T = fac.x11.shape[0]
    y1 = fac.x11 @ b[:T]
    return jnp.concatenate([y1, fac.x22 @ (b[T:] - fac.l21 @ y1)], axis=0)


def factor_xt(fac: Factor, y: Array) -> Array:
    """``X' y`` (y of shape (2T+1,) or (2T+1, r))."""
    T = fac.x11.shape[0]
    b2 = fac.x22.T @ y[T:]
    return jnp.concatenate([fac.x11.T @ (y[:T] - fac.l21.T @ b2), b2], axis=0)


def factor_apply(fac: Factor, b: Array) -> Array:
    """``K^-1 b`` for the condensed matrix (b of shape (2T+1,) or (2T+1, r))."""
    sb = fac.scale * b if b.ndim == 1 else fac.scale[:, None] * b
    y = factor_xt(fac, factor_x(fac, sb))
    return fac.scale * y if b.ndim == 1 else fac.scale[:, None] * y


def _solve_condensed(qp: BatteryQP, w_loss: Array, d_u: Array, solve_y: Callable[[Array], Array], r: Primal
                     ) -> Primal:
    """Solve ``(Q + G' W G) dx = r`` given a solver ``solve_y`` of the condensed matrix (condensing u exactly)."""
    T = qp.fc.shape[0]
    t_u = w_loss * r.u / d_u
    # y-part of the condensed right-hand side: r_y + G_y' (w_loss r_u / d_u) with G_y rows (A, -A, -1)
    a_t = loss_of_p_t(qp, t_u)
    ry = jnp.concatenate([r.c + a_t, r.d - a_t, (r.eta - jnp.sum(t_u))[None]])
    y = solve_y(ry)
    dc, dd, deta = y[:T], y[T:2 * T], y[2 * T]
    g = loss_of_p(qp, dc - dd) - deta  # G_y y for the loss rows
    du = (r.u + w_loss * g) / d_u
    return Primal(dc, dd, deta, du)


def solve_factored(qp: BatteryQP, fac: Factor, r: Primal) -> Primal:
    """Solve ``(Q + G' W G) dx = r`` with the factored matrix (condensing u exactly)."""
    return _solve_condensed(qp, fac.w_loss, fac.d_u, lambda ry: factor_apply(fac, ry), r)


def adjoint_solve(qp: BatteryQP, s: Array, z: Array, gx: Primal, gz: Array, refine: int) -> tuple[Primal, Array]:
    """Solve the transposed Jacobian of the optimality conditions at the solution.

    The system is ``Q a - G' b = gx``, ``G a + (s/z) b = gz``. Near the optimum ``W = z/s`` spans twenty
    orders of magnitude and the reduced matrix ``Q + G'WG`` is numerically singular (condition numbers of
    1e19 were measured), so this solves the limit instead: rows with ``z > s`` are active and enforced
    exactly (``G_A a = gz_A``), the others drop out (``b = 0``). The equality-constrained system is solved
    by an iterated penalty: a moderate weight ``ADJOINT_PENALTY`` on the active rows and refinement against
    the unreduced residuals, which converges to the exact solution even when the active rows are linearly
    dependent (degenerate vertices of the LP-like problem).
    """
    active = z > s
    W = jnp.where(active, ADJOINT_PENALTY, 0.0)
    fac = factor(qp, W)

    def reduced(e1: Primal, e2: Array) -> tuple[Primal, Array]:
        da = solve_factored(qp, fac, _pmap(jnp.add, e1, apply_GT(qp, W * e2)))
        return da, W * (e2 - apply_G(qp, da))

    gz = jnp.where(active, gz, 0.0)
    a, b = reduced(gx, gz)
    for _ in range(refine):
        e1 = _pmap(lambda g, qa, gb: g - qa + gb, gx, apply_Q(qp, a), apply_GT(qp, b))
        e2 = jnp.where(active, gz - apply_G(qp, a), 0.0)
        da, db = reduced(e1, e2)
        a, b = _pmap(jnp.add, a, da), b + db
    return a, b


def kkt_residuals(qp: BatteryQP, x: Primal, s: Array, z: Array) -> tuple[Primal, Array]:
    """Dual residual ``Qx + f + G'z`` and primal residual ``Gx + s - h``."""
    r_d = _pmap(lambda a, b, c: a + b + c, apply_Q(qp, x), linear_cost(qp), apply_GT(qp, z))
    r_p = apply_G(qp, x) + s - rhs_h(qp)
    return r_d, r_p


def refine_direction(
    qp: BatteryQP, fac: Factor, s: Array, z: Array, r_d: Primal, r_p: Array, r_c: Array,
    d: tuple[Primal, Array, Array], refine: int,
) -> tuple[Primal, Array, Array]:
    """``refine`` rounds of iterative refinement of a Newton direction ``d`` against the residuals of the
    full (unreduced) system of :func:`newton_direction`."""
    def refine_step(_, d):
        dx, ds, dz = d
        e_d = _pmap(lambda a, b, c: a + b + c, r_d, apply_Q(qp, dx), apply_GT(qp, dz))
        e_p = r_p + apply_G(qp, dx) + ds
        e_c = r_c + z * ds + s * dz
        cx, cs, cz = _newton_once(qp, fac, s, z, e_d, e_p, e_c)
        return _pmap(jnp.add, dx, cx), ds + cs, dz + cz

    return lax.fori_loop(0, refine, refine_step, d) if refine > 0 else d


def newton_direction(
    qp: BatteryQP, fac: Factor, s: Array, z: Array, r_d: Primal, r_p: Array, r_c: Array, refine: int = 2
) -> tuple[Primal, Array, Array]:
    """Solve the Newton system ``Q dx + G'dz = -r_d``, ``G dx + ds = -r_p``, ``Z ds + S dz = -r_c``.

    The reduced solve loses accuracy as ``W = z/s`` spreads over many orders of magnitude near the
    optimum, so the direction is refined iteratively against the residuals of the full system.
    """
    d = _newton_once(qp, fac, s, z, r_d, r_p, r_c)
    return refine_direction(qp, fac, s, z, r_d, r_p, r_c, d, refine)


def _newton_once(qp, fac, s, z, r_d, r_p, r_c):
    W = z / s
    ghat = _pmap(jnp.add, r_d, apply_GT(qp, W * r_p - r_c / s))
    dx = solve_factored(qp, fac, _pmap(jnp.negative, ghat))
    ds = -r_p - apply_G(qp, dx)
    dz = -(r_c + z * ds) / s
    return dx, ds, dz


def max_step(v: Array, dv: Array) -> Array:
    """Largest ``a`` in (0, 1] with ``v + a dv >= 0`` (v > 0)."""
    ratio = jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
    return jnp.minimum(1.0, jnp.min(ratio))


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


def _measures(qp: BatteryQP, x: Primal, s: Array, z: Array, extra_dual: Primal | None = None
              ) -> tuple[Array, Array, Array]:
    """Relative primal residual, dual residual and complementarity gap (``extra_dual`` is added to the
    dual residual: coordination's multiplier term)."""
    r_d, r_p = kkt_residuals(qp, x, s, z)
    if extra_dual is not None:
        r_d = _pmap(jnp.add, r_d, extra_dual)
    return _measures_of(qp, x, s, z, r_d, r_p)


def _measures_of(qp: BatteryQP, x: Primal, s: Array, z: Array, r_d: Primal, r_p: Array
                 ) -> tuple[Array, Array, Array]:
    """:func:`_measures` from residuals ``r_d, r_p`` already computed at ``(x, s, z)``."""
    h = rhs_h(qp)
    pres = jnp.max(jnp.abs(r_p)) / (1.0 + jnp.maximum(jnp.max(jnp.abs(h)), jnp.max(jnp.abs(apply_G(qp, x)))))
    dres = max_abs(r_d) / (1.0 + jnp.maximum(max_abs(linear_cost(qp)),
                                             jnp.maximum(max_abs(apply_Q(qp, x)), max_abs(apply_GT(qp, z)))))
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
    rhs = _pmap(lambda a, b: -a + b, linear_cost(qp), apply_GT(qp, rhs_h(qp)))
    x = _solve_condensed(qp, w_loss, d_u, lambda ry: jax.scipy.linalg.cho_solve(chol, ry), rhs)
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
    pres, dres, gap = _measures_of(qp, x0, s0, z0, r_d, r_p)
    return IPMState(x0, s0, z0, jnp.asarray(0), (pres <= tol) & (dres <= tol) & (gap <= tol), pres, dres, gap,
                    r_d, r_p, jnp.asarray(False))


def step_fraction(mu: Array, pres: Array, dres: Array) -> Array:
    """Fraction to the boundary of a step: :data:`STEP_FRACTION` far from the optimum, ``1 - max(mu, residuals)``
    close to it. A fixed fraction lets the complementarity fall at most a hundredfold per iteration; near the
    optimum the Newton step is nearly exact and a fraction that tends to 1 recovers its fast local convergence
    (at N = 1000, T = 24, K = 20: 11,524 battery-iterations instead of 12,813, 10-17 per battery -> 9-17)."""
    return 1.0 - jnp.minimum(1.0 - STEP_FRACTION, jnp.maximum(mu, jnp.maximum(pres, dres)))


def ipm_step(qp: BatteryQP, st: IPMState, tol: float, max_iter: int, refine: Array | bool) -> IPMState:
    """One Mehrotra predictor-corrector iteration of one battery (a failed step sets ``iterations`` to
    ``max_iter``, which stops the battery).

    The corrector direction is refined (:data:`CORRECTOR_REFINE` rounds) where ``refine`` is true. Under
    ``vmap`` pass an unbatched ``refine`` (any battery of the batch asking for it, ``IPMState.refine``): it
    stays a real branch, so a batch in which no battery asks does not pay for it.
    """
    x, s, z = st.x, st.s, st.z
    m = s.shape[0]
    r_d, r_p = st.r_d, st.r_p
    mu = jnp.vdot(s, z) / m
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
    dx, ds, dz = lax.cond(refine, lambda d_: refine_direction(qp, fac, s, z, r_d, r_p, r_c, d_, CORRECTOR_REFINE),
                          lambda d_: d_, d)
    tau = jnp.where(st.refine, STEP_FRACTION, step_fraction(mu, st.primal_residual, st.dual_residual))
    alpha = tau * jnp.minimum(max_step(s, ds), max_step(z, dz))
    alpha = jnp.minimum(alpha, 1.0)
    x_n = _pmap(lambda a, b: a + alpha * b, x, dx)
    s_n = jnp.maximum(s + alpha * ds, 1e-300)
    z_n = jnp.maximum(z + alpha * dz, 1e-300)
    r_dn, r_pn = kkt_residuals(qp, x_n, s_n, z_n)
    pres, dres, gap = _measures_of(qp, x_n, s_n, z_n, r_dn, r_pn)
    ok = jnp.all(jnp.isfinite(jnp.concatenate([s_n, z_n]))) & jnp.isfinite(pres + dres + gap)
    conv = (pres <= tol) & (dres <= tol) & (gap <= tol)
    # The residuals are linear in the step: an exact direction leaves (1 - alpha) of them. A residual above the
    # tolerance that does not even halve where the step promised that much is the reduced solve's round-off
    # (W = z/s spans twenty orders of magnitude near the optimum). Such a step is undone, and from then on the
    # battery's directions are refined and its step fraction stays at STEP_FRACTION. Without this, one battery of
    # the 728 in the tests' random fleets stalled; refining every battery in every iteration costs 19 % more per
    # iteration (256 slots, T = 24, K = 20), and at N = 1000 no battery asks for it.
    promise = jnp.maximum(0.5, 2.0 * (1.0 - alpha))
    short = (((pres > tol) & (max_abs(r_pn) > promise * max_abs(r_p)))
             | ((dres > tol) & (max_abs(r_dn) > promise * max_abs(r_d))))
    retry = ok & short & ~st.refine  # the first short step is undone and retried, refined
    accept = ok & ~retry
    keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
    return IPMState(
        x=jax.tree.map(keep, x_n, x), s=keep(s_n, s), z=keep(z_n, z),
        iterations=jnp.where(ok, st.iterations + 1, max_iter), converged=conv & accept,
        primal_residual=keep(pres, st.primal_residual), dual_residual=keep(dres, st.dual_residual),
        gap=keep(gap, st.gap), r_d=jax.tree.map(keep, r_dn, r_d), r_p=keep(r_pn, r_p),
        refine=st.refine | short,
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
    iterations, not the slowest battery's of its batch: at N = 1000 (T = 24, K = 20) the batteries needed
    9-17 iterations, 11.5 on average, and a lock-step batch pays 17 for each. One traced copy of the
    iteration serves all rounds.
    """
    N = start.iterations.shape[0]
    B = min(N, slots)
    v_step = jax.vmap(lambda q, st, r: ipm_step(q, st, tol, max_iter, r), in_axes=(FLEET_QP_AXES, 0, None))
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
        work = _select(live, v_step(work_qp, work, jnp.any(live & work.refine)), work)
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


# --------------------------------------------------------------------------------------------------
# Implicit differentiation
# --------------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def solve_fleet_qp(qp: BatteryQP, warm: tuple[Primal, Array, Array] | None, tol: float, max_iter: int,
                   warm_margin: float, slots: int) -> tuple[Primal, Array, IPMState]:
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
        x0, s0, z0 = jax.vmap(lambda q, x, s, z: warm_point(q, x, s, z, warm_margin),
                              in_axes=(FLEET_QP_AXES, 0, 0, 0))(qp, *warm)
    start = jax.vmap(lambda q, x, s, z: ipm_start(q, x, s, z, tol), in_axes=(FLEET_QP_AXES, 0, 0, 0))(
        qp, x0, s0, z0)
    return ipm_solve_fleet(qp, start, tol, max_iter, slots)


def _solve_fwd(qp, warm, tol, max_iter, warm_margin, slots):
    st = _solve_fleet(qp, warm, tol, max_iter, warm_margin, slots)
    return (st.x, st.z, st), (qp, st.x, st.s, st.z)


def _adjoint_one(qp, x, s, z, gx, gz):
    """One battery's cotangent of its QP data, by the adjoint of its optimality conditions at the solution."""
    a, b = adjoint_solve(qp, s, z, gx, gz, refine=BACKWARD_REFINE)

    def residual(qp_):
        r_d = _pmap(lambda p, q, r: p + q + r, apply_Q(qp_, x), linear_cost(qp_), apply_GT(qp_, z))
        return r_d, rhs_h(qp_) - apply_G(qp_, x)

    _, vjp = jax.vjp(residual, qp)
    (g_qp,) = vjp((_pmap(jnp.negative, a), -b))
    return g_qp


def _solve_bwd(tol, max_iter, warm_margin, slots, res, cts):
    qp, x, s, z = res
    gx, gz, _ = cts
    gx = jax.tree.map(lambda g, v: jnp.zeros_like(v) if g is None else g, gx, x)
    gz = jnp.zeros_like(z) if gz is None else gz
    g_qp = jax.vmap(_adjoint_one, in_axes=(FLEET_QP_AXES, 0, 0, 0, 0, 0))(qp, x, s, z, gx, gz)
    return g_qp._replace(A=jnp.sum(g_qp.A, axis=0)), None  # the shared A collects every battery's share


solve_fleet_qp.defvjp(_solve_fwd, _solve_bwd)


# --------------------------------------------------------------------------------------------------
# Physical results
# --------------------------------------------------------------------------------------------------


def cvar(losses: Array, probabilities: Array, alpha: float) -> Array:
    """Exact CVaR (EUR) of a discrete loss distribution at tail probability ``alpha``.

    ``min_eta eta + (1/alpha) sum_k w_k max(L_k - eta, 0)``; the minimum is attained at one of the
    ``L_k``, so it is evaluated there (piecewise linear, differentiable almost everywhere).
    """
    excess = jnp.maximum(losses[None, :] - losses[:, None], 0.0)  # [j, k] = max(L_k - L_j, 0)
    return jnp.min(losses + excess @ probabilities / alpha)


class BatterySolution(NamedTuple):
    """A battery's optimal schedule and its economics (batched over the fleet when vmapped)."""

    charge_mw: Array  #: (T,) c_t (MW)
    discharge_mw: Array  #: (T,) d_t (MW)
    net_mw: Array  #: (T,) p_t = d_t - c_t (MW)
    soc_mwh: Array  #: (T,) e_t after step t (MWh)
    objective_eur: Array  #: the minimised objective (EUR), without coordination terms
    expected_revenue_eur: Array  #: sum_k w_k Rev_k (EUR)
    cvar_eur: Array  #: CVaR_alpha of the loss (EUR)
    degradation_eur: Array  #: deg dt sum (c + d) + q/2 dt sum (c^2 + d^2) (EUR)
    iterations: Array  #: interior-point iterations
    converged: Array  #: bool
    primal_residual: Array
    dual_residual: Array
    gap: Array


def schedule_metrics(
    battery: Fleet, market: Market, settings: Settings, charge: Array, discharge: Array
) -> dict[str, Array]:
    """Economics of a schedule of one battery: SoC (MWh), revenue, CVaR, costs and objective (EUR)."""
    dt = settings.dt_hours
    prices, w = jnp.asarray(market.prices), jnp.asarray(market.probabilities)
    p = discharge - charge
    soc = battery.soc_initial * battery.capacity_mwh + dt * jnp.cumsum(
        battery.eta_charge * charge - discharge / battery.eta_discharge)
    revenue = dt * prices @ p  # (K,)
    expected = w @ revenue
    losses = (expected - revenue) if settings.baseline == "expected" else -revenue
    cv = cvar(losses, w, settings.alpha)
    cost = battery.degradation_eur_per_mwh * dt * jnp.sum(charge + discharge) + 0.5 * (
        battery.quadratic_cost_eur_per_mw2h * dt * jnp.sum(charge**2 + discharge**2))
    obj = -expected + battery.risk_weight * cv + cost
    return dict(net_mw=p, soc_mwh=soc, expected_revenue_eur=expected, cvar_eur=cv, degradation_eur=cost,
                objective_eur=obj)


@jax.jit
def fleet_metrics(fleet: Fleet, market: Market, settings: Settings, charge: Array, discharge: Array
                  ) -> dict[str, Array]:
    """:func:`schedule_metrics` of every battery (leading battery axis; schedules (N, T) in MW), as one compiled
    program (op by op, the vmapped metrics compiled 39 small programs: 0.9 s per ``jaxvpp coordinate``)."""
    return jax.vmap(lambda b, c, d: schedule_metrics(b, market, settings, c, d))(fleet, charge, discharge)


@functools.partial(jax.jit, static_argnames=("tol", "max_iter", "warm_margin", "return_state", "chunk_size"))
def solve_batteries(
    fleet: Fleet,
    market: Market,
    settings: Settings = Settings(),
    *,
    linear_price: Array | None = None,
    prox_weight: Array | None = None,
    prox_center: Array | None = None,
    warm_start: tuple[Primal, Array, Array] | None = None,
    tol: float = 1e-9,
    max_iter: int = 80,
    warm_margin: float = 1e-4,
    return_state: bool = False,
    chunk_size: int = 256,
):
    """Solve every battery's risk-aware problem at once (vmapped, jitted, differentiable).

    Args:
        fleet: battery parameters, fields of shape (N,).
        market: prices (K, T) EUR/MWh and probabilities (K,), shared by the fleet.
        settings: dt (hours), alpha, baseline (static).
        linear_price: optional (N, T) extra cost per MW of p_t (EUR/MW), e.g. a coordination price.
        prox_weight: optional (N, T) or (N,) proximal weight (EUR/MW^2) on ``|p - prox_center|^2 / 2``.
        prox_center: optional (N, T) proximal centre (MW).
        warm_start: the solver state of an earlier call (``return_state=True``) to start from.
        tol: relative tolerance on primal and dual residuals and the complementarity gap.
        max_iter: iteration limit per battery.
        warm_margin: how far a warm start is pushed into the interior (scaled units).
        return_state: also return the final solver state, for warm starts.
        chunk_size: batteries solved at once (a lock-step batch whose slots take the next battery in line as
            soon as theirs has converged: :func:`ipm_solve_fleet`).

    Returns:
        A :class:`BatterySolution` with a leading battery axis (and the state if asked).
    """
    N = fleet.size
    T = market.horizon
    if prox_weight is not None:
        prox_weight = jnp.broadcast_to(jnp.asarray(prox_weight), (N, T)) if jnp.ndim(prox_weight) != 2 else prox_weight

    def build(b, lp, pw, pc):
        return build_qp(b, market, settings, lp, pw, pc)

    qp, sc = jax.vmap(build, out_axes=(FLEET_QP_AXES, 0))(fleet, linear_price, prox_weight, prox_center)
    x, _, st = solve_fleet_qp(qp, warm_start, tol, max_iter, warm_margin, chunk_size)
    charge, discharge = x.c * sc.power[:, None], x.d * sc.power[:, None]
    met = fleet_metrics(fleet, market, settings, charge, discharge)
    sol = BatterySolution(
        charge_mw=charge, discharge_mw=discharge, net_mw=met["net_mw"], soc_mwh=met["soc_mwh"],
        objective_eur=met["objective_eur"], expected_revenue_eur=met["expected_revenue_eur"],
        cvar_eur=met["cvar_eur"], degradation_eur=met["degradation_eur"], iterations=st.iterations,
        converged=st.converged, primal_residual=st.primal_residual, dual_residual=st.dual_residual, gap=st.gap)
    return (sol, (st.x, st.s, st.z)) if return_state else sol
