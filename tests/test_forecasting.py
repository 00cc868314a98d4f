"""Forecasting: quantile functions and scores against closed forms, calibration, no look-ahead, DST and
15-minute forecast days, short files, output files, and the accuracy claim on an unseen synthetic series."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from jaxvpp.cli import main
from jaxvpp.errors import InputError
from jaxvpp.market.forecasting import (
    LEVELS,
    ForecastConfig,
    cdf_from_quantiles,
    conformal_shifts,
    crps_from_quantiles,
    level_columns,
    pinball,
    quantile_function,
    read_quantile_file,
    rearrange,
    run_forecast,
)
from jaxvpp.market.ingress import PRICE, TIMESTAMP, delivery_day_steps, synthetic_prices, write_price_file

FAST = ForecastConfig(boosting_iterations=15, backtest_days=3, calibration_days=5, refit_every_days=7)
LV = np.asarray(LEVELS)


# ----------------------------------------------------------------------------------------------------
# quantile functions and scores
# ----------------------------------------------------------------------------------------------------


def test_crps_matches_the_normal_closed_form() -> None:
    mu, sigma = 40.0, 15.0
    q = mu + sigma * norm.ppf(LV)
    for y in (-10.0, 25.0, 40.0, 62.0, 120.0):
        z = (y - mu) / sigma
        exact = sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
        assert crps_from_quantiles(LV, q[None, :], np.array([y]))[0] == pytest.approx(exact, rel=0.01)


def test_crps_of_a_point_forecast_is_the_absolute_error() -> None:
    q = np.full((1, LV.size), 30.0)
    assert crps_from_quantiles(LV, q, np.array([37.5]))[0] == pytest.approx(7.5, rel=1e-6)


def test_pinball_closed_form() -> None:
    loss = pinball(np.array([10.0]), np.array([[8.0, 12.0]]), (0.1, 0.9))
    np.testing.assert_allclose(loss, [[0.1 * 2.0, 0.1 * 2.0]])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-200, 500), min_size=19, max_size=19), st.floats(1e-4, 1 - 1e-4))
def test_cdf_inverts_the_quantile_function(raw, u) -> None:
    q = np.sort(np.asarray(raw))[None, :]
    x = quantile_function(LV, q, np.array([[u]]))[0, 0]
    assert np.isfinite(x)
    back = cdf_from_quantiles(LV, q, np.array([x]))[0]
    # Q(F(x)) = x always (on a flat stretch F picks one of the levels that map to x) ...
    assert quantile_function(LV, q, np.array([[back]]))[0, 0] == pytest.approx(x, abs=1e-6 * (1 + abs(x)))
    # ... and F(Q(u)) = u where the quantiles increase strictly
    strict = np.cumsum(np.abs(np.asarray(raw)) + 0.1)[None, :] - 100.0
    xs = quantile_function(LV, strict, np.array([[u]]))
    assert cdf_from_quantiles(LV, strict, xs[0])[0] == pytest.approx(u, abs=1e-9)
    # the quantile function passes through the given quantiles and is monotone
    np.testing.assert_allclose(quantile_function(LV, q, LV[None, :]), q, atol=1e-9)
    grid = quantile_function(LV, q, np.linspace(1e-4, 1 - 1e-4, 200)[None, :])
    assert np.all(np.diff(grid) >= -1e-9)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.floats(-1e3, 1e3), min_size=5, max_size=5), min_size=1, max_size=6))
def test_rearrangement_never_crosses(rows) -> None:
    q = rearrange(np.asarray(rows))
    assert np.all(np.diff(q, axis=1) >= 0)


def test_conformal_shifts_restore_coverage_of_a_biased_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.standard_t(4, size=4000) * 10
    lv = (0.05, 0.5, 0.95)
    true_q = np.quantile(y, lv)
    pred = np.tile(0.5 * true_q + 3.0, (4000, 1))  # too narrow and biased
    s = conformal_shifts(pred[:2000], y[:2000], lv)
    fresh = y[2000:]
    cov = [(fresh <= pred[0, i] + s[i]).mean() for i in range(3)]
    np.testing.assert_allclose(cov, lv, atol=0.02)
    raw = [(fresh <= pred[0, i]).mean() for i in range(3)]
    assert raw[0] > 0.08 and raw[2] < 0.92  # the uncalibrated model did under-cover


# ----------------------------------------------------------------------------------------------------
# the forecaster
# ----------------------------------------------------------------------------------------------------


def _check_quantiles(frame: pd.DataFrame) -> None:
    q = frame[level_columns(LEVELS)].to_numpy()
    assert np.all(np.isfinite(q))
    assert np.all(np.diff(q, axis=1) >= 0), "quantiles cross"


def test_forecast_is_crossing_free_and_without_look_ahead() -> None:
    df = synthetic_prices(30, 60, seed=21)
    r = run_forecast(df, FAST)
    _check_quantiles(r.quantiles)
    _check_quantiles(r.backtest)
    assert r.metrics["backtest_days"] == 3 and len(r.backtest) == 72
    origins = pd.DatetimeIndex(r.backtest["origin"])
    assert np.all(origins < pd.DatetimeIndex(r.backtest[TIMESTAMP]))  # issued before delivery
    assert np.all(pd.DatetimeIndex(r.backtest[TIMESTAMP]) - origins <= pd.Timedelta(hours=36))
    # change the last backtest day's prices: the forecasts of the earlier days must not move
    changed = df.copy()
    last = r.backtest[TIMESTAMP].iloc[-24:]
    changed.loc[changed[TIMESTAMP].isin(last), PRICE] += 500.0
    r2 = run_forecast(changed, FAST)
    cols = level_columns(LEVELS)
    pd.testing.assert_frame_equal(r.backtest[cols].iloc[:48], r2.backtest[cols].iloc[:48])
    assert not np.allclose(r.quantiles[cols], r2.quantiles[cols])  # ... but the next day's forecast does


@pytest.mark.parametrize(
    "start, days, minutes, next_day, steps",
    [
        ("2025-09-17", 39, 60, "2025-10-26", 25),
        ("2025-02-19", 39, 60, "2025-03-30", 23),
        ("2025-10-09", 17, 15, "2025-10-26", 100),
    ],
)
def test_forecast_day_across_dst_and_quarter_hours(start, days, minutes, next_day, steps) -> None:
    df = synthetic_prices(days, minutes, seed=5, start=start)
    r = run_forecast(df, FAST)
    assert r.metrics["forecast_day"] == next_day
    assert len(r.quantiles) == steps
    assert (pd.DatetimeIndex(r.quantiles[TIMESTAMP]) == delivery_day_steps(next_day, minutes)).all()
    _check_quantiles(r.quantiles)


def test_mixed_resolution_file_is_forecast_in_quarter_hours() -> None:
    hourly = synthetic_prices(10, 60, seed=8, start="2025-09-21")
    quarter = synthetic_prices(8, 15, seed=9, start="2025-10-01")
    r = run_forecast(pd.concat([hourly, quarter], ignore_index=True), FAST)
    assert r.metrics["resolution_minutes"] == 15 and len(r.quantiles) == 96


def test_short_history_falls_back_to_fewer_lags_and_too_short_fails() -> None:
    r = run_forecast(synthetic_prices(16, 60, seed=3), ForecastConfig(boosting_iterations=10))
    assert r.metrics["weekly_lags"] is False
    assert any("weekly lags" in n for n in r.notes)
    assert 1 <= r.metrics["backtest_days"] < 28
    assert r.metrics["baseline_lag_days"] == 1
    _check_quantiles(r.quantiles)
    with pytest.raises(InputError, match="complete days"):
        run_forecast(synthetic_prices(8, 60, seed=3), FAST)


def test_future_exogenous_rows_are_used() -> None:
    df = synthetic_prices(26, 60, seed=4)
    hist, fut = df.iloc[:-24].copy(), df.iloc[-24:].copy()
    fut[PRICE] = np.nan
    r = run_forecast(pd.concat([hist, fut], ignore_index=True), FAST)
    assert not any("persistence" in n for n in r.notes)
    assert (pd.DatetimeIndex(r.quantiles[TIMESTAMP]) == pd.DatetimeIndex(fut[TIMESTAMP])).all()
    r2 = run_forecast(hist, FAST)
    assert any("persistence" in n for n in r2.notes)


def test_qra_model_runs_and_is_calibrated_to_crossing_free_quantiles() -> None:
    r = run_forecast(synthetic_prices(40, 60, seed=6), ForecastConfig(model="qra", backtest_days=3, calibration_days=7))
    _check_quantiles(r.quantiles)
    _check_quantiles(r.backtest)
    assert r.metrics["model"] == "qra"


def test_accuracy_claim_on_an_unseen_series() -> None:
    """Seed 2024 was not used while the forecaster was built (tuning used seed 0)."""
    df = synthetic_prices(84, 60, seed=2024, start="2023-02-01")
    cfg = ForecastConfig(boosting_iterations=60, backtest_days=21, calibration_days=21, refit_every_days=7)
    m = run_forecast(df, cfg).metrics
    assert m["pinball_loss"] <= 0.9 * m["baseline_pinball_loss"]
    assert 0.85 <= m["coverage_90"] <= 0.95


# ----------------------------------------------------------------------------------------------------
# files and command line
# ----------------------------------------------------------------------------------------------------


def test_cli_forecast_writes_recomputable_outputs(tmp_path, capsys) -> None:
    prices = tmp_path / "prices.csv"
    write_price_file(synthetic_prices(24, 60, seed=12), prices)
    out = tmp_path / "fc"
    rc = main(
        [
            "forecast",
            "--prices",
            str(prices),
            "--out",
            str(out),
            "--backtest-days",
            "3",
            "--calibration-days",
            "5",
            "--max-iter",
            "15",
        ]
    )
    assert rc == 0
    for name in ("quantiles.csv", "backtest.csv", "forecast_metrics.json", "risk_bands.png", "baseline_backtest.csv"):
        assert (out / name).is_file()
    q, levels = read_quantile_file(out / "quantiles.csv")
    assert levels == LEVELS and len(q) == 24
    assert list(pd.read_csv(out / "quantiles.csv").columns) == ["timestamp"] + level_columns(LEVELS)
    assert pd.read_csv(out / "quantiles.csv")["timestamp"].iloc[0].endswith("Z")
    bt, _ = read_quantile_file(out / "backtest.csv", require=("origin", "realised"))
    m = json.loads((out / "forecast_metrics.json").read_text())
    for key in ("pinball_loss", "baseline_pinball_loss", "coverage_90", "crps", "backtest_days", "levels"):
        assert key in m
    cols = level_columns(LEVELS)
    y, qq = bt["realised"].to_numpy(), bt[cols].to_numpy()
    assert m["pinball_loss"] == pytest.approx(pinball(y, qq, LEVELS).mean(), rel=1e-4)  # recomputable
    assert m["coverage_90"] == pytest.approx(np.mean((y >= qq[:, 0]) & (y <= qq[:, -1])))
    base = pd.read_csv(out / "baseline_backtest.csv")
    assert m["baseline_pinball_loss"] == pytest.approx(
        pinball(base["realised"].to_numpy(), base[cols].to_numpy(), LEVELS).mean(), rel=1e-4
    )


def test_cli_forecast_bad_input(tmp_path, capsys) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text("timestamp,price_eur_per_mwh\n2025-01-01T00:00Z,1\n2025-01-01T01:00Z,abc\n")
    out = tmp_path / "fc"
    assert main(["forecast", "--prices", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "row 3" in err and "price_eur_per_mwh" in err
    assert not out.exists()
    assert main(["forecast", "--prices", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    good = tmp_path / "g.csv"
    write_price_file(synthetic_prices(20, 60, seed=1), good)
    assert main(["forecast", "--prices", str(good), "--out", str(out), "--backtest-days", "0"]) == 2


def test_crossing_quantile_file_is_rejected(tmp_path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("timestamp,q0.05,q0.50,q0.95\n2025-01-01T00:00Z,1,2,3\n2025-01-01T01:00Z,5,4,6\n")
    with pytest.raises(InputError) as err:
        read_quantile_file(path)
    assert err.value.row == 3 and "cross" in str(err.value)
    path.write_text("timestamp,q0.05,qx\n2025-01-01T00:00Z,1,2\n")
    with pytest.raises(InputError, match="quantile level"):
        read_quantile_file(path)
