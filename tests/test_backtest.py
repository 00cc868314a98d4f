"""The out-of-sample backtest (``jaxvpp backtest``, :func:`jaxvpp.backtest`) against independent references:
Clarabel on the realised prices, the same run with the future changed, single-day runs, and numpy."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from jaxvpp.cli import main
from jaxvpp.market.forecasting import ForecastConfig
from jaxvpp.market.ingress import PRICE, TIMESTAMP, local_day, price_file_text, synthetic_prices
from jaxvpp.problem import Market, Settings, fleet_take, random_fleet
from jaxvpp.reference import solve_battery_reference
from jaxvpp.studies.backtesting import DAY_COLUMNS, BacktestConfig, backtest, backtest_files

TZ = "Europe/Berlin"
FAST = ForecastConfig(boosting_iterations=15, refit_every_days=7, max_leaf_nodes=8)
CFG = BacktestConfig(samples=120, scenarios=5, copula_days=7, forecast=FAST)
N = 3


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return synthetic_prices(80, 60, seed=4, start="2024-03-01")


@pytest.fixture(scope="module")
def fleet():
    return random_fleet(N, seed=2)


@pytest.fixture(scope="module")
def days(prices) -> list[pd.Timestamp]:
    d = local_day(prices[TIMESTAMP], TZ).unique()
    return list(pd.DatetimeIndex(d)[-4:-1])  # three days; the file goes on one day after them


@pytest.fixture(scope="module")
def result(prices, fleet, days):
    return backtest(prices, fleet, first_day=days[0], last_day=days[-1], config=CFG, log=None)


def _day_prices(prices: pd.DataFrame, day: pd.Timestamp) -> np.ndarray:
    return prices.loc[np.asarray(local_day(prices[TIMESTAMP], TZ) == day), PRICE].to_numpy()


def test_outputs_have_every_day_and_strategy(result, days):
    names = ["perfect_foresight", "deterministic", "risk_neutral", "risk_aware"]
    assert list(result.days.columns) == list(DAY_COLUMNS)
    assert list(result.days["strategy"].unique()) == names
    assert result.days.groupby("strategy").size().tolist() == [len(days)] * 4
    assert len(result.batteries) == len(days) * N * 4
    assert result.days["converged"].all()
    # the fleet rows are the sums of the battery rows
    summed = result.batteries.groupby(["strategy", "day"], sort=False)["realised_profit_eur"].sum()
    fleet_rows = result.days.set_index(["strategy", "day"])["realised_profit_eur"]
    np.testing.assert_allclose(fleet_rows.loc[summed.index].to_numpy(), summed.to_numpy(), rtol=1e-12)


def test_perfect_foresight_equals_clarabel_on_realised_prices(result, prices, fleet, days):
    """Perfect foresight = the risk-neutral problem on the realised prices, solved independently by Clarabel."""
    settings = Settings(dt_hours=1.0, alpha=CFG.alpha, baseline=CFG.baseline)
    pf = result.batteries[result.batteries["strategy"] == "perfect_foresight"]
    for day in days[:2]:
        realised = _day_prices(prices, day)
        market = Market(prices=realised[None, :], probabilities=np.ones(1))
        rows = pf[pf["day"] == f"{day:%Y-%m-%d}"]
        for i in range(N):
            b = fleet_take(fleet, i)._replace(risk_weight=0.0)
            ref = solve_battery_reference(b, market, settings)
            got = float(rows["realised_profit_eur"].iloc[i])
            assert math.isclose(got, -ref["model_objective_eur"], rel_tol=1e-6, abs_tol=1e-6)
            np.testing.assert_allclose(result.net_mw["perfect_foresight"][f"{day:%Y-%m-%d}"][i], ref["net"], atol=1e-4)


def test_regret_is_never_negative(result):
    """No schedule earns more on the realised prices than the optimum on those prices."""
    assert (result.batteries["regret_eur"] >= -1e-6).all()
    pf = result.days[result.days["strategy"] == "perfect_foresight"]
    assert np.allclose(pf["regret_eur"], 0.0)


def test_economics_from_the_schedules(result, prices, fleet, days):
    """Realised revenue = dt sum_t price_t p_t of the reported schedule (numpy), per battery and day."""
    for name in ("deterministic", "risk_aware"):
        b = result.batteries[result.batteries["strategy"] == name]
        for day in days:
            label = f"{day:%Y-%m-%d}"
            rev = result.net_mw[name][label] @ _day_prices(prices, day)
            np.testing.assert_allclose(b.loc[b["day"] == label, "realised_revenue_eur"], rev, rtol=1e-10)
            assert (b.loc[b["day"] == label, "cost_eur"] >= 0).all()


def test_summary_statistics_from_the_day_rows(result, days):
    """The summary's tail and exceedance figures recomputed from days.csv with numpy (few days: the 5 % tail
    is the single worst day)."""
    for name, s in result.summary["by_strategy"].items():
        g = result.days[result.days["strategy"] == name]
        p = g["realised_profit_eur"].to_numpy()
        assert math.isclose(s["mean_daily_profit_eur"], p.mean(), rel_tol=1e-12)
        assert math.isclose(s["profit_tail_mean_eur"], p.min(), rel_tol=1e-12)
        assert math.isclose(s["realised_cvar_eur"], g["realised_loss_eur"].max(), rel_tol=1e-12)
        assert s["worst_day"] == g["day"].iloc[int(np.argmin(p))]
        beyond = np.mean(g["realised_loss_eur"].to_numpy() > g["predicted_cvar_eur"].to_numpy())
        assert s["fleet_loss_beyond_predicted_cvar_share"] == beyond
        assert s["days"] == len(days)


def test_no_look_ahead(prices, fleet, days, result):
    """Changing every price from the last day on (and dropping the days after it) leaves that day's forecast,
    scenarios and schedules bit-for-bit unchanged; only its realised figures move."""
    last = days[-1]
    changed = prices[np.asarray(local_day(prices[TIMESTAMP], TZ) <= last)].copy()
    later = np.asarray(local_day(changed[TIMESTAMP], TZ) >= last)
    rng = np.random.default_rng(0)
    changed.loc[later, PRICE] = changed.loc[later, PRICE] * 1.7 + rng.normal(0, 30, later.sum())
    again = backtest(changed, fleet, first_day=days[0], last_day=last, config=CFG, log=None)
    label = f"{last:%Y-%m-%d}"
    qcols = [c for c in result.forecasts.columns if c.startswith("q")]
    f0 = result.forecasts[local_day(result.forecasts[TIMESTAMP], TZ) == last]
    f1 = again.forecasts[local_day(again.forecasts[TIMESTAMP], TZ) == last]
    assert np.array_equal(f0[qcols].to_numpy(), f1[qcols].to_numpy())
    for name in result.net_mw:
        if name != "perfect_foresight":
            assert np.array_equal(result.net_mw[name][label], again.net_mw[name][label])
    keep = ["predicted_expected_profit_eur", "predicted_cvar_eur", "cycles"]
    b0, b1 = result.batteries, again.batteries
    m0 = (b0["day"] == label) & (b0["strategy"] != "perfect_foresight")
    m1 = (b1["day"] == label) & (b1["strategy"] != "perfect_foresight")
    assert np.array_equal(b0.loc[m0, keep].to_numpy(), b1.loc[m1, keep].to_numpy())
    assert not np.allclose(b0.loc[m0, "realised_revenue_eur"], b1.loc[m1, "realised_revenue_eur"])
    # the earlier days are untouched in every figure
    e0, e1 = result.days[result.days["day"] < label], again.days[again.days["day"] < label]
    pd.testing.assert_frame_equal(e0.reset_index(drop=True), e1.reset_index(drop=True))


def test_batched_days_equal_single_day_runs(result, prices, fleet, days):
    """The days of one batched solve give what each day gives solved alone (the same issued forecasts)."""
    same = backtest(
        prices, fleet, first_day=days[0], last_day=days[-1], config=CFG, forecasts=result.forecasts, log=None
    )
    pd.testing.assert_frame_equal(same.days, result.days)
    cols = list(DAY_COLUMNS[2:-1])
    for day in days:
        alone = backtest(prices, fleet, first_day=day, last_day=day, config=CFG, forecasts=result.forecasts, log=None)
        label = f"{day:%Y-%m-%d}"
        a = alone.batteries[cols].to_numpy()
        b = result.batteries.loc[result.batteries["day"] == label, cols].to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-6)


def test_coordinated_meets_the_daily_target(prices, fleet, days):
    """The coordinated strategy's fleet schedule meets theta x the deterministic fleet schedule every day."""
    cfg = BacktestConfig(
        strategies=("deterministic", "coordinated"), samples=120, scenarios=5, copula_days=7, forecast=FAST
    )
    res = backtest(prices, fleet, first_day=days[0], last_day=days[1], config=cfg, log=None)
    assert res.summary["strategies"] == ["perfect_foresight", "deterministic", "coordinated"]
    for label, net in res.net_mw["coordinated"].items():
        target = cfg.theta * res.net_mw["deterministic"][label].sum(axis=0)
        np.testing.assert_allclose(net.sum(axis=0), target, atol=1e-5)


def test_cli_writes_the_folder_and_refuses_bad_input(prices, days, tmp_path, capsys):
    pf = tmp_path / "prices.csv"
    pf.write_text(price_file_text(prices))
    out = tmp_path / "bt"
    common = ["--samples", "120", "--k", "5", "--batteries", "2", "--no-plots", "--quiet"]
    rc = main(
        [
            "backtest",
            "--prices",
            str(pf),
            "--from",
            f"{days[0]:%Y-%m-%d}",
            "--to",
            f"{days[1]:%Y-%m-%d}",
            "--out",
            str(out),
        ]
        + common
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["batteries.csv", "days.csv", "forecasts.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["days"] == 2 and summary["batteries"] == 2
    capsys.readouterr()
    # bad input: exit 2, the option named, nothing written
    for args, named in (
        (["--strategies", "risk_aware,psychic"], "--strategies"),
        (["--from", "1999-01-01"], "--from"),
        (["--risk-weights", "0.5,x"], "--risk-weights"),
    ):
        bad = tmp_path / f"bad{len(named)}"
        rc = main(["backtest", "--prices", str(pf), "--out", str(bad)] + args + common)
        assert rc == 2 and not bad.exists()
        assert named in capsys.readouterr().err


def test_cli_gap_beyond_fill_gaps_is_an_error(prices, tmp_path, capsys):
    lines = price_file_text(prices).splitlines()
    header = lines[0].split(",")
    col = header.index(PRICE)
    for i in range(300, 306):  # six missing hours (data rows 300..305)
        cells = lines[i + 1].split(",")
        cells[col] = ""
        lines[i + 1] = ",".join(cells)
    pf = tmp_path / "gappy.csv"
    pf.write_text("\n".join(lines) + "\n")
    out = tmp_path / "bt"
    rc = main(["backtest", "--prices", str(pf), "--fill-gaps", "3", "--out", str(out), "--quiet", "--no-plots"])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "--fill-gaps" in err and str(pf) in err


def test_figures_render(result):
    """The three figures render from the result (PNG bytes), with every strategy in the tail panel."""
    files = backtest_files(result, plots=True, dpi=30)
    for name in ("cumulative_profit.png", "daily_profit.png", "cvar.png"):
        assert files[name][:8] == b"\x89PNG\r\n\x1a\n"
