"""The Newton kernel of a battery's interior-point method: ``K = Q + G' W G`` condensed onto
``y = (c, d, eta)``, factored by a blocked inverse Cholesky, and the directions solved from it.

Two factorisations share the blocks: :func:`factor` in the coordinates ``(c, d, eta)`` (the adjoint solve of
implicit differentiation, whose row weights may vanish) and :func:`factor_net` in ``(c, p = d - c, eta)`` with
eta eliminated (the battery solver and coordination), where the net power is a block of its own and the
aggregator's T x T curvature is one block of the inverse (:func:`net_curvature`).
:func:`factor_apply` and the solves built on it take either; :func:`net_solve_start` and
:func:`net_solve_finish` split a net-power solve around the aggregator.
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

from jaxvpp.battery.qp import (
    BatteryQP,
    Primal,
    apply_G,
    apply_GT,
    apply_Q,
    linear_cost,
    loss_of_p,
    loss_of_p_t,
    primal_map,
    rhs_h,
    row_slices,
)

# --------------------------------------------------------------------------------------------------
# The Newton kernel: K = Q + G' W G, condensed onto y = (c, d, eta) and factored
# --------------------------------------------------------------------------------------------------


class Factor(NamedTuple):
    """A factored, condensed Newton matrix of one battery: ``K^-1 = D X' X D``.

    ``X = L^-1`` for the equilibrated matrix ``D K D = L L'``, split after the T charge rows, is kept as its
    diagonal blocks and the off-diagonal block of ``L``: ``X = [[X11, 0], [-X22 L21 X11, X22]]``. Applying
    ``X`` through ``L21`` costs the same matrix-vector products as through ``X21``, and avoids the two
    (T+1) x T x T matrix products that forming ``X21`` would take in every factorisation.
    """

    x11: Array  #: (T, T) block of ``X`` on the charge rows and columns
    l21: Array  #: (T+1, T) block of ``L`` on the discharge and eta rows, charge columns
    x22: Array  #: (T+1, T+1) block of ``X`` on the discharge and eta rows and columns
    scale: Array  #: (2T+1,) Jacobi equilibration ``D = diag(K)^-1/2``
    w_loss: Array  #: (K,) weights of the loss rows
    d_u: Array  #: (K,) diagonal of the u block


REGULARISATION = 1e-9  #: static regularisation of the condensed matrix, added to its diagonal before the equilibration
PREDICTOR_REFINE = 0  #: refinement steps of the affine (predictor) direction
CORRECTOR_REFINE = 1  #: refinement steps of the combined (corrector) direction, once a battery asks for them
STEP_FRACTION = 0.99  #: fraction to the boundary, far from the optimum (it tends to 1 as mu and the residuals fall)
BACKWARD_REFINE = 6  #: refinement steps of the implicit-differentiation solve
ADJOINT_PENALTY = 1e6  #: penalty weight on active rows in the implicit-differentiation solve
PIVOT_FLOOR = 1e-14  #: smallest Cholesky pivot of the equilibrated matrix (unit diagonal); refinement corrects


def _newton_pieces(qp: BatteryQP, W: Array):
    """The pieces the condensed Newton matrix on ``(c, d, eta)`` is made of: the bound diagonals on c and d
    (T,), the energy block ``Me = L' diag(w_e) L`` (T x T), the p block ``Bp`` (ramp tridiagonal, proximal
    weight and the CVaR rank-K term; T x T), the eta column's p part ``A'omega`` (T,), ``k_eta = sum(omega)``,
    the loss-row weights and the u-block diagonal (K,)."""
    T, K = qp.fc.shape[0], qp.fu.shape[0]
    sl = row_slices(T, K)
    # the blocks are written as elementwise selections on an index grid (no gathers, no diag matrices), which
    # XLA fuses into a few loops over the T x T entries instead of materialising intermediate matrices
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
    # materialised once: without the barrier XLA fuses (and so recomputes) Me and Bp into each of the blocks'
    # consumers, which costs more than computing them once and reading them back
    Me, Bp = lax.optimization_barrier((Me, Bp))
    diag_c = qp.qc + W[sl["c_lo"]] + W[sl["c_hi"]]
    diag_d = qp.qd + W[sl["d_lo"]] + W[sl["d_hi"]]
    return diag_c, diag_d, Me, Bp, Aw, jnp.sum(omega), w_loss, d_u


def _condensed_blocks(qp: BatteryQP, W: Array):
    """The blocks of the condensed Newton matrix on ``(c, d, eta)``: ``K_cc, K_cd = K_dc, K_dd`` (T x T),
    the eta column ``k = (-A'omega, A'omega)``, ``k_eta = sum(omega)``, the loss-row weights and the u-block
    diagonal."""
    diag_c, diag_d, Me, Bp, Aw, k_eta, w_loss, d_u = _newton_pieces(qp, W)
    T = diag_c.shape[0]
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    Kcc = jnp.where(i == j, diag_c[:, None], 0.0) + qp.gc**2 * Me + Bp
    Kdd = jnp.where(i == j, diag_d[:, None], 0.0) + qp.gd**2 * Me + Bp
    Kcd = -qp.gc * qp.gd * Me - Bp
    return Kcc, Kcd, Kdd, Aw, k_eta, w_loss, d_u


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
    row ``j`` of ``X = L^-1`` by forward substitution, in one ``fori_loop`` over the columns. Unlike a
    right-looking Cholesky it never rewrites the trailing matrix, and it needs no second loop for the inverse.
    ``L`` is kept transposed (its columns as rows) so that every step writes one contiguous row of each
    array.
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


class BlockInverse(NamedTuple):
    """``X = L^-1`` for ``A = L L'`` kept in 2 x 2 blocks, never multiplied out:
    ``X = [[X11, 0], [-X22 L21 X11, X22]]`` with ``X11``, ``X22`` the inverse factors of the diagonal blocks
    (dense, or blocks again) and ``L21`` the off-diagonal block of ``L``. Applying it costs the matrix-vector
    products of the dense ``X``; forming the dense ``X21 = -X22 L21 X11`` costs two matrix products in every
    factorisation (for a 24-square matrix alone, about a third of :func:`inv_cholesky`'s time). :class:`Factor`
    and :class:`NetFactor` are such blocks at their top level."""

    x11: Array | BlockInverse  #: (k, k) inverse factor of the leading block
    l21: Array  #: (n - k, k) block of ``L``
    x22: Array | BlockInverse  #: (n - k, n - k) inverse factor of the Schur complement


LEAF = 13  #: the largest block factored whole: T = 24 splits into 12 + 12 and 12 + 13, T = 96 into 12s


def inv_cholesky_blocks(A: Array, block: int = LEAF) -> Array | BlockInverse:
    """:func:`inv_cholesky` with the blocks kept apart (:class:`BlockInverse`; a dense ``X`` up to ``block``
    rows), for solves: apply it with :func:`block_x` and :func:`block_xt`."""
    n = A.shape[-1]
    if n <= block:
        return _small_inv_chol(A)
    k = n // 2
    X11 = inv_cholesky_blocks(A[..., :k, :k], block)
    L21 = _times_xt(A[..., k:, :k], X11)
    X22 = inv_cholesky_blocks(A[..., k:, k:] - L21 @ jnp.swapaxes(L21, -1, -2), block)
    return BlockInverse(X11, L21, X22)


def _times_xt(B: Array, X: Array | BlockInverse) -> Array:
    """``B X'`` for a dense or blocked inverse factor ``X`` (B of shape (m, n))."""
    if not isinstance(X, BlockInverse):
        return B @ jnp.swapaxes(X, -1, -2)
    return jnp.swapaxes(block_x(X, jnp.swapaxes(B, -1, -2)), -1, -2)


def block_x(X: Array | BlockInverse, b: Array) -> Array:
    """``X b`` for a dense or blocked inverse factor (b of shape (n,) or (n, r))."""
    if not isinstance(X, BlockInverse):
        return X @ b
    k = X.l21.shape[-1]
    y1 = block_x(X.x11, b[:k])
    return jnp.concatenate([y1, block_x(X.x22, b[k:] - X.l21 @ y1)], axis=0)


def block_xt(X: Array | BlockInverse, y: Array) -> Array:
    """``X' y`` for a dense or blocked inverse factor (y of shape (n,) or (n, r))."""
    if not isinstance(X, BlockInverse):
        return X.T @ y
    k = X.l21.shape[-1]
    b2 = block_xt(X.x22, y[k:])
    return jnp.concatenate([block_xt(X.x11, y[:k] - X.l21.T @ b2), b2], axis=0)


@functools.partial(jax.jit, static_argnames=("block",))
def inv_cholesky(A: Array, block: int | None = None) -> Array:
    """``X = L^-1`` for ``A = L L'`` by recursive 2 x 2 blocking.

    Written with matrix products so that a batch of small matrices runs at matrix-multiply speed on CPU
    (for these sizes faster than the batched LAPACK Cholesky and triangular solves). A ``jit`` of its own so
    that JAX traces the recursion once per shape and process, although a coordination program factors in two
    places (start and iteration).
    """
    n = A.shape[-1]
    if block is None:
        block = LEAF
    if n <= block:
        return _small_inv_chol(A)
    k = n // 2
    X11 = inv_cholesky(A[..., :k, :k], block)
    L21 = A[..., k:, :k] @ jnp.swapaxes(X11, -1, -2)
    X22 = inv_cholesky(A[..., k:, k:] - L21 @ jnp.swapaxes(L21, -1, -2), block)
    X21 = -(X22 @ L21) @ X11
    top = jnp.concatenate([X11, jnp.zeros(A.shape[:-2] + (k, n - k), A.dtype)], -1)
    return jnp.concatenate([top, jnp.concatenate([X21, X22], -1)], -2)


def _factor_blocks(K11, K21, K22, w_loss, d_u, regularisation, relative, blocked: bool):
    """Equilibrate and factor ``[[K11, K21'], [K21, K22]]`` (given as its blocks: T x T, n x T, n x n) plus
    ``regularisation I + relative diag(K + regularisation I)``; the diagonal blocks' inverse factors kept in
    blocks (:class:`BlockInverse`) if ``blocked``, else dense."""
    K11 = K11 + regularisation * jnp.eye(K11.shape[0])
    K22 = K22 + regularisation * jnp.eye(K22.shape[0])
    sc, sd = 1.0 / jnp.sqrt(jnp.diagonal(K11)), 1.0 / jnp.sqrt(jnp.diagonal(K22))
    A11 = K11 * sc[:, None] * sc[None, :]
    A21 = K21 * sd[:, None] * sc[None, :]
    A22 = K22 * sd[:, None] * sd[None, :]
    A11 = A11 + relative * jnp.eye(A11.shape[0])
    A22 = A22 + relative * jnp.eye(A22.shape[0])
    inv = inv_cholesky_blocks if blocked else inv_cholesky
    X11 = inv(A11)
    L21 = _times_xt(A21, X11)
    X22 = inv(A22 - L21 @ L21.T)
    return X11, L21, X22, jnp.concatenate([sc, sd]), w_loss, d_u


def _eta_bordered(B: Array, a: Array, k: Array) -> Array:
    """``[[B, a], [a', k]]``: a T x T block bordered by the eta row and column."""
    return jnp.concatenate([jnp.concatenate([B, a[:, None]], axis=1), jnp.concatenate([a, k[None]])[None, :]], axis=0)


def factor(qp: BatteryQP, W: Array, regularisation: float = REGULARISATION, relative: float = 0.0) -> Factor:
    """Build, equilibrate and factor the condensed Newton matrix ``K`` for row weights ``W = z / s``
    (``regularisation I + relative diag(K + regularisation I)`` is added to it, which puts ``relative`` on the
    equilibrated matrix's unit diagonal; the caller's refinement removes both).

    The first level of :func:`inv_cholesky`'s blocking is done here, on the blocks as they are built (charge
    rows | discharge and eta rows): the dense matrix is never assembled, and its inverse factor never
    concatenated, which avoids copying two (2T+1)^2 arrays per battery and factorisation.
    """
    Kcc, Kcd, Kdd, Aw, k_eta, w_loss, d_u = _condensed_blocks(qp, W)
    K21 = jnp.concatenate([Kcd, -Aw[None, :]], axis=0)  # K_dc = K_cd' = K_cd
    return Factor(
        *_factor_blocks(Kcc, K21, _eta_bordered(Kdd, Aw, k_eta), w_loss, d_u, regularisation, relative, False)
    )


class NetFactor(NamedTuple):
    """A factored Newton matrix in the coordinates ``(c, p, eta)`` with ``p = d - c``, the battery's net power:
    ``K' = T' K T`` for the unit lower-triangular change of variables ``T: (c, p, eta) -> (c, p + c, eta)``.
    The change of variables is unimodular, so it is regular for every battery, lossless ones
    (``eta_c eta_d = 1``) included.

    In these coordinates eta couples with p alone (``K'_{p eta} = a = A'omega``, ``K'_{eta eta} = k =
    sum(omega)``), and it is eliminated first. The p block of the remaining 2T-square matrix on ``(c, p)`` is
    ``K'_pp - a a' / k``, in which the CVaR term ``A' diag(omega) A`` becomes
    ``A' (diag(omega) - omega omega' / sum(omega)) A``, positive semidefinite by Cauchy-Schwarz. That matrix
    is factored as :class:`Factor` is (charge block first), by two T-square inverse Cholesky factorisations
    and no bordered (T+1)-square one.

    Because p is a block of its own, the inverse's (p, p) block, the T x T curvature the aggregator needs,
    is ``D_p X22' X22 D_p``: one T-square product, and a price step enters a solve through ``X22`` alone
    (:func:`net_curvature`, :func:`net_solve_finish`).
    """

    x11: Array | BlockInverse  #: (T, T) block of ``X`` on the charge rows and columns
    l21: Array  #: (T, T) block of ``L`` on the p rows, charge columns
    x22: Array | BlockInverse  #: (T, T) block of ``X`` on the p rows and columns
    scale: Array  #: (2T,) Jacobi equilibration ``D = diag(K'')^-1/2`` of the eta-reduced matrix on (c, p)
    a_eta: Array  #: (T,) the eta column on the p rows, ``a = A'omega``
    k_eta: Array  #: () the eta diagonal ``k = sum(omega)``
    w_loss: Array  #: (K,) weights of the loss rows
    d_u: Array  #: (K,) diagonal of the u block


def factor_net(
    qp: BatteryQP,
    W: Array,
    regularisation: float = REGULARISATION,
    blocked: bool = False,
    relative: float = 0.0,
) -> NetFactor:
    """The Newton matrix for row weights ``W = z / s`` in the net-power coordinates ``(c, p, eta)``, eta
    eliminated, equilibrated and factored (:class:`NetFactor`; ``regularisation`` and ``relative`` are added to
    the 2T-square matrix as :func:`factor` adds them). ``blocked``: the diagonal blocks' inverse factors kept in blocks
    (:class:`BlockInverse`), for solves alone (the battery solver); dense, as :func:`net_curvature` needs them
    (coordination), otherwise.

    The blocks are formed from the pieces directly, not as ``T' K T``, which would cancel the p block
    ``Bp`` out of the charge block in floating point: with ``delta = gc - gd``,
    ``K'_cc = diag(q_c + w_c + q_d + w_d) + delta^2 Me``, ``K'_pc = diag(q_d + w_d) - gd delta Me`` and
    ``K'_pp = K_dd``; eta couples with p alone and is eliminated (``- a a' / k`` on the p block).
    """
    diag_c, diag_d, Me, Bp, Aw, k_eta, w_loss, d_u = _newton_pieces(qp, W)
    T = diag_c.shape[0]
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    delta = qp.gc - qp.gd
    K11 = jnp.where(i == j, (diag_c + diag_d)[:, None], 0.0) + delta**2 * Me
    Kpc = jnp.where(i == j, diag_d[:, None], 0.0) - qp.gd * delta * Me
    a_k = Aw / k_eta
    Kpp = jnp.where(i == j, diag_d[:, None], 0.0) + qp.gd**2 * Me + Bp - Aw[:, None] * a_k[None, :]
    x11, l21, x22, scale, _, _ = _factor_blocks(K11, Kpc, Kpp, w_loss, d_u, regularisation, relative, blocked)
    return NetFactor(x11, l21, x22, scale, Aw, k_eta, w_loss, d_u)


def net_curvature(fac: NetFactor) -> Array:
    """``E' K^-1 E`` (T x T, scaled units) for ``E`` the map of a net-power vector onto ``(c, d, eta)`` as
    ``(-v, v, 0)``: the (p, p) block of ``K'^-1``, which is ``D_p X22' X22 D_p`` (a factor with dense
    blocks, ``factor_net(..., blocked=False)``)."""
    if isinstance(fac.x22, BlockInverse):
        raise TypeError("net_curvature needs the dense factor: factor_net(..., blocked=False)")
    T = fac.l21.shape[-1]
    Xp = fac.x22 * fac.scale[T:]
    return Xp.T @ Xp


class NetSolve(NamedTuple):
    """The first half of ``K^-1 b`` from a :class:`NetFactor` (:func:`net_solve_start`): what the second half
    (:func:`net_solve_finish`) needs, and the net-power part of the answer, which is known before it."""

    w: Array  #: (2T,) ``X D b''`` for the eta-reduced right-hand side ``b''`` on (c, p)
    b_eta: Array  #: () the right-hand side's eta entry
    p: Array  #: (T,) the net-power part ``(K^-1 b)_d - (K^-1 b)_c``


def _net_rhs(fac: NetFactor, b: Array) -> Array:
    """``b`` (2T+1,) on ``(c, d, eta)`` in the net-power coordinates, eta eliminated: ``(b_c + b_d, b_d - a
    b_eta / k)``."""
    T = fac.l21.shape[-1]
    return jnp.concatenate([b[:T] + b[T : 2 * T], b[T : 2 * T] - fac.a_eta * (b[2 * T] / fac.k_eta)])


def net_solve_start(fac: NetFactor, b: Array) -> NetSolve:
    """The forward half of ``K^-1 b`` (b on ``(c, d, eta)``, scaled units) and its net-power part: the p
    rows of ``K'^-1 = D X' X D`` need only ``X22'`` of the forward vector."""
    T = fac.l21.shape[-1]
    w = factor_x(fac, fac.scale * _net_rhs(fac, b))
    return NetSolve(w=w, b_eta=b[2 * T], p=fac.scale[T:] * block_xt(fac.x22, w[T:]))


def net_solve_finish(fac: NetFactor, part: NetSolve, v: Array) -> Array:
    """``K^-1 (b + E v)`` on ``(c, d, eta)`` from :func:`net_solve_start`'s ``part`` of ``K^-1 b``, for a
    net-power vector ``v`` (T,) with ``E v = (-v, v, 0)``: in the net-power coordinates ``E v`` is ``(0, v)``,
    which adds ``(0, X22 D_p v)`` to the forward vector, so one solve serves both."""
    T = fac.l21.shape[-1]
    w = part.w + jnp.concatenate([jnp.zeros(T, part.w.dtype), block_x(fac.x22, fac.scale[T:] * v)])
    return _net_backward(fac, w, part.b_eta)


def _net_apply(fac: NetFactor, b: Array) -> Array:
    """``K^-1 b`` from the net-power factor (b of shape (2T+1,) on ``(c, d, eta)``)."""
    T = fac.l21.shape[-1]
    return _net_backward(fac, factor_x(fac, fac.scale * _net_rhs(fac, b)), b[2 * T])


def _net_backward(fac: NetFactor, w: Array, b_eta: Array) -> Array:
    """The backward half of a net-power solve, from the forward vector ``w`` (2T,) and the right-hand side's
    eta entry: ``(c, p) = D X' w``, ``eta = (b_eta - a'p) / k``, and the answer back on
    ``(c, d = p + c, eta)``."""
    T = fac.l21.shape[-1]
    y = fac.scale * factor_xt(fac, w)
    eta = (b_eta - jnp.dot(fac.a_eta, y[T:])) / fac.k_eta
    return jnp.concatenate([y[:T], y[T:] + y[:T], eta[None]], axis=0)


def factor_x(fac: Factor | NetFactor, b: Array) -> Array:
    """``X b`` (b of shape (n,) or (n, r), n = 2T+1 for a :class:`Factor`, 2T for a :class:`NetFactor`)."""
    return block_x(BlockInverse(fac.x11, fac.l21, fac.x22), b)


def factor_xt(fac: Factor | NetFactor, y: Array) -> Array:
    """``X' y`` (y of shape (n,) or (n, r), as for :func:`factor_x`)."""
    return block_xt(BlockInverse(fac.x11, fac.l21, fac.x22), y)


def factor_apply(fac: Factor | NetFactor, b: Array) -> Array:
    """``K^-1 b`` for the condensed matrix (b of shape (2T+1,), or (2T+1, r) for a :class:`Factor`), from
    either factor."""
    if isinstance(fac, NetFactor):
        return _net_apply(fac, b)
    sb = fac.scale * b if b.ndim == 1 else fac.scale[:, None] * b
    y = factor_xt(fac, factor_x(fac, sb))
    return fac.scale * y if b.ndim == 1 else fac.scale[:, None] * y


def condense_rhs(qp: BatteryQP, w_loss: Array, d_u: Array, r: Primal) -> Array:
    """The right-hand side on ``(c, d, eta)`` (2T+1,) of ``(Q + G' W G) dx = r`` with u condensed out:
    ``r_y + G_y' (w_loss r_u / d_u)``, with ``G_y`` the loss rows' coefficients ``(A, -A, -1)``."""
    t_u = w_loss * r.u / d_u
    a_t = loss_of_p_t(qp, t_u)
    return jnp.concatenate([r.c + a_t, r.d - a_t, (r.eta - jnp.sum(t_u))[None]])


def recover_u(qp: BatteryQP, w_loss: Array, d_u: Array, r_u: Array, y: Array) -> Primal:
    """The whole step from its ``(c, d, eta)`` part ``y`` and the u rows' right-hand side ``r_u``."""
    T = qp.fc.shape[0]
    dc, dd, deta = y[:T], y[T : 2 * T], y[2 * T]
    g = loss_of_p(qp, dc - dd) - deta  # G_y y for the loss rows
    return Primal(dc, dd, deta, (r_u + w_loss * g) / d_u)


def solve_condensed(qp: BatteryQP, w_loss: Array, d_u: Array, solve_y: Callable[[Array], Array], r: Primal) -> Primal:
    """Solve ``(Q + G' W G) dx = r`` given a solver ``solve_y`` of the condensed matrix (condensing u exactly)."""
    return recover_u(qp, w_loss, d_u, r.u, solve_y(condense_rhs(qp, w_loss, d_u, r)))


def solve_factored(qp: BatteryQP, fac: Factor, r: Primal) -> Primal:
    """Solve ``(Q + G' W G) dx = r`` with the factored matrix (condensing u exactly)."""
    return solve_condensed(qp, fac.w_loss, fac.d_u, lambda ry: factor_apply(fac, ry), r)


def adjoint_solve(qp: BatteryQP, s: Array, z: Array, gx: Primal, gz: Array, refine: int) -> tuple[Primal, Array]:
    """Solve the transposed Jacobian of the optimality conditions at the solution.

    The system is ``Q a - G' b = gx``, ``G a + (s/z) b = gz``. Near the optimum ``W = z/s`` spans twenty
    orders of magnitude and the reduced matrix ``Q + G'WG`` is numerically singular (condition numbers of
    order 1e19), so this solves the limit instead: rows with ``z > s`` are active and enforced
    exactly (``G_A a = gz_A``), the others drop out (``b = 0``). The equality-constrained system is solved
    by an iterated penalty: a moderate weight ``ADJOINT_PENALTY`` on the active rows and refinement against
    the unreduced residuals, which converges to the exact solution even when the active rows are linearly
    dependent (degenerate vertices of the LP-like problem).
    """
    active = z > s
    W = jnp.where(active, ADJOINT_PENALTY, 0.0)
    fac = factor(qp, W)

    def reduced(e1: Primal, e2: Array) -> tuple[Primal, Array]:
        da = solve_factored(qp, fac, primal_map(jnp.add, e1, apply_GT(qp, W * e2)))
        return da, W * (e2 - apply_G(qp, da))

    gz = jnp.where(active, gz, 0.0)
    a, b = reduced(gx, gz)
    for _ in range(refine):
        e1 = primal_map(lambda g, qa, gb: g - qa + gb, gx, apply_Q(qp, a), apply_GT(qp, b))
        e2 = jnp.where(active, gz - apply_G(qp, a), 0.0)
        da, db = reduced(e1, e2)
        a, b = primal_map(jnp.add, a, da), b + db
    return a, b


def kkt_residuals(qp: BatteryQP, x: Primal, s: Array, z: Array) -> tuple[Primal, Array]:
    """Dual residual ``Qx + f + G'z`` and primal residual ``Gx + s - h``."""
    r_d = primal_map(lambda a, b, c: a + b + c, apply_Q(qp, x), linear_cost(qp), apply_GT(qp, z))
    r_p = apply_G(qp, x) + s - rhs_h(qp)
    return r_d, r_p


def refine_direction(
    qp: BatteryQP,
    fac: Factor,
    s: Array,
    z: Array,
    r_d: Primal,
    r_p: Array,
    r_c: Array,
    d: tuple[Primal, Array, Array],
    refine: int,
) -> tuple[Primal, Array, Array]:
    """``refine`` rounds of iterative refinement of a Newton direction ``d`` against the residuals of the
    full (unreduced) system of :func:`newton_direction`."""

    def refine_step(_, d):
        dx, ds, dz = d
        e_d = primal_map(lambda a, b, c: a + b + c, r_d, apply_Q(qp, dx), apply_GT(qp, dz))
        e_p = r_p + apply_G(qp, dx) + ds
        e_c = r_c + z * ds + s * dz
        cx, cs, cz = newton_once(qp, fac, s, z, e_d, e_p, e_c)
        return primal_map(jnp.add, dx, cx), ds + cs, dz + cz

    return lax.fori_loop(0, refine, refine_step, d) if refine > 0 else d


def newton_direction(
    qp: BatteryQP, fac: Factor, s: Array, z: Array, r_d: Primal, r_p: Array, r_c: Array, refine: int = 2
) -> tuple[Primal, Array, Array]:
    """Solve the Newton system ``Q dx + G'dz = -r_d``, ``G dx + ds = -r_p``, ``Z ds + S dz = -r_c``.

    The reduced solve loses accuracy as ``W = z/s`` spreads over many orders of magnitude near the
    optimum, so the direction is refined iteratively against the residuals of the full system.
    """
    d = newton_once(qp, fac, s, z, r_d, r_p, r_c)
    return refine_direction(qp, fac, s, z, r_d, r_p, r_c, d, refine)


def newton_once(qp, fac, s, z, r_d, r_p, r_c):
    W = z / s
    ghat = primal_map(jnp.add, r_d, apply_GT(qp, W * r_p - r_c / s))
    dx = solve_factored(qp, fac, primal_map(jnp.negative, ghat))
    ds = -r_p - apply_G(qp, dx)
    dz = -(r_c + z * ds) / s
    return dx, ds, dz


def max_step(v: Array, dv: Array) -> Array:
    """Largest ``a`` in (0, 1] with ``v + a dv >= 0`` (v > 0)."""
    ratio = jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
    return jnp.minimum(1.0, jnp.min(ratio))
