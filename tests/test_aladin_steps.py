"""ALADIN's start / step / run shape, its statuses, the warm start of a result and the live log's sinks."""

from __future__ import annotations

import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from instances import random_instance

from jaxvpp.coordination.admm import ADMMCarry
from jaxvpp.coordination.aladin import (
    ALADINState,
    ALADINWarmStart,
    History,
    Status,
    aladin_finish,
    aladin_ipm,
    aladin_problem,
    aladin_running,
    aladin_start,
    aladin_step,
    emit_iteration,
    format_iteration,
    live_log,
    priced_start,
)
from jaxvpp.coordination.api import coordinate


@pytest.fixture(scope="module")
def small():
    """A two-battery fleet (K = 6, T = 24) with a binding target; ALADIN converges in 15 iterations."""
    return random_instance(0)


def _assert_same(a, b) -> None:
    """Leaf by leaf: identical on a CPU (the step compiled alone and inside the loop is the same arithmetic);
    within 1e-12 elsewhere, where XLA may fuse the two programs differently."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_steps_reproduce_the_run(small):
    """aladin_start, then aladin_step k times, then aladin_finish: the state of aladin_ipm with max_iter=k
    (the same iterate, multiplier, measures and history)."""
    fleet, market, settings, target = small
    k = 6
    target = jnp.asarray(target)
    run = aladin_ipm(fleet, market, target, settings, max_iter=k)
    assert int(run.iteration) == k and Status.from_code(run.status) is Status.MAX_ITER
    build = jax.jit(aladin_problem, static_argnames=("tol", "max_iter"))  # as inside aladin_ipm: one program
    pb = build(fleet, market, target, settings, tol=1e-8, max_iter=k)
    state = jax.jit(aladin_start)(pb)
    step = jax.jit(aladin_step)
    for i in range(k):
        assert bool(aladin_running(pb, state)), i  # the loop would take this iteration too
        state = step(pb, state)
        assert isinstance(state, ALADINState) and int(state.iteration) == i + 1
        assert np.all(np.isnan(np.asarray(state.history.mu)[i + 1 :]))
    assert not bool(aladin_running(pb, state))  # the limit
    _assert_same(state.history, run.history)
    _assert_same(jax.jit(aladin_finish)(pb, state), run)


def test_priced_start_is_each_batterys_response_to_the_price():
    """The start: every battery's own problem at a multiplier, loosely solved. Loose (the cold start's
    START_TOL): an interior point whose battery measures are within it. Tight, at zero and at the coupled
    optimum's multiplier: each battery's optimal value of cvxpy + Clarabel with that linear price on its net
    power (the values, not the schedules: with quadratic costs of 0.01 EUR/(MW^2 h) a schedule is flat in
    its objective, and Clarabel's moved by up to 1e-3 MW within its tolerance)."""
    from jaxvpp.battery.ipm import kkt_measures
    from jaxvpp.battery.qp import FLEET_QP_AXES
    from jaxvpp.coordination.aladin import START_TOL, coupling_dual
    from jaxvpp.reference import evaluate_schedule, solve_battery_reference

    fleet, market, settings, target = random_instance(1)  # 8 batteries, T = 96 quarter hours
    target = jnp.asarray(target)
    pb = jax.jit(aladin_problem, static_argnames=("tol", "max_iter"))(fleet, market, target, settings)
    coupled = coordinate(fleet, market, target, settings)
    assert coupled.status == "converged"
    T = target.shape[0]
    measures = jax.vmap(kkt_measures, in_axes=(FLEET_QP_AXES, 0, 0, 0, 0))
    dual = jax.vmap(coupling_dual, in_axes=(FLEET_QP_AXES, 0, None))
    power = np.asarray(fleet.power_mw)[:, None]
    assert np.max(np.abs(np.asarray(coupled.warm_start.lam))) > 0
    for lam in (jnp.zeros(T), coupled.warm_start.lam):
        loose = jax.jit(priced_start)(pb.qp, pb.sc, lam)
        assert np.all(np.asarray(loose.s) > 0) and np.all(np.asarray(loose.z) > 0)
        worst = np.max(np.stack(measures(pb.qp, loose.x, loose.s, loose.z, dual(pb.qp, pb.sc, lam))), axis=0)
        assert np.all(worst <= START_TOL), worst
        tight = jax.jit(priced_start, static_argnames=("tol", "max_iter"))(pb.qp, pb.sc, lam, tol=1e-10, max_iter=80)
        c, d = np.asarray(tight.x.c) * power, np.asarray(tight.x.d) * power
        ours = evaluate_schedule(fleet, market, settings, c, d)["objective_eur"] + (d - c) @ np.asarray(lam)
        for i in range(fleet.size):
            ref = solve_battery_reference(fleet, market, settings, i, linear_price=np.asarray(lam))["objective_eur"]
            assert abs(ours[i] - ref) <= 1e-6 * max(1.0, abs(ref)), (i, ours[i], ref)


def test_status_values_codes_and_messages():
    assert [s.value for s in Status] == ["converged", "max_iter", "infeasible_target", "numerical_error"]
    assert [s.code for s in Status] == [0, 1, 2, 3]
    for s in Status:
        assert Status.from_code(s.code) is s and Status.from_code(np.int64(s.code)) is s and Status(s.value) is s
        assert s == s.value and f"{s}" == s.value and json.dumps(s) == f'"{s.value}"'
        assert len(s.message) > 20
    assert len({s.message for s in Status}) == len(Status)


def test_results_carry_the_status_enum(small):
    fleet, market, settings, target = small
    short = coordinate(fleet, market, target, settings, max_iter=3)
    assert short.status is Status.MAX_ITER and short.status == "max_iter" and not short.converged
    assert short.iterations == 3
    done = coordinate(fleet, market, target, settings)
    assert done.status is Status.CONVERGED and done.converged
    admm = coordinate(fleet, market, target, settings, method="admm", max_iter=3)
    assert admm.status is Status.MAX_ITER and admm.iterations == 3


def test_warm_start_is_a_field_of_the_result(small):
    """The result's warm start holds the reported iterate (its schedule and multiplier); a run from it at the
    same target starts next to the optimum and needs fewer iterations for the same objective."""
    fleet, market, settings, target = small
    cold = coordinate(fleet, market, target, settings)
    assert "_state" not in cold.history
    warm_start = cold.warm_start
    assert isinstance(warm_start, ALADINWarmStart)
    power = np.asarray(fleet.power_mw)[:, None]
    x = warm_start.local.x
    np.testing.assert_allclose(np.asarray(x.d - x.c) * power, np.asarray(cold.solution.net_mw), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        -np.asarray(warm_start.lam) / settings.dt_hours, cold.coupling_price_eur_per_mwh, rtol=1e-12
    )
    warm = coordinate(fleet, market, target, settings, warm_start=warm_start)
    assert warm.status == "converged" and warm.iterations < cold.iterations
    assert abs(warm.objective_eur - cold.objective_eur) <= 1e-6 * abs(cold.objective_eur)
    admm = coordinate(fleet, market, target, settings, method="admm", max_iter=2)
    assert isinstance(admm.warm_start, ADMMCarry)
    with pytest.raises(ValueError, match="ADMM"):
        coordinate(fleet, market, target, settings, warm_start=admm.warm_start)
    with pytest.raises(ValueError, match="ADMM"):
        coordinate(fleet, market, target, settings, method="admm", warm_start=warm_start)
    assert coordinate(fleet, market, target, settings, method="centralized").warm_start is None


def _without_time(line: str) -> str:
    return line.rsplit("  ", 1)[0]  # the elapsed time ends the line


def _expected_lines(res) -> list[str]:
    h = res.history
    rows = [History(**{f: h[f][k] for f in History._fields}) for k in range(res.iterations)]
    return [_without_time(format_iteration(k + 1, row, 0.0)) for k, row in enumerate(rows)]


def test_each_sink_gets_its_own_lines_without_recompiling(small):
    """Two calls with two different sinks (new lambdas): each sink receives exactly its run's lines, the
    second call reuses the compiled program, and the history holds the elapsed time of every iteration."""
    fleet, market, settings, target = small
    first: list[str] = []
    a = coordinate(fleet, market, target, settings, log=lambda line: first.append(line))
    compiled = aladin_ipm._cache_size()
    second: list[str] = []
    b = coordinate(fleet, market, 0.9 * target, settings, log=lambda line: second.append(line))
    assert aladin_ipm._cache_size() == compiled
    assert [_without_time(x) for x in first] == _expected_lines(a)
    assert [_without_time(x) for x in second] == _expected_lines(b)
    assert first != second
    for res in (a, b):
        el = res.history["elapsed_s"]
        assert el.shape == (res.iterations,) and np.all(np.diff(el) >= 0) and el[-1] <= res.wall_time_s
    silent = coordinate(fleet, market, target, settings)
    assert np.all(np.isnan(silent.history["elapsed_s"]))


def test_concurrent_runs_do_not_mix_their_lines(small):
    fleet, market, settings, target = small
    targets = {"a": target, "b": 0.8 * target}
    lines: dict[str, list[str]] = {key: [] for key in targets}
    results = {}

    def run(key):
        results[key] = coordinate(fleet, market, targets[key], settings, log=lines[key].append)

    threads = [threading.Thread(target=run, args=(key,)) for key in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in targets:
        assert [_without_time(x) for x in lines[key]] == _expected_lines(results[key])


def test_a_live_log_ends_with_its_block():
    """Inside the block the jitted callback reaches the sink; after it (also after an exception) the same id
    reaches nothing."""
    row = History(**{f: jnp.asarray(float(k + 1)) for k, f in enumerate(History._fields)})

    @jax.jit
    def emit(log_id):
        emit_iteration(log_id, jnp.asarray(1), row, ordered=True)
        return log_id

    got: list[str] = []
    with pytest.raises(RuntimeError, match="stop"):
        with live_log(got.append) as log:
            jax.block_until_ready(emit(np.int64(log.call_id)))
            jax.effects_barrier()
            assert len(got) == 1 and got[0].startswith("  it   1  primal 1.00e+00")
            raise RuntimeError("stop")
    jax.block_until_ready(emit(np.int64(log.call_id)))
    jax.effects_barrier()
    assert len(got) == 1
    with live_log(None) as quiet:
        assert quiet.call_id is None


def test_a_breakdown_with_the_elastic_problem_solved_reports_the_target_out_of_reach():
    """A target the ramp limits rule out (the pre-checks pass it): the iterates of aladin_step solve the
    elastic problem while the plain coupling stays violated. Stopped by a breakdown once the elastic problem
    is solved to the acceptable level but not to ``tol``, aladin_finish reports the target out of reach
    with the measures of the iterate it keeps; stopped earlier, the breakdown stays a numerical error."""
    from instances import make_fleet

    from jaxvpp import Settings, synthetic_market
    from jaxvpp.coordination.aladin import ACCEPTABLE_TOL
    from jaxvpp.coordination.feasibility import check_target

    fleet = make_fleet(5, ramp_mw_per_h=0.1)
    market = synthetic_market(5, 24, seed=0)
    target = jnp.asarray(np.where(np.arange(24) % 2 == 0, 1.0, -1.2))
    assert not check_target(fleet, np.asarray(target), Settings())
    pb = aladin_problem(fleet, market, target, Settings())
    step, finish = jax.jit(aladin_step), jax.jit(aladin_finish)
    state = aladin_start(pb)
    broke = {}
    while bool(aladin_running(pb, state)):
        state = step(pb, state)
        pres, dres, gap = (float(v) for v in (state.primal_residual, state.dual_residual, state.gap))
        worst = max(pres, dres, gap)
        if np.isfinite(worst) and "early" not in broke and worst > 1e3 * ACCEPTABLE_TOL:
            broke["early"] = state._replace(status=jnp.asarray(Status.NUMERICAL_ERROR.code))
        if np.isfinite(worst) and pb.tol < worst <= ACCEPTABLE_TOL and float(state.coupling_residual_mw) > 1.0:
            broke["late"] = (state._replace(status=jnp.asarray(Status.NUMERICAL_ERROR.code)), worst)
    assert set(broke) == {"early", "late"}
    late, worst = broke["late"]
    out = finish(pb, late)
    assert Status.from_code(out.status) is Status.INFEASIBLE_TARGET
    assert max(float(out.primal_residual), float(out.dual_residual), float(out.gap)) == pytest.approx(worst, rel=1e-12)
    assert float(out.coupling_residual_mw) > 1.0  # the fleet stays more than 1 MW off the target
    assert Status.from_code(finish(pb, broke["early"]).status) is Status.NUMERICAL_ERROR
