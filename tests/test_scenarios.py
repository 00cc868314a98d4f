"""Scenarios: CVaR against independent references, copula correlation recovered on data with known
correlation, sampled marginals, reductions (probabilities, mean, tail CVaR), the solver's file format, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from jaxvpp import io
from jaxvpp.cli import main
from jaxvpp.errors import InputError
from jaxvpp.market.forecasting import LEVELS, level_columns
from jaxvpp.market.ingress import TIMESTAMP, delivery_day_steps, synthetic_prices, write_price_file
from jaxvpp.market.scenarios import (
    ar1_correlation,
    backtest_pit_matrix,
    build_scenarios,
    copula_correlation,
    cvar,
    reduce_kmeans,
    reduce_tail,
    reference_schedule,
    sample_paths,
    scenarios_text,
    schedule_losses,
)

LV = np.asarray(LEVELS)


def _ru_cvar(losses: np.ndarray, w: np.ndarray, alpha: float) -> float:
    """Rockafellar-Uryasev: min over eta of eta + E[(L - eta)+] / alpha (the minimum lies at a loss value)."""
    return min(eta + np.dot(w, np.maximum(losses - eta, 0.0)) / alpha for eta in losses)


@pytest.mark.parametrize("seed", range(5))
def test_cvar_equals_the_rockafellar_uryasev_minimum(seed) -> None:
    rng = np.random.default_rng(seed)
    L = rng.standard_t(3, size=37) * 10
    w = rng.random(37)
    w /= w.sum()
    for alpha in (0.01, 0.05, 0.2, 0.5):
        assert cvar(L, w, alpha) == pytest.approx(_ru_cvar(L, w, alpha), rel=1e-10, abs=1e-10)


def test_cvar_of_a_normal_sample_matches_the_closed_form() -> None:
    x = np.random.default_rng(1).standard_normal(400_000)
    alpha = 0.05
    assert cvar(x, None, alpha) == pytest.approx(norm.pdf(norm.ppf(1 - alpha)) / alpha, rel=0.01)


def _known_correlation(T: int) -> np.ndarray:
    i = np.arange(T)
    return 0.3 + 0.6 * 0.8 ** np.abs(np.subtract.outer(i, i)) + 0.1 * np.eye(T)  # common factor + AR


def test_copula_correlation_recovered_on_data_with_known_correlation() -> None:
    T, n = 24, 3000
    C = _known_correlation(T)
    rng = np.random.default_rng(7)
    z = rng.standard_normal((n, T)) @ np.linalg.cholesky(C).T
    # arbitrary monotone marginals: heavy right tail, negative values, a cubic
    x = np.column_stack(
        [np.exp(z[:, t]) if t % 3 == 0 else (z[:, t] ** 3 if t % 3 == 1 else 50 + 20 * z[:, t]) for t in range(T)]
    )
    est = copula_correlation(x)
    assert np.max(np.abs(est - C)) < 0.05
    assert np.all(np.linalg.eigvalsh(est) > 0) and np.allclose(np.diag(est), 1)
    # Pearson on the raw (non-Gaussian) values would not recover it
    assert np.max(np.abs(np.corrcoef(x.T) - C)) > 0.1


def test_copula_correlation_with_few_days_is_a_valid_correlation() -> None:
    x = np.random.default_rng(2).standard_normal((10, 96))  # fewer days than steps
    est = copula_correlation(x)
    assert np.all(np.linalg.eigvalsh(est) > 0) and np.allclose(np.diag(est), 1)


def test_sampled_paths_have_the_forecast_marginals_and_the_copula() -> None:
    T = 12
    mu = np.linspace(20, 120, T)
    q = mu[:, None] + 15 * norm.ppf(LV)[None, :] * (1 + 0.5 * (LV > 0.5))[None, :]  # skewed marginals
    C = _known_correlation(T)
    paths = sample_paths(LEVELS, q, C, 20_000, seed=3)
    emp = np.quantile(paths, LV, axis=0).T
    np.testing.assert_allclose(emp, q, atol=1.5)
    np.testing.assert_allclose(copula_correlation(paths, shrinkage=0.0), C, atol=0.04)


def _paths(n: int = 1000, T: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = 60 + 30 * np.sin(np.linspace(0, 2 * np.pi, T))
    level = rng.standard_t(3, size=(n, 1)) * 15
    spikes = (rng.random((n, T)) < 0.02) * rng.exponential(150, (n, T))
    return shape + level + rng.normal(0, 8, (n, T)) + spikes


def test_reductions_keep_probabilities_mean_and_the_tail() -> None:
    paths = _paths()
    sched = reference_schedule(paths.mean(axis=0), 1.0)
    losses = schedule_losses(paths, None, sched, 1.0)
    km = reduce_kmeans(paths, 20, seed=0)
    tail = reduce_tail(paths, 20, losses, 0.05, seed=0)
    med = reduce_kmeans(paths, 20, seed=0, medoids=True)
    for r in (km, tail, med):
        assert r.prices.shape == (20, 24) and np.all(r.probabilities >= 0)
        assert r.probabilities.sum() == pytest.approx(1.0, abs=1e-12)
    # centroids weighted by mass keep the sample mean exactly
    np.testing.assert_allclose(km.probabilities @ km.prices, paths.mean(axis=0), atol=1e-8)
    np.testing.assert_allclose(tail.probabilities @ tail.prices, paths.mean(axis=0), atol=1e-8)
    # medoids are sampled paths
    assert all(np.any(np.all(np.isclose(paths, m), axis=1)) for m in med.prices)
    full = cvar(losses, None, 0.05)
    red_tail = cvar(schedule_losses(tail.prices, tail.probabilities, sched, 1.0), tail.probabilities, 0.05)
    red_km = cvar(schedule_losses(km.prices, km.probabilities, sched, 1.0), km.probabilities, 0.05)
    assert red_tail == pytest.approx(full, rel=1e-9)  # the tail's mean loss is kept (loss linear in prices)
    assert red_km < full * 0.9  # K-means averages the tail away


def test_reference_schedule_is_feasible_and_buys_low_sells_high() -> None:
    prices = 50 + 40 * np.sin(np.linspace(0, 2 * np.pi, 24))
    p = reference_schedule(prices, 1.0)
    c, d = np.maximum(-p, 0), np.maximum(p, 0)
    e = 1.0 + np.cumsum(0.85 * c - d / 0.90)  # default battery: 2 MWh, starts at 50 %
    assert np.all(e >= 0.2 - 1e-6) and np.all(e <= 1.8 + 1e-6) and e[-1] >= 1.0 - 1e-6
    assert np.all(np.abs(p) <= 1.8 + 1e-9)
    # optimal: the same revenue net of throughput cost as the package's cvxpy reference (risk-neutral,
    # no quadratic cost) on the same prices
    from jaxvpp.problem import Market, Settings, make_fleet
    from jaxvpp.reference import solve_battery_reference

    fleet = make_fleet(1, risk_weight=0.0, quadratic_cost_eur_per_mw2h=0.0)
    ref = solve_battery_reference(fleet, Market(prices=prices[None, :], probabilities=np.ones(1)), Settings(), 0)
    mine = np.dot(prices, p) - 1.0 * np.sum(np.abs(p))
    assert mine == pytest.approx(-ref["objective_eur"], rel=1e-5, abs=1e-4)


def test_scenarios_file_is_read_by_the_solver(tmp_path) -> None:
    paths = _paths(200, 4)
    r = reduce_kmeans(paths, 7)
    labels = ["2025-01-01T00:00:00Z", "2025-01-01T01:00:00Z", "2025-01-01T02:00:00Z", "2025-01-01T03:00:00Z"]
    f = tmp_path / "scenarios.csv"
    f.write_text(scenarios_text(labels, r.prices, r.probabilities))
    steps, market = io.read_scenarios(f)
    assert steps == labels
    assert np.asarray(market.prices).shape == (7, 4)
    np.testing.assert_allclose(np.asarray(market.prices), r.prices, atol=1e-4)
    assert float(np.sum(np.asarray(market.probabilities))) == pytest.approx(1.0, abs=1e-12)


def _backtest_frame(days: pd.DatetimeIndex, rng: np.random.Generator, C: np.ndarray) -> pd.DataFrame:
    """A backtest with N(50, 10) forecasts and realised prices from a Gaussian copula with correlation C."""
    rows = []
    for d in days:
        ts = delivery_day_steps(d, 60)
        z = np.linalg.cholesky(C[: len(ts), : len(ts)]) @ rng.standard_normal(len(ts))
        for t, zz in zip(ts, z):
            rows.append([t, 50 + 10 * zz] + list(50 + 10 * norm.ppf(LV)))
    return pd.DataFrame(rows, columns=[TIMESTAMP, "realised"] + level_columns(LEVELS))


def test_pit_matrix_and_correlation_through_a_dst_backtest() -> None:
    C = ar1_correlation(25, 0.85)
    days = pd.date_range("2025-09-01", "2025-11-15", freq="D")  # includes the 25-hour 2025-10-26
    bt = _backtest_frame(days, np.random.default_rng(4), C)
    steps = delivery_day_steps("2025-11-16", 60)
    pit = backtest_pit_matrix(bt, LEVELS, steps)
    assert pit.shape == (len(days), 24) and np.isfinite(pit).all()
    est = copula_correlation(pit)
    assert np.mean(np.diagonal(est, 1)) == pytest.approx(0.85, abs=0.06)
    # a 25-hour forecast day gets a 25 x 25 correlation
    q = pd.DataFrame({TIMESTAMP: delivery_day_steps("2026-10-25", 60)})
    q[level_columns(LEVELS)] = 50 + 10 * norm.ppf(LV)
    res = build_scenarios(q, LEVELS, bt, samples=300, k=10, heldout=2)
    assert res.samples.shape == (300, 25) and res.correlation.shape == (25, 25)


def test_cli_forecast_then_scenarios(tmp_path, capsys) -> None:
    prices = tmp_path / "prices.csv"
    write_price_file(synthetic_prices(26, 60, seed=31), prices)
    out = tmp_path / "run"
    assert (
        main(
            [
                "forecast",
                "--prices",
                str(prices),
                "--out",
                str(out),
                "--backtest-days",
                "6",
                "--calibration-days",
                "5",
                "--max-iter",
                "15",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "scenarios",
                "--quantiles",
                str(out / "quantiles.csv"),
                "--samples",
                "400",
                "--k",
                "12",
                "--confidence",
                "0.9",
            ]
        )
        == 0
    )
    steps, market = io.read_scenarios(out / "scenarios.csv")
    assert np.asarray(market.prices).shape == (12, 24) and len(steps) == 24
    m = json.loads((out / "scenario_metrics.json").read_text())
    assert m["alpha"] == pytest.approx(0.1) and m["correlation_source"] == "backtest"
    assert abs(m["reductions"]["tail"]["relative_error"]) < abs(m["reductions"]["kmeans"]["relative_error"])
    for name in ("scenario_samples.csv", "scenarios.png", "scenarios_kmeans.csv", "scenarios_medoids.csv"):
        assert (out / name).is_file()
    samples = pd.read_csv(out / "scenario_samples.csv")
    assert len(samples) == 400 and samples["probability"].sum() == pytest.approx(1.0)
    # errors: both --alpha and --confidence; bad alpha; a crossing quantile file; nothing written
    with pytest.raises(SystemExit) as ex:
        main(["scenarios", "--quantiles", str(out / "quantiles.csv"), "--alpha", "0.05", "--confidence", "0.95"])
    assert ex.value.code == 2
    assert (
        main(["scenarios", "--quantiles", str(out / "quantiles.csv"), "--alpha", "1.5", "--out", str(tmp_path / "x")])
        == 2
    )
    bad = tmp_path / "q.csv"
    bad.write_text("timestamp,q0.05,q0.50,q0.95\n2025-01-01T00:00Z,1,2,3\n2025-01-01T01:00Z,5,4,6\n")
    assert main(["scenarios", "--quantiles", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "cross" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_build_scenarios_rejects_bad_settings() -> None:
    q = pd.DataFrame({TIMESTAMP: delivery_day_steps("2025-01-02", 60)})
    q[level_columns(LEVELS)] = 50 + 10 * norm.ppf(LV)
    with pytest.raises(InputError, match="--k"):
        build_scenarios(q, LEVELS, None, samples=10, k=20)
    with pytest.raises(InputError, match="alpha"):
        build_scenarios(q, LEVELS, None, alpha=0.0)
    r = build_scenarios(q, LEVELS, None, samples=200, k=5, heldout=0)  # no backtest: AR(1) fallback
    assert r.metrics["correlation_source"].startswith("ar1")
