"""Sensitivities of the coordinated optimum, sweeps and their commands.

Gradients are checked against central finite differences of the centralized Clarabel optimum
(:func:`jaxvpp.reference.solve_fleet_reference`, tolerances 1e-10). Finite differences only measure a
derivative where the optimum is smooth, so the instance is chosen for that: every battery has a quadratic
power cost (q > 0: a unique schedule given the coupling price), and at every step at least one battery is
free to move, so the coupling multiplier is unique (``condition`` finite). One degenerate instance (steps at
which every battery is idle or at a bound) checks that this is reported instead of hidden.

All instances share one shape (N = 3, K = 4, T = 12), so the programs are compiled once per worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxvpp import io
from jaxvpp.battery.solution import solve_batteries
from jaxvpp.cli import main
from jaxvpp.coordination.api import coordinate
from jaxvpp.problem import FLEET_COLUMNS, Settings, random_fleet, synthetic_market
from jaxvpp.reference import solve_fleet_reference
from jaxvpp.studies.sensitivity import sensitivities
from jaxvpp.studies.sweeps import parse_values, sweep

N, K, T = 3, 4, 12
RTOL = 1e-4
#: Clarabel tolerances for the finite differences. Revenue, CVaR and the price are not stationary at the
#: optimum (the objective is), so the reference's last digits show in their differences: with the default
#: 1e-10 tolerances h = 1e-4 left 1e-4 EUR of noise; with these, h = 1e-3, 1e-4 and 1e-5 agree to 1e-6.
TIGHT = dict(tol_gap_abs=1e-13, tol_gap_rel=1e-13, tol_feas=1e-13, tol_ktratio=1e-11, max_iter=1000)


def reference(fleet, market, settings, target=None):
    """The centralized Clarabel optimum with tight tolerances."""
    r = solve_fleet_reference(fleet, market, settings, target, solver_options=TIGHT)
    assert r["status"] == "optimal", r["status"]
    return r


def instance(seed: int = 2, capacity=(1.5, 6.0, 1.5)):
    """A fleet, market, settings and binding target (half the uncoordinated fleet profile, MW).

    seed 2 with these capacities is smooth: some batteries hit their energy bounds (so capacity and the
    state-of-charge limits have non-zero gradients) while at every step at least one battery is free.
    """
    fleet = random_fleet(N, seed=seed)
    fleet = fleet._replace(
        capacity_mwh=fleet.capacity_mwh * jnp.asarray(capacity),
        quadratic_cost_eur_per_mw2h=jnp.asarray([12.0, 20.0, 30.0]),
        degradation_eur_per_mwh=0.2 * fleet.degradation_eur_per_mwh,
    )
    market = synthetic_market(K, T, seed=seed)
    settings = Settings(alpha=0.25)
    free = np.asarray(jnp.sum(solve_batteries(fleet, market, settings).net_mw, axis=0))
    return fleet, market, settings, 0.5 * free


def _close(ad: float, fd: float, what: str) -> None:
    assert abs(ad - fd) <= RTOL * max(1.0, abs(fd)), (what, ad, fd)


@pytest.fixture(scope="module")
def smooth():
    fleet, market, settings, target = instance()
    return fleet, market, settings, target, sensitivities(fleet, market, target, settings, jacobians=True)


def test_smooth_instance_is_reported_smooth(smooth):
    *_, s = smooth
    assert s.converged and s.smooth and np.isfinite(s.condition)
    # the instance exercises the energy limits, not only the costs
    assert np.any(np.abs(s.d_objective_d_fleet["capacity_mwh"]) > 0.1)


def test_objective_gradient_matches_clarabel_finite_differences(smooth):
    fleet, market, settings, target, s = smooth

    def obj(fl=fleet, mk=market, st=settings, tg=target) -> float:
        return float(reference(fl, mk, st, tg)["objective_eur"])

    assert abs(s.objective_eur - obj()) <= 1e-7 * abs(obj())
    for col in FLEET_COLUMNS:
        v = np.asarray(getattr(fleet, col))
        for i in range(N):
            if not np.isfinite(v[i]):
                continue
            h = 1e-4 * max(1.0, abs(v[i]))
            fd = (
                obj(fl=fleet._replace(**{col: jnp.asarray(v).at[i].add(h)}))
                - obj(fl=fleet._replace(**{col: jnp.asarray(v).at[i].add(-h)}))
            ) / (2 * h)
            _close(float(s.d_objective_d_fleet[col][i]), fd, f"{col}[{i}]")
    for t in range(T):
        h = 1e-3
        fd = (obj(tg=target + h * np.eye(T)[t]) - obj(tg=target - h * np.eye(T)[t])) / (2 * h)
        _close(float(s.d_objective_d_target[t]), fd, f"target[{t}]")
    h = 1e-4
    fd = (obj(st=Settings(alpha=settings.alpha + h)) - obj(st=Settings(alpha=settings.alpha - h))) / (2 * h)
    _close(s.d_objective_d_alpha, fd, "alpha")
    fd = (
        obj(st=Settings(alpha=settings.alpha, dt_hours=1 + h)) - obj(st=Settings(alpha=settings.alpha, dt_hours=1 - h))
    ) / (2 * h)
    _close(s.d_objective_d_dt_hours, fd, "dt_hours")
    for k, t in [(0, 3), (2, 9), (3, 11)]:
        h = 1e-3
        fd = (
            obj(mk=market._replace(prices=market.prices.at[k, t].add(h)))
            - obj(mk=market._replace(prices=market.prices.at[k, t].add(-h)))
        ) / (2 * h)
        _close(float(s.d_objective_d_prices[k, t]), fd, f"price[{k},{t}]")
    dw = np.array([0.0, 1.0, 0.0, -1.0])  # a direction that keeps the probabilities summing to 1
    h = 1e-5
    fd = (
        obj(mk=market._replace(probabilities=market.probabilities + h * dw))
        - obj(mk=market._replace(probabilities=market.probabilities - h * dw))
    ) / (2 * h)
    _close(float(s.d_objective_d_probabilities @ dw), fd, "probabilities")


def test_jacobians_of_revenue_cvar_and_price_match_finite_differences(smooth):
    fleet, market, settings, target, s = smooth
    J = s.jacobians
    for col, i in [("risk_weight", 1), ("eta_charge", 0), ("soc_max", 2), ("quadratic_cost_eur_per_mw2h", 1)]:
        v = jnp.asarray(getattr(fleet, col))
        h = 1e-4 * max(1.0, abs(float(v[i])))
        rp = reference(fleet._replace(**{col: v.at[i].add(h)}), market, settings, target)
        rm = reference(fleet._replace(**{col: v.at[i].add(-h)}), market, settings, target)
        for j in range(N):
            _close(
                J["expected_revenue_eur"][f"fleet.{col}"][j, i],
                (rp["expected_revenue_eur"][j] - rm["expected_revenue_eur"][j]) / (2 * h),
                f"rev[{j}]/{col}[{i}]",
            )
            _close(
                J["cvar_eur"][f"fleet.{col}"][j, i],
                (rp["cvar_eur"][j] - rm["cvar_eur"][j]) / (2 * h),
                f"cvar[{j}]/{col}[{i}]",
            )
        fd = (rp["coupling_price_eur_per_mwh"] - rm["coupling_price_eur_per_mwh"]) / (2 * h)
        for t in range(T):
            _close(J["coupling_price_eur_per_mwh"][f"fleet.{col}"][t, i], fd[t], f"price[{t}]/{col}[{i}]")
    h = 1e-3
    rp = reference(fleet, market, settings, target + h * np.eye(T)[4])
    rm = reference(fleet, market, settings, target - h * np.eye(T)[4])
    fd = (rp["coupling_price_eur_per_mwh"] - rm["coupling_price_eur_per_mwh"]) / (2 * h)
    for t in range(T):
        _close(J["coupling_price_eur_per_mwh"]["target"][t, 4], fd[t], f"price[{t}]/target[4]")


def test_envelope_identity_and_coupling_price(smooth):
    """d objective / d target_t = dt * coupling price_t (EUR per MW): raising the target by 1 MW for one step
    costs the coupling price (EUR/MWh) times the step's length; the price matches Clarabel's dual."""
    fleet, market, settings, target, s = smooth
    scale = np.max(np.abs(s.coupling_price_eur_per_mwh))
    np.testing.assert_allclose(
        s.d_objective_d_target, settings.dt_hours * s.coupling_price_eur_per_mwh, rtol=0, atol=1e-6 * scale
    )
    ref = reference(fleet, market, settings, target)
    np.testing.assert_allclose(
        s.coupling_price_eur_per_mwh, ref["coupling_price_eur_per_mwh"], rtol=0, atol=1e-6 * scale
    )


def test_degenerate_instance_is_flagged():
    """Seed 0: at some steps every battery is idle or at a bound, so the coupling multiplier is not unique
    there and the optimum has a kink in the target. The result says so (condition inf, smooth False)."""
    fleet, market, settings, target = instance(seed=0, capacity=(1.0, 6.0, 6.0))
    s = sensitivities(fleet, market, target, settings)
    assert s.converged and not s.smooth and np.isinf(s.condition)


def test_uncoordinated_gradient_matches_clarabel():
    fleet, market, settings, _ = instance()
    s = sensitivities(fleet, market, None, settings)
    assert s.d_objective_d_target is None and s.smooth
    for col, i in [("risk_weight", 0), ("capacity_mwh", 0), ("eta_discharge", 2)]:
        v = jnp.asarray(getattr(fleet, col))
        h = 1e-4 * max(1.0, abs(float(v[i])))
        fd = (
            reference(fleet._replace(**{col: v.at[i].add(h)}), market, settings)["objective_eur"]
            - reference(fleet._replace(**{col: v.at[i].add(-h)}), market, settings)["objective_eur"]
        ) / (2 * h)
        _close(float(s.d_objective_d_fleet[col][i]), fd, f"{col}[{i}]")


# --------------------------------------------------------------------------------------------- sweeps


def test_coordinated_sweep_rows_equal_separate_runs():
    fleet, market, settings, target = instance()
    values = np.array([0.0, 0.7, 2.0])
    table, res = sweep(fleet, market, settings, target, "risk_weight", values)
    for b, v in enumerate(values):
        r = coordinate(fleet._replace(risk_weight=jnp.full(N, v)), market, target, settings)
        assert r.status == table.status[b] == "converged"
        assert int(table.iterations[b]) == r.iterations
        assert abs(table.objective_eur[b] - r.objective_eur) <= 1e-9 * abs(r.objective_eur)
        np.testing.assert_allclose(table.cvar_eur[b], np.sum(r.solution.cvar_eur), rtol=1e-9)
        np.testing.assert_allclose(res.net_mw[b], r.solution.net_mw, rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.coupling_price_eur_per_mwh[b], r.coupling_price_eur_per_mwh, rtol=1e-9)
    table, _ = sweep(fleet, market, settings, target, "target_scale", values[:2] + 0.5)
    for b, v in enumerate(values[:2] + 0.5):
        r = coordinate(fleet, market, v * target, settings)
        assert abs(table.objective_eur[b] - r.objective_eur) <= 1e-9 * abs(r.objective_eur)


def test_sweep_with_one_problem_per_chunk_equals_separate_runs(monkeypatch):
    """Large fleets run one problem per chunk (a plain lax.map, no vmap): the same rows."""
    import jaxvpp.studies.sweeps

    monkeypatch.setattr(jaxvpp.studies.sweeps, "CHUNK_BATTERIES", 1)
    fleet, market, settings, target = instance()
    values = np.array([0.4, 0.6, 0.8, 1.0])  # four problems: a shape no other test traces with another chunking
    table, _ = sweep(fleet, market, settings, target, "target_scale", values)
    for b, v in enumerate(values):
        r = coordinate(fleet, market, v * target, settings)
        assert int(table.iterations[b]) == r.iterations
        assert abs(table.objective_eur[b] - r.objective_eur) <= 1e-9 * abs(r.objective_eur)


def test_independent_sweep_rows_equal_separate_runs():
    fleet, market, settings, _ = instance()
    values = np.array([0.05, 0.25, 0.5])
    table, res = sweep(fleet, market, settings, None, "alpha", values)
    for b, a in enumerate(values):
        sol = solve_batteries(fleet, market, Settings(alpha=float(a)))
        np.testing.assert_allclose(table.objective_eur[b], float(jnp.sum(sol.objective_eur)), rtol=1e-9)
        np.testing.assert_allclose(table.cvar_eur[b], float(jnp.sum(sol.cvar_eur)), rtol=1e-9)
        np.testing.assert_allclose(res.net_mw[b], sol.net_mw, atol=1e-9)
    assert table.converged.all()
    # a larger risk weight never raises the CVaR nor the expected profit
    table, _ = sweep(fleet, market, settings, None, "risk_weight", np.array([0.0, 0.5, 2.0]))
    assert np.all(np.diff(table.cvar_eur) <= 1e-9) and np.all(np.diff(table.expected_profit_eur) <= 1e-9)


def test_parse_values():
    v = parse_values("0:2:64")
    assert v.size == 64 and v[0] == 0.0 and v[-1] == 2.0
    np.testing.assert_array_equal(parse_values("0.5, 1,2"), [0.5, 1.0, 2.0])
    np.testing.assert_array_equal(parse_values("3:3:1"), [3.0])
    for bad in ("0:2", "0:2:0", "0:2:x", "a,b", "", "0:2:1.5", "nan:1:3"):
        with pytest.raises(Exception) as exc:
            parse_values(bad)
        assert "--values" in str(exc.value)


# --------------------------------------------------------------------------------------------- commands


@pytest.fixture()
def files(tmp_path: Path):
    fleet, market, _, target = instance()
    ids = [f"b{i}" for i in range(N)]
    steps = [f"{t:02d}:00" for t in range(T)]
    fp, sp, tp = tmp_path / "fleet.csv", tmp_path / "scenarios.csv", tmp_path / "target.csv"
    fp.write_text(io.fleet_csv(ids, fleet))
    sp.write_text(io.scenarios_csv(steps, market, [f"sc{k}" for k in range(K)]))
    tp.write_text(io.target_csv(steps, target))
    return fp, sp, tp


def test_sensitivity_command_writes_documented_columns(files, tmp_path, smooth):
    fp, sp, tp = files
    out = tmp_path / "sens"
    assert (
        main(
            [
                "sensitivity",
                "--fleet",
                str(fp),
                "--scenarios",
                str(sp),
                "--target",
                str(tp),
                "--alpha",
                "0.25",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    per_b = pd.read_csv(out / "sensitivities.csv")
    assert list(per_b.columns) == ["battery_id"] + [f"d_objective_d_{c}" for c in FLEET_COLUMNS]
    assert list(per_b.battery_id) == ["b0", "b1", "b2"]
    *_, s = smooth
    for c in FLEET_COLUMNS:
        np.testing.assert_allclose(per_b[f"d_objective_d_{c}"], s.d_objective_d_fleet[c], rtol=1e-5, atol=1e-6)
    per_t = pd.read_csv(out / "price_sensitivities.csv")
    assert list(per_t.columns) == (
        ["step"]
        + [f"d_objective_d_price_sc{k}" for k in range(K)]
        + ["d_objective_d_target_mw", "coupling_price_eur_per_mwh"]
    )
    assert len(per_t) == T
    np.testing.assert_allclose(per_t.d_objective_d_price_sc2, s.d_objective_d_prices[2], rtol=1e-5, atol=1e-8)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] and summary["smooth"]
    assert set(summary["d_objective_d_probability"]) == {f"sc{k}" for k in range(K)}


def test_sweep_command_writes_table_and_plot(files, tmp_path):
    fp, sp, _ = files
    out = tmp_path / "sw"
    assert (
        main(
            [
                "sweep",
                "--fleet",
                str(fp),
                "--scenarios",
                str(sp),
                "--alpha",
                "0.25",
                "--param",
                "risk_weight",
                "--values",
                "0:2:3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.columns) == [
        "risk_weight",
        "objective_eur",
        "expected_revenue_eur",
        "degradation_eur",
        "expected_profit_eur",
        "cvar_eur",
        "converged",
        "status",
        "iterations",
        "coupling_residual_mw",
    ]
    np.testing.assert_allclose(table.risk_weight, [0.0, 1.0, 2.0])
    assert table.converged.all()
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, where",
    [
        (["sweep", "--param", "risk_weight", "--values", "0:2:x"], "--values"),
        (["sweep", "--param", "alpha", "--values", "0.1,1.5"], "--values"),
        (["sweep", "--param", "volume", "--values", "1,2"], "--param"),
        (["sweep", "--param", "target_scale", "--values", "1,2"], "--param"),
        (["sensitivity", "--alpha", "2"], "--alpha"),
    ],
)
def test_bad_parameters_exit_2_and_write_nothing(argv, where, files, tmp_path, capsys):
    fp, sp, _ = files
    out = tmp_path / "out"
    assert main(argv + ["--fleet", str(fp), "--scenarios", str(sp), "--out", str(out)]) == 2
    assert where in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", ["sensitivity", "sweep"])
def test_bad_file_exits_2_naming_file_row_column(command, files, tmp_path, capsys):
    fp, sp, tp = files
    lines = tp.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",lots"
    bad = tmp_path / "bad_target.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    extra = ["--param", "risk_weight", "--values", "0,1"] if command == "sweep" else []
    assert (
        main([command, "--fleet", str(fp), "--scenarios", str(sp), "--target", str(bad), *extra, "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "bad_target.csv" in err and "row 4" in err and "target_mw" in err
    assert not out.exists()
