"""The cvxpy + Clarabel reference against closed forms, brute force and its own alternative formulations."""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxvpp  # noqa: F401  (float64 in JAX)
from jaxvpp.errors import InfeasibleTargetError
from jaxvpp.problem import Market, Settings, fleet_take, make_fleet, random_fleet, synthetic_market
from jaxvpp.reference import (
    cvar,
    dense_qp,
    dense_qp_objective,
    dense_qp_split,
    evaluate_schedule,
    solve_battery_reference,
    solve_fleet_reference,
    value_at_risk,
)

TOL = 1e-6


def _two_step_market(low: float = 10.0, high: float = 100.0) -> Market:
    return Market(prices=np.array([[low, high]]), probabilities=np.array([1.0]))


def _check_feasible(b, settings: Settings, c: np.ndarray, d: np.ndarray, tol: float = 1e-7) -> None:
    dt = settings.dt_hours
    P, E = float(b.power_mw), float(b.capacity_mwh)
    assert np.all(c >= -tol) and np.all(d >= -tol) and np.all(c <= P + tol) and np.all(d <= P + tol)
    e0 = float(b.soc_initial) * E
    e = e0 + dt * np.cumsum(float(b.eta_charge) * c - d / float(b.eta_discharge))
    assert np.all(e >= float(b.soc_min) * E - tol) and np.all(e <= float(b.soc_max) * E + tol)
    assert e[-1] >= e0 - tol
    R = float(b.ramp_mw_per_h)
    if np.isfinite(R):
        assert np.all(np.abs(np.diff(d - c)) <= R * dt + tol)


# ------------------------------------------------------------------------------------------------ closed forms
def test_two_step_arbitrage_closed_form():
    """Low then high price, one scenario, lambda = q = 0, no ramp: charge to soc_max, discharge back to e_0."""
    b = fleet_take(make_fleet(1, risk_weight=0.0, quadratic_cost_eur_per_mw2h=0.0, ramp_mw_per_h=np.inf), 0)
    r = solve_battery_reference(b, _two_step_market(), Settings())
    E, e0, eta_c, eta_d = 2.0, 1.0, 0.85, 0.90
    c1 = (0.9 * E - e0) / eta_c  # fills to soc_max (0.941 MW < P = 1.8 MW)
    d2 = eta_d * eta_c * c1  # back to e_0 exactly (end-of-horizon floor)
    obj = -(100 * d2 - 10 * c1) + 1.0 * (c1 + d2)
    assert r["status"] == "optimal"
    np.testing.assert_allclose(r["charge"], [c1, 0.0], atol=1e-8)
    np.testing.assert_allclose(r["discharge"], [0.0, d2], atol=1e-8)
    np.testing.assert_allclose(r["soc"], [0.9 * E, e0], atol=1e-8)
    assert abs(r["objective_eur"] - obj) < 1e-8
    assert abs(r["expected_revenue_eur"] - (100 * d2 - 10 * c1)) < 1e-8


def test_two_step_power_limited_with_dt():
    """With dt = 0.25 h the power limit binds: charge P, discharge what the energy allows."""
    b = fleet_take(make_fleet(1, risk_weight=0.0, quadratic_cost_eur_per_mw2h=0.0, ramp_mw_per_h=np.inf), 0)
    dt = 0.25
    r = solve_battery_reference(b, _two_step_market(), Settings(dt_hours=dt))
    c1 = 1.8  # dt * eta_c * P = 0.3825 MWh < room 0.8 MWh
    d2 = 0.9 * 0.85 * c1
    obj = dt * (-(100 * d2 - 10 * c1) + 1.0 * (c1 + d2))
    np.testing.assert_allclose(r["net"], [-c1, d2], atol=1e-8)
    assert abs(r["objective_eur"] - obj) < 1e-8


def test_one_scenario_risk_weight_scales_revenue():
    """With one scenario CVaR = Loss = -Rev, so the objective is -(1 + lambda) Rev + deg; baseline 'expected' gives 0."""
    b = fleet_take(make_fleet(1, risk_weight=0.7, quadratic_cost_eur_per_mw2h=0.0, ramp_mw_per_h=np.inf), 0)
    c1 = 0.8 / 0.85
    d2 = 0.9 * 0.85 * c1
    rev = 100 * d2 - 10 * c1
    r = solve_battery_reference(b, _two_step_market(), Settings(alpha=0.1))
    assert abs(r["objective_eur"] - (-(1.7) * rev + (c1 + d2))) < 1e-7
    assert abs(r["cvar_eur"] + rev) < 1e-7 and abs(r["eta"] + rev) < 1e-6
    r = solve_battery_reference(b, _two_step_market(), Settings(baseline="expected"))
    assert abs(r["objective_eur"] - (-rev + (c1 + d2))) < 1e-7 and abs(r["cvar_eur"]) < 1e-7


def test_ramp_limit_binds():
    b = fleet_take(make_fleet(1, risk_weight=0.0, quadratic_cost_eur_per_mw2h=0.0, ramp_mw_per_h=0.5), 0)
    r = solve_battery_reference(b, _two_step_market(), Settings())
    assert r["status"] == "optimal"
    assert abs(r["net"][1] - r["net"][0]) <= 0.5 + 1e-8
    _check_feasible(b, Settings(), r["charge"], r["discharge"])


def test_flat_prices_idle():
    """Constant prices and losses: any cycling only costs, so the battery stays idle."""
    b = fleet_take(make_fleet(1), 0)
    m = Market(prices=np.full((3, 4), 50.0), probabilities=np.array([0.2, 0.3, 0.5]))
    r = solve_battery_reference(b, m, Settings())
    np.testing.assert_allclose(r["net"], 0.0, atol=1e-7)
    assert abs(r["objective_eur"]) < 1e-7


# ------------------------------------------------------------------------------------------------ CVaR
def _cvar_brute(losses: np.ndarray, w: np.ndarray, alpha: float) -> float:
    """Rockafellar-Uryasev minimum over eta; the function is piecewise linear in eta with breaks at the losses."""
    return min(eta + np.sum(w * np.maximum(losses - eta, 0.0)) / alpha for eta in losses)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.floats(0.01, 0.99), st.integers(0, 2**31 - 1), st.booleans())
def test_cvar_matches_rockafellar_uryasev(k, alpha, seed, ties):
    rng = np.random.default_rng(seed)
    losses = rng.integers(-3, 3, k).astype(float) if ties else rng.normal(0, 100, k)
    w = rng.random(k) * (rng.random(k) > 0.2)
    if w.sum() == 0:
        w[0] = 1.0
    w /= w.sum()
    got = cvar(losses, w, alpha)
    assert abs(got - _cvar_brute(losses, w, alpha)) <= 1e-9 * max(1.0, np.max(np.abs(losses)))
    # the value at risk attains the minimum
    v = value_at_risk(losses, w, alpha)
    assert abs(v + np.sum(w * np.maximum(losses - v, 0)) / alpha - got) <= 1e-9 * max(1.0, np.max(np.abs(losses)))


def test_cvar_equal_atoms_and_batch():
    losses = np.arange(100.0)
    w = np.full(100, 0.01)
    assert abs(cvar(losses, w, 0.05) - np.mean([95, 96, 97, 98, 99])) < 1e-10
    assert abs(cvar(losses, w, 0.055) - (0.01 * (95 + 96 + 97 + 98 + 99) + 0.005 * 94) / 0.055) < 1e-10
    batch = np.stack([losses, -losses])
    np.testing.assert_allclose(cvar(batch, w, 0.05), [97.0, -2.0], atol=1e-10)
    assert abs(cvar(losses, w, 0.999999) - np.sum(w * losses) / 0.999999 * 1) < 1e-3


# ------------------------------------------------------------------------------------------------ dense QP
def _solve_dense(qp: dict) -> np.ndarray:
    x = cp.Variable(qp["q"].size)
    A, lo, hi = qp["A"], qp["l"], qp["u"]
    fl, fu = np.isfinite(lo), np.isfinite(hi)
    prob = cp.Problem(
        cp.Minimize(0.5 * cp.quad_form(x, cp.psd_wrap(qp["P"])) + qp["q"] @ x),
        [A[fl] @ x >= lo[fl], A[fu] @ x <= hi[fu]],
    )
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=400)
    assert prob.status == "optimal", prob.status
    return np.asarray(x.value)


@pytest.mark.parametrize(
    "seed,baseline,dt,alpha", [(0, "zero", 1.0, 0.05), (1, "expected", 0.25, 0.2), (2, "zero", 0.5, 0.5)]
)
def test_dense_qp_matches_cvxpy_model(seed, baseline, dt, alpha):
    fleet = random_fleet(4, seed=seed, spread=1.5)
    extra = make_fleet(
        2,
        risk_weight=np.array([0.0, 1.0]),
        quadratic_cost_eur_per_mw2h=np.array([0.0, 0.0]),
        ramp_mw_per_h=np.array([np.inf, 0.7]),
    )
    market = synthetic_market(6, 8, seed=seed, dt_hours=dt)
    w = np.asarray(market.probabilities).copy()
    w[0] = 0.0  # a zero-probability scenario must not matter
    market = Market(prices=market.prices, probabilities=w / w.sum())
    st_ = Settings(dt_hours=dt, alpha=alpha, baseline=baseline)
    for b in [fleet_take(fleet, i) for i in range(4)] + [fleet_take(extra, i) for i in range(2)]:
        ref = solve_battery_reference(b, market, st_)
        qp = dense_qp(b, market, st_)
        x = _solve_dense(qp)
        scale = max(1.0, abs(ref["objective_eur"]))
        assert abs(dense_qp_objective(qp, x) - ref["objective_eur"]) <= TOL * scale
        assert abs(dense_qp_objective(qp, x, exact=False) - ref["objective_eur"]) <= TOL * scale
        # the reference schedule, completed with eta and u, gives the same quadratic-form objective
        loss = -dt * (np.asarray(market.prices) @ ref["net"])
        if baseline == "expected":
            loss = ref["expected_revenue_eur"] + loss
        lam_on = float(b.risk_weight) > 0
        eta = ref["eta"] if lam_on else 0.0
        u = np.where((w > 0) & lam_on, np.maximum(loss - eta, 0.0), 0.0)
        x_ref = np.concatenate([ref["charge"], ref["discharge"], [eta], u])
        assert abs(dense_qp_objective(qp, x_ref, exact=False) - ref["objective_eur"]) <= TOL * scale
        Ax = qp["A"] @ x_ref
        assert np.all(Ax >= qp["l"] - 1e-7) and np.all(Ax <= qp["u"] + 1e-7)
        s = dense_qp_split(qp, x)
        _check_feasible(b, st_, s["charge"], s["discharge"])


# ------------------------------------------------------------------------------------------------ fleet
def test_stacked_equals_loop_and_feasible():
    fleet = random_fleet(6, seed=4, spread=1.2)
    market = synthetic_market(8, 12, seed=4)
    st_ = Settings(alpha=0.1)
    stacked = solve_fleet_reference(fleet, market, st_, mode="stacked")
    loop = solve_fleet_reference(fleet, market, st_, mode="loop")
    assert stacked["status"] == loop["status"] == "optimal"
    np.testing.assert_allclose(
        stacked["objective_per_battery_eur"],
        loop["objective_per_battery_eur"],
        atol=TOL * max(1.0, abs(stacked["objective_eur"])),
    )
    assert abs(stacked["objective_eur"] - loop["objective_eur"]) <= TOL * max(1.0, abs(loop["objective_eur"]))
    for key in ("build_time_s", "solve_time_s", "wall_time_s"):
        assert stacked[key] >= 0 and loop[key] >= 0
    assert stacked["coupling_price_eur_per_mwh"] is None
    for i in range(6):
        _check_feasible(fleet_take(fleet, i), st_, stacked["charge"][i], stacked["discharge"][i])
    ev = evaluate_schedule(fleet, market, st_, stacked["charge"], stacked["discharge"])
    np.testing.assert_allclose(ev["soc"], stacked["soc"], atol=1e-12)


def test_coupled_target_met_and_price_convention():
    fleet = random_fleet(3, seed=5)
    T = 24
    market = synthetic_market(6, T, seed=5, dt_hours=0.5)
    st_ = Settings(dt_hours=0.5)
    free = solve_fleet_reference(fleet, market, st_)
    assert np.max(np.abs(free["total_net_mw"])) > 0.1  # the batteries do trade
    target = 0.5 * free["total_net_mw"]  # between the free optimum and idling: feasible by convexity
    res = solve_fleet_reference(fleet, market, st_, target)
    assert res["status"] == "optimal"
    np.testing.assert_allclose(np.sum(res["net"], axis=0), target, atol=1e-7)
    price = res["coupling_price_eur_per_mwh"]
    assert price.shape == (T,) and np.all(np.isfinite(price))
    # each battery alone, with the extra term -price * dt * p, reproduces its coupled schedule (q > 0: unique)
    for i in range(3):
        r = solve_battery_reference(fleet, market, st_, i, linear_price=-price * st_.dt_hours)
        np.testing.assert_allclose(r["net"], res["net"][i], atol=1e-5)
    # price * dt is a subgradient of the optimal objective in the target: for every feasible direction v,
    # (f(target + h v) - f(target)) / h >= dt * price . v. Directions -e_t and e_t - 1.5 e_s bound it on both sides.
    h = 1e-4
    g = price * st_.dt_hours
    f0 = res["objective_eur"]
    checked = 0
    for t, s in [(3, 2), (10, 9), (18, 12), (20, 14)]:
        for v in (-np.eye(T)[t], np.eye(T)[t] - 1.5 * np.eye(T)[s]):
            try:
                f1 = solve_fleet_reference(fleet, market, st_, target + h * v)["objective_eur"]
            except InfeasibleTargetError:
                continue
            checked += 1
            slack = 1e-3 * max(1.0, float(np.abs(g) @ np.abs(v)))
            assert (f1 - f0) / h >= g @ v - slack, (t, s, v @ g, (f1 - f0) / h)
    assert checked >= 4


def test_infeasible_target_names_steps():
    fleet = make_fleet(3)
    market = synthetic_market(4, 5, seed=0)
    target = np.zeros(5)
    target[2] = 3 * 1.8 + 1.0  # beyond the fleet's total power
    with pytest.raises(InfeasibleTargetError) as ei:
        solve_fleet_reference(fleet, market, Settings(), target)
    assert ei.value.steps == [2]


def test_extra_terms_prox():
    """A huge proximal weight pins the schedule to a feasible centre."""
    b = fleet_take(make_fleet(1), 0)
    market = synthetic_market(5, 6, seed=2)
    centre = 0.5 * solve_battery_reference(b, market, Settings())["net"]
    r = solve_battery_reference(b, market, Settings(), prox_weight=1e6, prox_center=centre)
    np.testing.assert_allclose(r["net"], centre, atol=1e-4)
    assert r["model_objective_eur"] <= r["objective_eur"] + 1e-9


@pytest.mark.parametrize("risk,q,deg", list(itertools.product([0.0, 0.5], [0.0, 0.01], [0.0, 1.0])))
def test_lp_and_risk_neutral_cases_solve(risk, q, deg):
    fleet = make_fleet(
        2,
        risk_weight=risk,
        quadratic_cost_eur_per_mw2h=q,
        degradation_eur_per_mwh=deg,
        ramp_mw_per_h=np.array([1.8, np.inf]),
    )
    market = synthetic_market(5, 8, seed=1)
    res = solve_fleet_reference(fleet, market, Settings(baseline="expected"))
    assert res["status"] == "optimal"
    assert np.all(np.isfinite(res["eta"]))
    for i in range(2):
        _check_feasible(fleet_take(fleet, i), Settings(), res["charge"][i], res["discharge"][i])


# ------------------------------------------------------------------------------------------------ formulations
def _dual_value(fleet, market: Market, st_: Settings, price: np.ndarray, target: np.ndarray) -> float:
    """The Lagrange dual function at the coupling price ``y`` (EUR/MWh): ``sum_i min_x (f_i - y dt p_i) + dt y .
    target`` (EUR), each battery solved alone by Clarabel. It equals the coupled optimum iff ``y`` is an optimal
    dual in the module's sign convention (strong duality; weak duality puts it below otherwise)."""
    n = np.asarray(fleet.capacity_mwh).shape[0]
    lin = -np.asarray(price) * st_.dt_hours
    inner = sum(solve_battery_reference(fleet, market, st_, i, linear_price=lin)["objective_eur"] for i in range(n))
    return inner + st_.dt_hours * float(np.asarray(price) @ target)


def _cumulative_form(fleet, market: Market, st_: Settings, target=None):
    """The fleet problem with the state of charge as a cumulative sum of the flows (dense energy rows), written
    independently of jaxvpp.reference: returns the optimal objective (EUR), the schedules p (N, T) MW and the
    coupling dual (cvxpy's sign) when a target is given."""
    fl = {k: np.asarray(v, dtype=np.float64)[:, None] for k, v in fleet._asdict().items()}
    prices, w = np.asarray(market.prices, np.float64), np.asarray(market.probabilities, np.float64)
    n, (K, T), dt = fl["capacity_mwh"].shape[0], prices.shape, st_.dt_hours
    C, D = cp.Variable((n, T), nonneg=True), cp.Variable((n, T), nonneg=True)
    P = D - C
    ones = np.ones((1, T))
    e0 = fl["soc_initial"] * fl["capacity_mwh"]
    e = e0 @ ones + dt * cp.cumsum(
        cp.multiply(fl["eta_charge"] @ ones, C) - cp.multiply(1 / fl["eta_discharge"] @ ones, D), axis=1
    )
    cons = [
        C <= fl["power_mw"] @ ones,
        D <= fl["power_mw"] @ ones,
        e >= (fl["soc_min"] * fl["capacity_mwh"]) @ ones,
        e <= (fl["soc_max"] * fl["capacity_mwh"]) @ ones,
        e[:, T - 1] >= e0[:, 0],
    ]
    ramp = fl["ramp_mw_per_h"][:, 0]
    lim = np.flatnonzero(np.isfinite(ramp))
    if lim.size:
        step = P[lim, 1:] - P[lim, :-1]
        cons += [cp.abs(step) <= (ramp[lim, None] * dt) @ np.ones((1, T - 1))]
    pbar = w @ prices
    rev = dt * P @ prices.T  # (N, K)
    loss = -rev if st_.baseline == "zero" else (rev @ w)[:, None] @ np.ones((1, K)) - rev
    eta = cp.Variable((n, 1))
    U = cp.Variable((n, K), nonneg=True)
    cons.append(U >= loss - eta @ np.ones((1, K)))
    cvar_ = eta[:, 0] + (U @ w) / st_.alpha
    obj = (
        -dt * cp.sum(P @ pbar)
        + fl["risk_weight"][:, 0] @ cvar_
        + cp.sum(cp.multiply(fl["degradation_eur_per_mwh"] * dt @ ones, C + D))
        + cp.sum(cp.multiply(fl["quadratic_cost_eur_per_mw2h"] * dt / 2 @ ones, cp.square(C) + cp.square(D)))
    )
    coupling = None
    if target is not None:
        coupling = cp.sum(P, axis=0) == target
        cons.append(coupling)
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=400)
    assert prob.status == "optimal", prob.status
    return prob.value, np.asarray(P.value), None if coupling is None else np.asarray(coupling.dual_value)


@pytest.mark.parametrize("seed,baseline,dt", [(11, "zero", 1.0), (12, "expected", 0.5), (13, "zero", 0.25)])
def test_recursion_form_matches_cumulative_form(seed, baseline, dt):
    """The reference (explicit state of charge, e_t = e_(t-1) + dt (...)) and the cumulative-sum form have the
    same optimum, schedules and coupling prices on random fleets, without and with a binding target."""
    fleet = random_fleet(5, seed=seed, spread=1.3)  # q > 0: the schedules are unique
    market = synthetic_market(6, 10, seed=seed, dt_hours=dt)
    st_ = Settings(dt_hours=dt, alpha=0.1, baseline=baseline)
    free = solve_fleet_reference(fleet, market, st_)
    f_cum, p_cum, _ = _cumulative_form(fleet, market, st_)
    assert free["status"] == "optimal"
    assert abs(free["objective_eur"] - f_cum) <= TOL * max(1.0, abs(f_cum))
    np.testing.assert_allclose(free["net"], p_cum, atol=1e-5)
    target = 0.5 * free["total_net_mw"]
    res = solve_fleet_reference(fleet, market, st_, target)
    f_cum, p_cum, y_cum = _cumulative_form(fleet, market, st_, target)
    assert res["status"] == "optimal"
    assert abs(res["objective_eur"] - f_cum) <= TOL * max(1.0, abs(f_cum))
    np.testing.assert_allclose(res["net"], p_cum, atol=1e-5)
    # the coupling price need not be unique (steps where every battery sits at a bound); both forms' prices are
    # optimal duals: they close the duality gap with the module's sign convention
    for price in (res["coupling_price_eur_per_mwh"], -y_cum / dt):
        assert abs(_dual_value(fleet, market, st_, price, target) - f_cum) <= 1e-6 * max(1.0, abs(f_cum))


# ------------------------------------------------------------------------------------------------ HiGHS (LP)
def _lp_fleet(n: int, seed: int):
    f = random_fleet(n, seed=seed)
    return f._replace(quadratic_cost_eur_per_mw2h=np.zeros(n))


@pytest.mark.parametrize("solver", ["highs-ipx", "highs-simplex"])
def test_highs_matches_clarabel_on_lp(solver):
    """q = 0 makes the CVaR problem an LP: HiGHS (interior point and simplex) and Clarabel find the same optimum,
    free and coupled, and HiGHS's coupling price closes the duality gap with the module's sign convention."""
    fleet = _lp_fleet(6, seed=21)
    market = synthetic_market(5, 12, seed=21)
    st_ = Settings(alpha=0.1)
    free_c = solve_fleet_reference(fleet, market, st_)
    free_h = solve_fleet_reference(fleet, market, st_, solver=solver)
    assert free_h["status"] == "optimal" and free_h["solver"] == solver
    assert abs(free_h["objective_eur"] - free_c["objective_eur"]) <= TOL * abs(free_c["objective_eur"])
    target = 0.5 * free_c["total_net_mw"]
    res_c = solve_fleet_reference(fleet, market, st_, target)
    res_h = solve_fleet_reference(fleet, market, st_, target, solver=solver)
    assert res_h["status"] == "optimal"
    assert abs(res_h["objective_eur"] - res_c["objective_eur"]) <= TOL * abs(res_c["objective_eur"])
    np.testing.assert_allclose(np.sum(res_h["net"], axis=0), target, atol=1e-7)
    for i in range(6):
        _check_feasible(fleet_take(fleet, i), st_, res_h["charge"][i], res_h["discharge"][i])
    # an LP's price need not be unique; any optimal one closes the duality gap
    dual = _dual_value(fleet, market, st_, res_h["coupling_price_eur_per_mwh"], target)
    assert abs(dual - res_c["objective_eur"]) <= 1e-6 * abs(res_c["objective_eur"])


def test_highs_battery_and_loop_and_infeasible_target():
    fleet = _lp_fleet(3, seed=22)
    market = synthetic_market(4, 8, seed=22)
    st_ = Settings()
    one_c = solve_battery_reference(fleet, market, st_, 1)
    one_h = solve_battery_reference(fleet, market, st_, 1, solver="highs-simplex")
    assert abs(one_h["objective_eur"] - one_c["objective_eur"]) <= TOL * max(1.0, abs(one_c["objective_eur"]))
    loop = solve_fleet_reference(fleet, market, st_, mode="loop", solver="highs-ipx")
    stacked = solve_fleet_reference(fleet, market, st_)
    assert loop["status"] == "optimal"
    assert abs(loop["objective_eur"] - stacked["objective_eur"]) <= TOL * max(1.0, abs(stacked["objective_eur"]))
    target = np.zeros(8)
    target[5] = float(np.sum(np.asarray(fleet.power_mw))) + 0.5  # beyond the fleet's total power
    for solver in ("highs-ipx", "highs-simplex"):
        with pytest.raises(InfeasibleTargetError) as ei:
            solve_fleet_reference(fleet, market, st_, target, solver=solver)
        assert ei.value.steps == [5]


def test_highs_refuses_quadratic_terms_and_unknown_solvers():
    fleet = random_fleet(4, seed=23)  # q > 0
    market = synthetic_market(3, 6, seed=23)
    with pytest.raises(ValueError, match="LP case only: quadratic_cost_eur_per_mw2h must be 0.*4 of 4"):
        solve_fleet_reference(fleet, market, Settings(), solver="highs-ipx")
    with pytest.raises(ValueError, match="LP case only"):
        solve_battery_reference(fleet, market, Settings(), 0, solver="highs-simplex")
    lp = _lp_fleet(1, seed=23)
    with pytest.raises(ValueError, match="no prox_weight"):
        solve_battery_reference(lp, market, Settings(), prox_weight=1.0, solver="highs-ipx")
    with pytest.raises(ValueError, match="solver must be one of"):
        solve_fleet_reference(lp, market, Settings(), solver="gurobi")
