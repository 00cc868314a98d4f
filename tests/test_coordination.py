"""Interior-point ALADIN against the centralized cvxpy + Clarabel solve of the same coupled problem."""

from __future__ import annotations

import inspect
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as hst
from instances import ROUNDOFF_KINDS, SHAPES, make_instance, random_instance, roundoff_instance

from jaxvpp.coordination import aggregator
from jaxvpp.coordination.api import coordinate
from jaxvpp.coordination.feasibility import check_target
from jaxvpp.problem import Settings, make_fleet, synthetic_market
from jaxvpp.reference import solve_fleet_reference


def _instance(seed: int):
    return make_instance(seed, SHAPES[seed % len(SHAPES)])


def _check_constraints(fleet, settings, sol, target):
    dt = settings.dt_hours
    c, d = np.asarray(sol.charge_mw), np.asarray(sol.discharge_mw)
    P = np.asarray(fleet.power_mw)[:, None]
    E = np.asarray(fleet.capacity_mwh)[:, None]
    tol = 1e-6 * np.maximum(1.0, np.maximum(P, E))
    assert np.all(c >= -tol) and np.all(d >= -tol) and np.all(c <= P + tol) and np.all(d <= P + tol)
    e0 = np.asarray(fleet.soc_initial)[:, None] * E
    e = e0 + dt * np.cumsum(np.asarray(fleet.eta_charge)[:, None] * c - d / np.asarray(fleet.eta_discharge)[:, None], 1)
    assert np.all(e >= np.asarray(fleet.soc_min)[:, None] * E - tol)
    assert np.all(e <= np.asarray(fleet.soc_max)[:, None] * E + tol)
    assert np.all(e[:, -1:] >= e0 - tol)
    R = np.asarray(fleet.ramp_mw_per_h)[:, None]
    ramp_ok = np.abs(np.diff(d - c, axis=1)) <= np.where(np.isfinite(R), R * dt, np.inf) + tol
    assert np.all(ramp_ok)
    N = c.shape[0]
    assert np.max(np.abs(np.sum(d - c, axis=0) - target)) <= 1e-6 * N


def _check_against_centralized(fleet, market, settings, target):
    res = coordinate(fleet, market, target, settings)
    assert res.status == "converged", (res.status, res.iterations)
    assert res.iterations <= 50
    ref = solve_fleet_reference(fleet, market, settings, target)
    assert abs(res.objective_eur - ref["objective_eur"]) <= 1e-6 * max(1.0, abs(ref["objective_eur"])), (
        res.objective_eur,
        ref["objective_eur"],
    )
    assert np.all(np.isfinite(np.asarray(res.solution.net_mw)))
    _check_constraints(fleet, settings, res.solution, target)


@pytest.mark.parametrize("seed", [s if s < 14 else pytest.param(s, marks=pytest.mark.slow) for s in range(105)])
def test_aladin_matches_centralized_clarabel(seed):
    """105 seeded fleets (N 2-300, K 1-30, 24 x 1 h and 96 x 0.25 h, about half of them mixing in pure-LP
    and risk-neutral batteries, every fleet with a no-ramp battery, two kinds of binding targets)."""
    _check_against_centralized(*random_instance(seed))


@pytest.mark.parametrize("seed, shape, mixed", [(0, (2, 6, 24, 1.0), True), (11, (8, 5, 96, 0.25), False)])
def test_end_game_regressions(seed, shape, mixed):
    """Instances on which the coupling residual used to blow up as mu -> 0 (the recovered steps were
    inconsistent with the curvatures the batteries had sent)."""
    _check_against_centralized(*make_instance(seed, shape, mixed=mixed))


@pytest.mark.parametrize("kind", ROUNDOFF_KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_roundoff_target_of_equal_efficiency_fleet_matches_centralized(seed, kind):
    """Identical and proportional batteries (same efficiencies) with a target of half their own
    uncoordinated net power, unrounded: no slack in energy, so the plain problem's multipliers are
    unbounded. These ended in "numerical error", or "converged" 0.5 % off the optimum, before the
    aggregator's elastic variables bounded the multiplier."""
    _check_against_centralized(*roundoff_instance(seed, kind))


@pytest.mark.parametrize("seed, theta", [(6, 0.3), (7, 0.8)])
def test_roundoff_targets_other_shares(seed, theta):
    _check_against_centralized(*roundoff_instance(seed, "proportional", theta=theta))


def test_multiplier_stays_inside_the_elastic_penalty():
    """On a fleet without slack the multiplier stays below the elastic penalty (|lam| < rho), the elastic
    variables vanish and the plain coupling is met."""
    from jaxvpp.coordination.aladin import aladin_ipm, aladin_problem

    fleet, market, settings, target = roundoff_instance(3, "proportional")
    st = aladin_ipm(fleet, market, jnp.asarray(target), settings)
    rho = np.asarray(aladin_problem(fleet, market, jnp.asarray(target), settings).rho)
    assert int(st.status) == 0
    assert np.all(np.abs(np.asarray(st.lam)) < rho)
    assert np.max(np.asarray(st.elastic.u) + np.asarray(st.elastic.w)) < 1e-7
    assert float(st.coupling_residual_mw) < 1e-7


def test_elastic_newton_step_against_a_dense_solve():
    """The aggregator's elimination of its elastic variables (curvature on the diagonal, their part of the
    right-hand side, their recovered steps) against a dense numpy solve of the aggregator's block of the
    Newton system: sum_i (v_i - M_i dlam) + du - dw = -r, z_u du + u dlam = -r_cu, z_w dw - w dlam = -r_cw."""
    rng = np.random.default_rng(3)
    N, T = 3, 5
    B = rng.normal(size=(N, T, T))
    grade = np.logspace(-2, 0, T)
    curv = np.einsum("nij,nkj->nik", B, B) * grade[None, :, None] * grade[None, None, :]
    v, net, target = rng.normal(size=(N, T)), rng.normal(size=(N, T)), rng.normal(size=T)
    el = aggregator.Elastic(u=jnp.asarray(rng.uniform(0.1, 1, T)), w=jnp.asarray(rng.uniform(0.1, 1, T)))
    rho = jnp.asarray(rng.uniform(50, 100, T))
    lam = jnp.asarray(rng.uniform(-20, 20, T))
    r_cu, r_cw = jnp.asarray(rng.normal(size=T)), jnp.asarray(rng.normal(size=T))
    msgs = aggregator.AgentMessage(curvature=jnp.asarray(curv), gradient=jnp.asarray(v), net_mw=jnp.asarray(net))
    D = aggregator.elastic_curvature(el, rho, lam)
    g = aggregator.elastic_gradient(el, rho, lam, r_cu, r_cw)
    cfac = aggregator.factor_coupling(msgs, elastic_curvature=D)
    dlam, _ = aggregator.solve_coupling(cfac, msgs, jnp.asarray(target) - el.u + el.w - g)
    step = aggregator.elastic_step(el, rho, lam, dlam, r_cu, r_cw)

    u, w, zu, zw = (np.asarray(a) for a in (el.u, el.w, rho + lam, rho - lam))
    r = net.sum(0) + u - w - target
    Id, Z = np.eye(T), np.zeros((T, T))
    K = np.block(
        [
            [-curv.sum(0), Id, -Id],
            [np.diag(u), np.diag(zu), Z],
            [-np.diag(w), Z, np.diag(zw)],
        ]
    )
    rhs = np.concatenate([-r - v.sum(0), -np.asarray(r_cu), -np.asarray(r_cw)])
    sol = np.linalg.solve(K, rhs)
    np.testing.assert_allclose(np.asarray(dlam), sol[:T], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(step.u), sol[T : 2 * T], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(step.w), sol[2 * T :], rtol=1e-9, atol=1e-12)
    room = aggregator.elastic_max_step(el, rho, lam, step, dlam)
    for val, dv in ((u, sol[T : 2 * T]), (w, sol[2 * T :]), (zu, sol[:T]), (zw, -sol[:T])):
        assert np.all(val + float(room) * dv >= -1e-9 * np.abs(val))  # the step stops at the boundary


def test_infeasible_power_target_detected_before_solving():
    fleet = make_fleet(3)
    market = synthetic_market(4, 24, seed=0)
    target = np.zeros(24)
    target[5] = -6.0  # three batteries of 1.8 MW can absorb 5.4 MW
    res = coordinate(fleet, market, target)
    assert res.status == "infeasible_target"
    assert [t for t, _ in res.infeasible_steps] == [5]


def test_positive_daily_energy_is_infeasible():
    fleet = make_fleet(4)
    target = np.full(24, 0.05)  # net injection over the day while every battery must end as full as it began
    assert check_target(fleet, target, Settings())


def test_ramp_infeasible_target_detected_during_solve():
    fleet = make_fleet(5, ramp_mw_per_h=0.1)
    market = synthetic_market(5, 24, seed=0)
    target = np.where(np.arange(24) % 2 == 0, 1.0, -1.2)  # passes the pre-checks, breaks the ramp limits
    assert not check_target(fleet, target, Settings())
    res = coordinate(fleet, market, target)
    assert res.status == "infeasible_target"
    assert res.infeasible_steps


def test_admm_baseline_approaches_the_same_optimum():
    """ADMM is the slow baseline: on these LP-like batteries it gains about two digits in 400 iterations
    (measured: coupling residual 1.24 -> 0.011 MW, objective 3 % from the optimum, then stagnating)."""
    fleet, market, settings, target = _instance(1)
    ref = solve_fleet_reference(fleet, market, settings, target)
    res = coordinate(fleet, market, target, settings, method="admm", tol=1e-4, max_iter=400)
    hist = res.history["coupling_residual_mw"]
    assert hist[-1] <= hist[0] / 50
    assert abs(res.objective_eur - ref["objective_eur"]) <= 0.05 * abs(ref["objective_eur"])


def test_admm_warm_start_continues_the_same_iteration():
    """ADMM's carry holds its whole state: 10 iterations, then 10 more from the carry, equal 20 at once."""
    fleet, market, settings, target = _instance(1)
    kw = dict(method="admm", tol=1e-12)
    first = coordinate(fleet, market, target, settings, max_iter=10, **kw)
    more = coordinate(fleet, market, target, settings, max_iter=10, warm_start=first.warm_start, **kw)
    both = coordinate(fleet, market, target, settings, max_iter=20, **kw)
    np.testing.assert_allclose(
        more.history["coupling_residual_mw"], both.history["coupling_residual_mw"][10:], rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(np.asarray(more.solution.net_mw), np.asarray(both.solution.net_mw), atol=1e-7)


def test_warm_started_recoordination_after_target_change():
    fleet, market, settings, target = _instance(7)
    first = coordinate(fleet, market, target, settings)
    assert first.status == "converged"
    moved = target * 1.03
    if check_target(fleet, moved, settings):
        moved = target * 0.97
    warm = coordinate(fleet, market, moved, settings, warm_start=first.warm_start)
    cold = coordinate(fleet, market, moved, settings)
    assert warm.status == "converged" and cold.status == "converged"
    assert abs(warm.objective_eur - cold.objective_eur) <= 1e-6 * max(1.0, abs(cold.objective_eur))


def test_aggregator_sees_only_messages():
    """Privacy: the aggregator's functions take messages (and the target), never battery parameters."""
    public = [
        aggregator.factor_coupling,
        aggregator.solve_coupling,
        aggregator.battery_bounds,
        aggregator.fleet_step,
        aggregator.elastic_penalty,
        aggregator.elastic_start,
        aggregator.elastic_duals,
        aggregator.elastic_curvature,
        aggregator.elastic_complementarity,
        aggregator.elastic_gradient,
        aggregator.elastic_step,
        aggregator.elastic_max_step,
    ]
    allowed = {
        aggregator.AgentMessage,
        aggregator.StepMessage,
        aggregator.CouplingFactor,
        aggregator.Elastic,
        jnp.ndarray,
        float,
        aggregator.Array | None,
    }
    for f in public:
        for name, hint in typing.get_type_hints(f).items():
            if name == "return":
                continue
            assert hint in allowed or hint is aggregator.Array, (f.__name__, name, hint)
    assert set(inspect.signature(aggregator.solve_coupling).parameters) == {"factor", "messages", "target_mw"}
    assert set(aggregator.AgentMessage._fields) == {"curvature", "gradient", "net_mw"}
    assert set(aggregator.StepMessage._fields) == {"max_primal", "max_dual", "complementarity", "rows"}
    # the module does not even import the parameter types or the battery model
    imports = [ln for ln in inspect.getsource(aggregator).splitlines() if ln.startswith(("import ", "from "))]
    assert not any("problem" in ln or "battery" in ln or "Fleet" in ln for ln in imports), imports


def test_coupling_solve_against_numpy():
    """The aggregator's equilibrated Cholesky solve against a dense numpy solve, on a graded spectrum."""
    rng = np.random.default_rng(0)
    N, T = 4, 6
    B = rng.normal(size=(N, T, T))
    grade = np.logspace(-6, 2, T)  # the end game's graded diagonal: some steps nearly blocked
    curv = np.einsum("nij,nkj->nik", B, B) * grade[None, :, None] * grade[None, None, :]
    msgs = aggregator.AgentMessage(
        curvature=jnp.asarray(curv),
        gradient=jnp.asarray(rng.normal(size=(N, T))),
        net_mw=jnp.asarray(rng.normal(size=(N, T))),
    )
    target = rng.normal(size=T)
    dlam, r = aggregator.solve_coupling(aggregator.factor_coupling(msgs), msgs, jnp.asarray(target))
    rhs = np.sum(np.asarray(msgs.net_mw), 0) - target + np.sum(np.asarray(msgs.gradient), 0)
    np.testing.assert_allclose(np.asarray(r), np.sum(np.asarray(msgs.net_mw), 0) - target, rtol=1e-12)
    # reference in exact algebra: (D C D)^-1 rhs = D^-1 C^-1 D^-1 rhs with C well conditioned
    ref = np.linalg.solve(np.einsum("nij,nkj->ik", B, B), rhs / grade) / grade
    np.testing.assert_allclose(np.asarray(dlam), ref, rtol=1e-8)


def test_two_half_local_solve_matches_the_general_local_solve():
    """A battery's Newton step done in two halves around the aggregator (the forward half and its net-power
    part first, the multiplier's term added in the second half with the same factor) equals the general Newton
    solve with the multiplier's term in its right-hand side; the part it sends is the net power of the step at
    a zero multiplier step, and the step's answer to a multiplier step alone is -M dlam."""
    import jax

    from jaxvpp.battery.kernel import factor_net, newton_once
    from jaxvpp.battery.qp import Primal, build_qp, num_rows, primal_map
    from jaxvpp.coordination.aladin import (
        coupling_curvature,
        coupling_dual,
        coupling_map,
        local_solve_finish,
        local_solve_start,
    )
    from jaxvpp.problem import fleet_take, random_fleet

    T, K = 10, 4
    battery = fleet_take(random_fleet(2, seed=3), 1)
    qp, sc = build_qp(battery, synthetic_market(K, T, seed=1), Settings())
    rng = np.random.default_rng(2)
    m = num_rows(T, K)
    s, z = jnp.asarray(10.0 ** rng.uniform(-2, 1, m)), jnp.asarray(10.0 ** rng.uniform(-2, 1, m))
    fac = factor_net(qp, z / s)
    shapes = Primal(qp.fc, qp.fd, qp.f_eta, qp.fu)
    r_d = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=np.shape(a))), shapes)
    r_p, r_c = jnp.asarray(rng.normal(size=m)), jnp.asarray(rng.normal(size=m))
    lam = jnp.asarray(rng.normal(size=T))

    def two_halves(rd, rp, rc):
        half, p0 = local_solve_start(qp, fac, s, 1.0 / s, z, rd, rp, rc)
        return local_solve_finish(qp, fac, sc, z, 1.0 / s, half, lam), p0

    got, p0 = two_halves(r_d, r_p, r_c)
    want = newton_once(qp, fac, s, z, primal_map(jnp.add, r_d, coupling_dual(qp, sc, lam)), r_p, r_c)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12 * np.abs(b).max())
    at_zero = newton_once(qp, fac, s, z, r_d, r_p, r_c)[0]
    np.testing.assert_allclose(np.asarray(sc.power * p0), np.asarray(coupling_map(sc, at_zero)), rtol=1e-10, atol=1e-12)
    # the curvature the battery sends: its net-power answer to a multiplier step alone is -M lam
    price_only, _ = two_halves(jax.tree.map(jnp.zeros_like, r_d), jnp.zeros(m), jnp.zeros(m))
    np.testing.assert_allclose(
        np.asarray(coupling_map(sc, price_only[0])),
        -np.asarray(coupling_curvature(fac, sc) @ lam),
        rtol=1e-9,
        atol=1e-12,
    )


@examples(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bounds=hst.lists(hst.floats(1e-6, 1.5), min_size=1, max_size=60),
    stragglers=hst.integers(0, 70),
    padded=hst.integers(0, 5),
)
def test_fleet_step_is_the_order_statistic_of_the_batteries_bounds(bounds, stragglers, padded):
    """The fleet's step against a sort: the (k+1)-th smallest bound min(1, 0.99 max step) (1 where at most k
    batteries are below 1), the smallest for k = 0 exactly, and padding replicas (weight 0, copies of real
    batteries) counted nowhere."""
    own = np.asarray(bounds)
    n = own.size
    extra = own[:padded]  # replicas of the first batteries, as a sharded run pads
    steps = aggregator.StepMessage(
        max_primal=jnp.asarray(np.concatenate([own, extra])),
        max_dual=jnp.asarray(np.concatenate([own, extra]) + 0.5),
        complementarity=jnp.zeros(n + extra.size),
        rows=jnp.ones(n + extra.size),
    )
    weight = jnp.asarray(np.concatenate([np.ones(n), np.zeros(extra.size)]))
    got = float(aggregator.fleet_step(steps, jnp.asarray(float(stragglers)), weight))
    bound = np.sort(np.minimum(1.0, 0.99 * own))
    if stragglers == 0:
        assert got == bound[0]
    elif np.sum(bound < 1.0) <= stragglers:
        assert got == 1.0
    else:
        assert bound[stragglers] - 1e-11 <= got <= bound[stragglers]
        assert np.sum(bound < got) <= stragglers


def test_stragglers_take_their_own_step_and_the_rest_the_fleets():
    """Each battery's step, read off its own primal residual (linear in the step: it keeps 1 - a of it): far
    from the optimum at most floor(0.02 N) batteries fall behind the fleet's step, each to a step that keeps
    its slacks and multipliers positive, and every other battery takes the fleet's step; near the optimum all
    take it. The run still meets the centralized optimum."""
    from jaxvpp.battery.kernel import kkt_residuals
    from jaxvpp.battery.qp import FLEET_QP_AXES
    from jaxvpp.coordination.aladin import (
        STRAGGLER_LEVEL,
        STRAGGLER_SHARE,
        STRAGGLERS_MAX,
        aladin_problem,
        aladin_start,
        aladin_step,
    )

    fleet, market, settings, target = make_instance(3, (150, 8, 24, 1.0), mixed=True)
    target = jnp.asarray(target)
    pb = jax.jit(aladin_problem, static_argnames=("tol", "max_iter"))(fleet, market, target, settings)
    step = jax.jit(aladin_step)
    residual = jax.jit(jax.vmap(lambda q, x, s, z: kkt_residuals(q, x, s, z)[1], in_axes=(FLEET_QP_AXES, 0, 0, 0)))
    state = aladin_start(pb)
    k = int(min(np.floor(STRAGGLER_SHARE * 150), STRAGGLERS_MAX))
    behind_seen = 0
    while not bool(state.converged) and int(state.iteration) < 60:
        before = np.asarray(residual(pb.qp, state.local.x, state.local.s, state.local.z))
        far = float(state.best_merit) * pb.tol > STRAGGLER_LEVEL
        new = step(pb, state)
        alpha = float(new.history.step[int(state.iteration)])
        after = np.asarray(residual(pb.qp, new.local.x, new.local.s, new.local.z))
        size = np.max(np.abs(before), axis=1)
        seen = size > 1e-6 * (1.0 + np.max(size))  # batteries whose residual is large enough to read the step off
        taken = 1.0 - np.max(np.abs(after), axis=1)[seen] / size[seen]
        assert np.all(taken <= alpha + 1e-3)
        behind = int(np.sum(taken < alpha - 1e-3))
        assert behind <= (k if far else 0), (int(state.iteration), behind)
        behind_seen += behind
        assert np.all(np.asarray(new.local.s) > 0) and np.all(np.asarray(new.local.z) > 0)
        state = new
    assert behind_seen > 0  # the rule was exercised
    res = coordinate(fleet, market, target, settings)
    ref = solve_fleet_reference(fleet, market, settings, target)
    assert res.status == "converged"
    assert abs(res.objective_eur - ref["objective_eur"]) <= 1e-6 * max(1.0, abs(ref["objective_eur"]))
