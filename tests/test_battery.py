"""The batched battery solver against an independent reference (cvxpy + Clarabel) and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvpp
from jaxvpp.battery.qp import BatteryQP, apply_G, apply_GT, build_qp
from jaxvpp.battery.solution import cvar, schedule_metrics, solve_batteries
from jaxvpp.problem import Fleet, Market, Settings, fleet_take, make_fleet, random_fleet, synthetic_market
from jaxvpp.reference import cvar as cvar_ref
from jaxvpp.reference import solve_battery_reference

TOL_OBJ = 1e-6
TOL_CONS = 1e-6


def _extreme_fleet(n: int, seed: int) -> Fleet:
    """Valid but extreme parameters: tiny and huge batteries, lossless and lossy, soc at the window edges."""
    rng = np.random.default_rng(seed)
    fl = random_fleet(n, seed=seed, spread=1.5)
    cap = np.asarray(fl.capacity_mwh).copy()
    cap[0], cap[1] = 0.05, 400.0
    power = np.asarray(fl.power_mw).copy()
    power[0], power[1] = 0.2, 50.0
    eta_c = np.asarray(fl.eta_charge).copy()
    eta_d = np.asarray(fl.eta_discharge).copy()
    eta_c[2] = eta_d[2] = 1.0  # lossless
    eta_c[3], eta_d[3] = 0.5, 0.6
    soc_min, soc_max, soc0 = (np.asarray(a).copy() for a in (fl.soc_min, fl.soc_max, fl.soc_initial))
    soc_min[4], soc_max[4], soc0[4] = 0.0, 1.0, 0.0  # empty at start
    soc0[5] = soc_max[5]  # full at start: e_T >= e_0 pins the end
    risk = np.asarray(fl.risk_weight).copy()
    risk[6], risk[7] = 0.0, 20.0
    q = np.asarray(fl.quadratic_cost_eur_per_mw2h).copy()
    q[8] = 0.0
    q[9] = 5.0
    ramp = np.asarray(fl.ramp_mw_per_h).copy()
    ramp[10] = np.inf
    ramp[11] = 0.05 * power[11]  # nearly flat
    deg = np.asarray(fl.degradation_eur_per_mwh).copy()
    deg[12] = 0.0
    del rng
    return make_fleet(
        n,
        capacity_mwh=cap,
        power_mw=power,
        ramp_mw_per_h=ramp,
        soc_min=soc_min,
        soc_max=soc_max,
        soc_initial=soc0,
        eta_charge=eta_c,
        eta_discharge=eta_d,
        risk_weight=risk,
        degradation_eur_per_mwh=deg,
        quadratic_cost_eur_per_mw2h=q,
    )


def _check_against_reference(fleet: Fleet, market: Market, settings: Settings) -> None:
    sol = solve_batteries(fleet, market, settings)
    assert bool(np.all(np.asarray(sol.converged))), np.asarray(sol.iterations)
    for i in range(fleet.size):
        b = fleet_take(fleet, i)
        ref = solve_battery_reference(b, market, settings)
        obj, ref_obj = float(sol.objective_eur[i]), float(ref["objective_eur"])
        assert abs(obj - ref_obj) <= TOL_OBJ * max(1.0, abs(ref_obj)), (i, obj, ref_obj)
        _check_feasible(
            b, settings, np.asarray(sol.charge_mw[i]), np.asarray(sol.discharge_mw[i]), np.asarray(sol.soc_mwh[i])
        )


def _check_feasible(b: Fleet, settings: Settings, c: np.ndarray, d: np.ndarray, soc: np.ndarray) -> None:
    dt = settings.dt_hours
    P, E = float(b.power_mw), float(b.capacity_mwh)
    tol = TOL_CONS * max(1.0, P, E)
    assert np.all(c >= -tol) and np.all(d >= -tol)
    assert np.all(c <= P + tol) and np.all(d <= P + tol)
    e0 = float(b.soc_initial) * E
    e = e0 + dt * np.cumsum(float(b.eta_charge) * c - d / float(b.eta_discharge))
    np.testing.assert_allclose(e, soc, atol=tol)
    assert np.all(e >= float(b.soc_min) * E - tol) and np.all(e <= float(b.soc_max) * E + tol)
    assert e[-1] >= e0 - tol
    if np.isfinite(float(b.ramp_mw_per_h)):
        p = d - c
        assert np.all(np.abs(np.diff(p)) <= float(b.ramp_mw_per_h) * dt + tol)


# 52 random fleets in all: 4 configurations x 13 seeds, each fleet of 14 batteries.
CASES = [
    ("hourly", 24, 1.0, 20, "zero"),
    ("quarter-hourly", 96, 0.25, 6, "zero"),
    ("expected-baseline", 24, 1.0, 5, "expected"),
    ("one-scenario", 12, 2.0, 1, "zero"),
]


@pytest.mark.parametrize("seed", range(13))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_random_fleets_match_clarabel(case, seed):
    _, T, dt, K, baseline = case
    fleet = random_fleet(14, seed=1000 * seed + T, spread=1.0)
    # always include q = 0 (pure LP), lambda = 0 and no ramp limit
    fleet = fleet._replace(
        quadratic_cost_eur_per_mw2h=fleet.quadratic_cost_eur_per_mw2h.at[0].set(0.0),
        risk_weight=fleet.risk_weight.at[1].set(0.0),
        ramp_mw_per_h=fleet.ramp_mw_per_h.at[2].set(jnp.inf),
    )
    market = synthetic_market(K, T, seed=seed, dt_hours=dt)
    alpha = [0.05, 0.1, 0.2, 0.5][seed % 4]
    _check_against_reference(fleet, market, Settings(dt_hours=dt, alpha=alpha, baseline=baseline))


@pytest.mark.parametrize("seed", range(3))
def test_extreme_parameters_match_clarabel(seed):
    fleet = _extreme_fleet(14, seed)
    market = synthetic_market(10, 24, seed=seed)
    # negative prices make charging pay and simultaneous charge/discharge worthwhile
    market = market._replace(prices=market.prices.at[:, 3:6].add(-150.0))
    _check_against_reference(fleet, market, Settings())


def test_structured_operators_match_dense_transpose():
    """G' is the transpose of G: <G x, z> = <x, G' z> for random x, z."""
    fleet = fleet_take(random_fleet(3, seed=1), 0)
    market = synthetic_market(4, 10, seed=2)
    qp, _ = build_qp(fleet, market, Settings())
    rng = np.random.default_rng(0)
    x = jaxvpp.battery.qp.Primal(*(jnp.asarray(rng.normal(size=np.shape(a))) for a in (qp.fc, qp.fd, qp.f_eta, qp.fu)))
    z = jnp.asarray(rng.normal(size=jaxvpp.battery.qp.num_rows(10, 4)))
    lhs = jnp.vdot(apply_G(qp, x), z)
    gz = apply_GT(qp, z)
    rhs = sum(jnp.vdot(a, b) for a, b in zip(x, gz))
    assert abs(float(lhs - rhs)) < 1e-12 * (1 + abs(float(lhs)))
    assert isinstance(qp, BatteryQP)


def _dense_newton(qp, W):
    """``Q + G' diag(W) G`` as a dense matrix on ``x = (c, d, eta, u)``, assembled column by column from
    apply_Q / apply_G / apply_GT (independent of the condensed blocks), and the map of a flat vector onto x."""
    from jax.flatten_util import ravel_pytree

    from jaxvpp.battery.qp import apply_Q

    x0 = jaxvpp.battery.qp.Primal(*(jnp.zeros(np.shape(a)) for a in (qp.fc, qp.fd, qp.f_eta, qp.fu)))
    flat, unravel = ravel_pytree(x0)
    op = lambda v: ravel_pytree(  # noqa: E731
        jax.tree.map(jnp.add, apply_Q(qp, unravel(v)), apply_GT(qp, W * apply_G(qp, unravel(v))))
    )[0]
    return np.asarray(jax.jacfwd(op)(flat)), unravel


def _condensed(dense, n_y: int):
    """The dense Newton matrix with its u rows eliminated: the (c, d, eta) Schur complement (n_y = 2T + 1)."""
    Kyy, Kyu, Kuu = dense[:n_y, :n_y], dense[:n_y, n_y:], dense[n_y:, n_y:]
    return Kyy - Kyu @ np.linalg.solve(Kuu, Kyu.T)


@pytest.mark.parametrize("coordinates", ["charge-discharge", "net-power", "net-power-blocked"])
@pytest.mark.parametrize(
    "ramp, lossless, T", [(True, False, 12), (False, False, 12), (True, True, 12), (True, False, 27)]
)
def test_factored_solve_matches_dense_newton_matrix(ramp, lossless, T, coordinates):
    """The blocked factorisation solves (Q + G' W G) dx = r as numpy does on the dense matrix built from G,
    in the (c, d, eta) coordinates of the adjoint solve and the (c, p = d - c, eta) ones of the battery solver
    (inverse factors kept in blocks) and of coordination (lossless batteries included, where a (p, energy)
    change of variables would be singular); the latter's T x T curvature is the net-power block of the dense
    inverse, and its price response the dense solve. T = 27 splits the inverse factors' blocks twice more
    (27 = 13 + 14, 14 = 7 + 7), T = 12 not at all.

    The dense matrix is assembled column by column from apply_G / apply_Q (independent of the condensed
    blocks); W spans six orders of magnitude, as in an interior-point end game."""
    from jax.flatten_util import ravel_pytree

    from jaxvpp.battery.kernel import (
        LEAF,
        BlockInverse,
        factor,
        factor_net,
        net_curvature,
        net_solve_finish,
        net_solve_start,
        solve_factored,
    )
    from jaxvpp.battery.qp import num_rows

    fl = random_fleet(3, seed=5)
    if not ramp:
        fl = fl._replace(ramp_mw_per_h=jnp.full(3, jnp.inf))
    if lossless:
        fl = fl._replace(eta_charge=jnp.ones(3), eta_discharge=jnp.ones(3))
    battery = fleet_take(fl, 1)
    K = 5
    qp, _ = build_qp(battery, synthetic_market(K, T, seed=3), Settings())
    m = num_rows(T, K)
    rng = np.random.default_rng(7)
    W = jnp.asarray(10.0 ** rng.uniform(-3, 3, size=m))
    dense, unravel = _dense_newton(qp, W)
    assert np.allclose(dense, dense.T, atol=1e-9 * np.abs(dense).max())
    r = rng.normal(size=dense.shape[0])
    want = np.linalg.solve(dense, r)
    if coordinates == "charge-discharge":
        fac = factor(qp, W, 0.0)
    else:
        fac = factor_net(qp, W, 0.0, blocked=coordinates == "net-power-blocked")
        assert isinstance(fac.x22, BlockInverse) == (coordinates == "net-power-blocked" and T > LEAF)
    got = ravel_pytree(solve_factored(qp, fac, unravel(jnp.asarray(r))))[0]
    err = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
    assert err < 1e-8, err
    if coordinates != "charge-discharge":
        # E maps a net-power vector onto x = (c, d, eta, u) as (-v, v, 0, 0); p = E'x
        E = np.zeros((dense.shape[0], T))
        E[:T], E[T : 2 * T] = -np.eye(T), np.eye(T)
        inv_E = np.linalg.solve(dense, E)
        M = E.T @ inv_E
        if coordinates == "net-power":
            np.testing.assert_allclose(np.asarray(net_curvature(fac)), M, rtol=1e-8, atol=1e-10 * np.abs(M).max())
        elif T > LEAF:
            with pytest.raises(TypeError, match="dense"):
                net_curvature(fac)
        # the two-half solve of K^-1 (b + E v) on (c, d, eta), with the u rows condensed out of the dense matrix
        v = rng.normal(size=T)
        n_y = 2 * T + 1
        Ky = _condensed(dense, n_y)
        b = rng.normal(size=n_y)
        want_y = np.linalg.solve(Ky, b + E[:n_y] @ v)
        part = net_solve_start(fac, jnp.asarray(b))
        got_y = np.asarray(net_solve_finish(fac, part, jnp.asarray(v)))
        assert np.abs(got_y - want_y).max() <= 1e-8 * np.abs(want_y).max()
        # the net-power part known after the first half: that of K^-1 b
        want_p = E[:n_y].T @ np.linalg.solve(Ky, b)
        np.testing.assert_allclose(np.asarray(part.p), want_p, rtol=0, atol=1e-8 * np.abs(want_p).max())


@pytest.mark.parametrize("coordinates", ["charge-discharge", "net-power"])
def test_relative_regularisation_is_a_scaled_diagonal(coordinates):
    """The relative regularisation adds ``r diag(K)`` to the condensed Newton matrix ``K`` (r on the unit
    diagonal of the equilibrated one): with W spanning thirty orders of magnitude, as at the end of an
    interior-point run, the factored solve is numpy's dense solve of the full Newton system whose condensed
    (c, d, eta) block has ``r diag(K)`` added (r = 1e-2, a visible change; in the net-power coordinates the
    diagonal of the eta-reduced matrix on (c, p)), and with coordination's r the factor of that nearly singular
    matrix is finite."""
    from jax.flatten_util import ravel_pytree

    from jaxvpp.battery.kernel import factor, factor_net, solve_factored
    from jaxvpp.battery.qp import num_rows
    from jaxvpp.coordination.aladin import FACTOR_RELATIVE_REGULARISATION

    T, K = 12, 4
    battery = fleet_take(random_fleet(3, seed=8), 2)
    qp, _ = build_qp(battery, synthetic_market(K, T, seed=4), Settings())
    m = num_rows(T, K)
    W = jnp.asarray(10.0 ** np.random.default_rng(2).uniform(-15, 15, size=m))
    dense, unravel = _dense_newton(qp, W)
    n_y = 2 * T + 1
    Ky = _condensed(dense, n_y)
    r = 1e-2
    if coordinates == "charge-discharge":
        make = lambda rel: factor(qp, W, 0.0, relative=rel)  # noqa: E731
        shift = np.diag(r * np.diag(Ky))
    else:
        make = lambda rel: factor_net(qp, W, 0.0, relative=rel)  # noqa: E731
        # in (c, p = d - c, eta), eta eliminated: the diagonal of T' Ky T on (c, p) minus a a' / k
        Tm = np.eye(n_y)
        Tm[T : 2 * T, :T] = np.eye(T)
        Kn = Tm.T @ Ky @ Tm
        red = Kn[: 2 * T, : 2 * T] - np.outer(Kn[: 2 * T, 2 * T], Kn[2 * T, : 2 * T]) / Kn[2 * T, 2 * T]
        Ti = np.linalg.inv(Tm)[: 2 * T, : 2 * T]  # back to (c, d): a change of variables of the shift
        shift = np.zeros((n_y, n_y))
        shift[: 2 * T, : 2 * T] = Ti.T @ np.diag(r * np.diag(red)) @ Ti
    shifted = dense.copy()
    shifted[:n_y, :n_y] += shift
    b = np.random.default_rng(3).normal(size=dense.shape[0])
    want = np.linalg.solve(shifted, b)
    got = np.asarray(ravel_pytree(solve_factored(qp, make(r), unravel(jnp.asarray(b))))[0])
    # on (c, d, eta): the u entries of rows weighted 1e-15 are 1e5 times larger and hardly see the shift
    err = lambda x: np.abs(x - want)[:n_y].max() / np.abs(want[:n_y]).max()  # noqa: E731
    assert err(got) <= 1e-9
    assert err(np.linalg.solve(dense, b)) > 1e-5  # the shift is visible in the answer
    fac = make(FACTOR_RELATIVE_REGULARISATION)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(fac))


@pytest.mark.parametrize("n, leaf", [(1, 13), (13, 13), (14, 13), (27, 13), (40, 3), (9, 1)])
def test_block_inverse_is_the_inverse_cholesky_factor(n, leaf):
    """inv_cholesky_blocks, applied by block_x and block_xt, is X = L^-1 of numpy's Cholesky factor L (and the
    dense inv_cholesky the same matrix), for sizes that split into nested blocks down to the leaves."""
    from jaxvpp.battery.kernel import block_x, block_xt, inv_cholesky, inv_cholesky_blocks

    rng = np.random.default_rng(n)
    B = rng.normal(size=(n, n + 3))
    A = B @ B.T / n + 0.1 * np.eye(n)
    want = np.linalg.inv(np.linalg.cholesky(A))
    X = inv_cholesky_blocks(jnp.asarray(A), leaf)
    eye = jnp.eye(n)
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(block_x(X, eye)), want, rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(np.asarray(block_xt(X, eye)), want.T, rtol=0, atol=1e-11 * scale)
    v = rng.normal(size=n)
    np.testing.assert_allclose(
        np.asarray(block_x(X, jnp.asarray(v))), want @ v, rtol=0, atol=1e-11 * scale * np.abs(v).sum()
    )
    np.testing.assert_allclose(np.asarray(inv_cholesky(jnp.asarray(A), leaf)), want, rtol=0, atol=1e-11 * scale)


def test_cvar_matches_sorting_formula():
    rng = np.random.default_rng(3)
    for _ in range(20):
        K = int(rng.integers(1, 30))
        losses = rng.normal(size=K) * 100
        w = rng.random(K)
        w /= w.sum()
        alpha = float(rng.uniform(0.01, 0.99))
        assert abs(float(cvar(jnp.asarray(losses), jnp.asarray(w), alpha)) - cvar_ref(losses, w, alpha)) < 1e-9


def test_batch_invariance_and_chunking():
    """A battery's solution does not depend on the rest of the batch or on the chunking."""
    fleet = random_fleet(9, seed=4)
    market = synthetic_market(8, 24, seed=4)
    full = solve_batteries(fleet, market)
    chunked = solve_batteries(fleet, market, chunk_size=4)
    alone = solve_batteries(fleet_take(fleet, np.array([5])), market)
    np.testing.assert_allclose(full.objective_eur, chunked.objective_eur, rtol=1e-10)
    np.testing.assert_allclose(full.objective_eur[5], alone.objective_eur[0], rtol=1e-9)


def test_warm_start_reaches_same_optimum_with_coordination_terms():
    """The interface ALADIN uses: a price and a proximal term, warm-started from a previous solve."""
    fleet = random_fleet(6, seed=7)
    market = synthetic_market(10, 24, seed=7)
    st = Settings()
    cold, state = solve_batteries(fleet, market, st, return_state=True)
    rng = np.random.default_rng(1)
    price = jnp.asarray(rng.normal(0, 5, size=(6, 24)))
    center = cold.net_mw + 0.1
    warm = solve_batteries(fleet, market, st, linear_price=price, prox_weight=2.0, prox_center=center, warm_start=state)
    cold2 = solve_batteries(fleet, market, st, linear_price=price, prox_weight=2.0, prox_center=center)
    assert bool(np.all(warm.converged)) and bool(np.all(cold2.converged))
    for i in range(6):
        ref = solve_battery_reference(
            fleet_take(fleet, i),
            market,
            st,
            linear_price=np.asarray(price[i]),
            prox_weight=np.full(24, 2.0),
            prox_center=np.asarray(center[i]),
        )
        for sol in (warm, cold2):
            # Schedules are pinned only through the proximal curvature (2 EUR/MW^2): an objective accurate to
            # 1e-8 EUR fixes p to about sqrt(1e-8) MW, so the schedule check is looser than the objective's.
            np.testing.assert_allclose(np.asarray(sol.net_mw[i]), ref["net"], atol=1e-4)
            p = np.asarray(sol.net_mw[i])
            extra = float(np.dot(np.asarray(price[i]), p) + np.sum((p - np.asarray(center[i])) ** 2))
            obj = float(sol.objective_eur[i]) + extra
            assert abs(obj - ref["objective_eur"]) <= 1e-7 * max(1.0, abs(ref["objective_eur"]))


def test_metrics_of_zero_schedule():
    b = fleet_take(make_fleet(1), 0)
    market = synthetic_market(5, 24, seed=0)
    m = schedule_metrics(b, market, Settings(), jnp.zeros(24), jnp.zeros(24))
    assert float(m["objective_eur"]) == 0.0
    np.testing.assert_allclose(m["soc_mwh"], 1.0)  # 0.5 x 2 MWh


# ---------------------------------------------------------------------------------------------
# Gradients: implicit differentiation against central finite differences of the Clarabel optimum
# ---------------------------------------------------------------------------------------------

PARAMS = [
    "capacity_mwh",
    "power_mw",
    "ramp_mw_per_h",
    "soc_min",
    "soc_max",
    "soc_initial",
    "eta_charge",
    "eta_discharge",
    "risk_weight",
    "degradation_eur_per_mwh",
    "quadratic_cost_eur_per_mw2h",
]


def _ref_objective(b: Fleet, market: Market, settings: Settings) -> float:
    return float(solve_battery_reference(b, market, settings)["objective_eur"])


@pytest.mark.parametrize("seed", [0, 1])
def test_objective_gradient_matches_finite_differences_of_clarabel(seed):
    fleet = random_fleet(2, seed=20 + seed)
    fleet = fleet._replace(quadratic_cost_eur_per_mw2h=jnp.asarray([0.5, 1.0]))  # smooth optimum
    market = synthetic_market(6, 24, seed=seed)
    st = Settings()

    def total(fl, prices, w):
        return solve_batteries(fl, Market(prices, w), st, tol=1e-11, max_iter=150).objective_eur[0]

    g_fleet, g_prices, g_w = jax.grad(total, argnums=(0, 1, 2))(fleet, market.prices, market.probabilities)
    b0 = fleet_take(fleet, 0)
    for name in PARAMS:
        v = float(getattr(b0, name))
        h = 1e-4 * max(1.0, abs(v))
        fp = _ref_objective(b0._replace(**{name: jnp.asarray(v + h)}), market, st)
        fm = _ref_objective(b0._replace(**{name: jnp.asarray(v - h)}), market, st)
        fd = (fp - fm) / (2 * h)
        ad = float(getattr(g_fleet, name)[0])
        assert abs(ad - fd) <= 1e-4 * max(1.0, abs(fd)), (name, ad, fd)
    for k, t in [(0, 7), (3, 18), (5, 20)]:
        h = 1e-3
        fp = _ref_objective(b0, market._replace(prices=market.prices.at[k, t].add(h)), st)
        fm = _ref_objective(b0, market._replace(prices=market.prices.at[k, t].add(-h)), st)
        fd = (fp - fm) / (2 * h)
        assert abs(float(g_prices[k, t]) - fd) <= 1e-4 * max(1.0, abs(fd)), ((k, t), float(g_prices[k, t]), fd)
    # probabilities: a direction that keeps the sum at 1
    dw = np.zeros(6)
    dw[1], dw[4] = 1.0, -1.0
    h = 1e-5
    wp, wm = market.probabilities + h * dw, market.probabilities - h * dw
    fd = (
        _ref_objective(b0, market._replace(probabilities=wp), st)
        - _ref_objective(b0, market._replace(probabilities=wm), st)
    ) / (2 * h)
    ad = float(jnp.vdot(g_w, jnp.asarray(dw)))
    assert abs(ad - fd) <= 1e-4 * max(1.0, abs(fd)), (ad, fd)


def test_schedule_jacobian_matches_finite_differences():
    """d(schedule)/d(parameter) where the optimum is smooth (a strongly quadratic battery)."""
    fleet = fleet_take(random_fleet(1, seed=3), np.array([0]))
    fleet = fleet._replace(quadratic_cost_eur_per_mw2h=jnp.asarray([20.0]), ramp_mw_per_h=jnp.asarray([jnp.inf]))
    market = synthetic_market(4, 24, seed=3)
    st = Settings()

    def net(deg, prices):
        fl = fleet._replace(degradation_eur_per_mwh=deg)
        return solve_batteries(fl, Market(prices, market.probabilities), st, tol=1e-11, max_iter=150).net_mw[0]

    J_deg, J_prices = jax.jacobian(net, argnums=(0, 1))(fleet.degradation_eur_per_mwh, market.prices)
    h = 1e-3
    b0 = fleet_take(fleet, 0)
    for t0, (k, t) in [(None, (0, 0)), ((1, 12), (1, 12))]:
        del t0
        pp = market._replace(prices=market.prices.at[k, t].add(h))
        pm = market._replace(prices=market.prices.at[k, t].add(-h))
        fd = (solve_battery_reference(b0, pp, st)["net"] - solve_battery_reference(b0, pm, st)["net"]) / (2 * h)
        np.testing.assert_allclose(np.asarray(J_prices[:, k, t]), fd, atol=2e-4)
    bp = b0._replace(degradation_eur_per_mwh=b0.degradation_eur_per_mwh + h)
    bm = b0._replace(degradation_eur_per_mwh=b0.degradation_eur_per_mwh - h)
    fd = (solve_battery_reference(bp, market, st)["net"] - solve_battery_reference(bm, market, st)["net"]) / (2 * h)
    np.testing.assert_allclose(np.asarray(J_deg[:, 0]), fd, atol=2e-4)
