"""Speed and accuracy of the rolling forecaster: a year of daily forecasts, and short histories.

Run from the repository root:

    .venv/bin/python experiments/forecast_speed.py            # everything (about 25 minutes on 2 cores)
    .venv/bin/python experiments/forecast_speed.py --quick    # a smoke test (under a minute)

Writes ``experiments/results/forecast_speed.md`` and ``.json``.

(a) ``rolling_forecasts`` over 365 consecutive days on a synthetic series of ``WARMUP_HISTORY`` + 365 days
(hourly and 15-minute): the wall time of the default settings and of the alternatives (fewer trees with
a higher learning rate, early stopping, a longer refit cadence, a capped training window, one fitting
process), each with its pinball loss and 90 % coverage; plus what predicting every later row at each refit
(instead of only the days a model forecasts) would add.

(b) ``run_forecast`` (28-day backtest) on histories of 60, 92, 180 and 365 days: the pinball improvement
over seasonal naive and the 90 % coverage of the rolling out-of-sample calibration (the package) against
the split calibration it replaced (models trained on data that ends ``calibration_days`` before each refit,
shifted by that model's residuals on the last ``calibration_days`` days; the plan taken from the whole
file), re-implemented here from the package's public parts. The baseline is the one ``run_forecast``
reports, and also the better of the lag-1 and lag-7 seasonal-naive forecasts on the backtest days
themselves (chosen after the fact, so a stricter bar).

All series are synthetic (``jaxvpp.market.ingress.synthetic_prices``): no real price data can be fetched
where this runs, and real markets are noisier than this generator.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import EXPERIMENT_RESULTS, markdown_table, write_results  # noqa: E402

from jaxvpp.market.forecasting import (  # noqa: E402
    ForecastConfig,
    build_features,
    conformal_shifts,
    fit_quantile_models,
    level_columns,
    pinball,
    predict_quantiles,
    prepare_series,
    rearrange,
    rolling_forecasts,
    run_forecast,
    score,
    seasonal_naive,
)
from jaxvpp.market.ingress import PRICE, synthetic_prices  # noqa: E402

#: Days of history before the first of the 365 forecast days in part (a).
WARMUP_HISTORY = 90
DEFAULT = ForecastConfig()
#: Training rows per refit in the 15-minute subsampling comparison.
SUBSAMPLE_ROWS = 15000
#: (name, settings) of part (a); the first is the package default.
VARIANTS = [
    ("default", {}),
    ("1 fitting process", {"fit_jobs": 1}),
    ("100 trees, learning rate 0.1", {"boosting_iterations": 100, "learning_rate": 0.1}),
    ("early stopping (at most 100 trees)", {"boosting_iterations": 100, "early_stopping": True}),
    ("refit every 14 days", {"refit_every_days": 14}),
    ("training window 180 days", {"train_days": 180}),
]


def _seconds(f, *args, **kw):
    t0 = time.perf_counter()
    out = f(*args, **kw)
    return out, time.perf_counter() - t0


def year_run(resolution: int, seed: int, settings: dict, days: int, warmup: int) -> dict:
    """One rolling run over ``days`` days after ``warmup`` days of history."""
    df = synthetic_prices(warmup + days, resolution, seed=seed, start="2023-10-01")
    series = prepare_series(df)
    cfg = ForecastConfig(**settings)
    fc, t = _seconds(rolling_forecasts, series, list(series.history_days[-days:]), cfg)
    cols = level_columns(cfg.levels)
    m = score(fc["realised"].to_numpy(), fc[cols].to_numpy(), cfg.levels)
    return {"time_s": t, "pinball_loss": m["pinball_loss"], "coverage_90": m["coverage_90"], "width_90": m["width_90"]}


def subsample_case(seed: int, days: int, history: int, rows: int) -> list[dict]:
    """15-minute rolling forecasts on all training rows against a random subset of ``rows`` rows per refit."""
    df = synthetic_prices(history + days, 15, seed=seed, start="2023-10-01")
    series = prepare_series(df)
    out = []
    for cap in (None, rows):
        cfg = ForecastConfig(max_train_rows=cap)  # the default caps at SUBSAMPLE_ROWS
        fc, t = _seconds(rolling_forecasts, series, list(series.history_days[-days:]), cfg)
        m = score(fc["realised"].to_numpy(), fc[level_columns(cfg.levels)].to_numpy(), cfg.levels)
        out.append(
            {"max_train_rows": cap, "time_s": t, "pinball_loss": m["pinball_loss"], "coverage_90": m["coverage_90"]}
        )
    return out


def predict_overhead(resolution: int, seed: int, days: int, warmup: int) -> dict:
    """Time to predict one block (the days a model forecasts) and every later row of the run, for one refit."""
    df = synthetic_prices(warmup + days, resolution, seed=seed, start="2023-10-01")
    series = prepare_series(df)
    X = build_features(series, series.frame, weekly=True).to_numpy()
    y = series.frame[PRICE].to_numpy()
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    steps = len(series.frame) // (warmup + days + 1)
    n_fit = warmup * steps
    models = fit_quantile_models(X[:n_fit][ok[:n_fit]], y[:n_fit][ok[:n_fit]], DEFAULT)
    _, t_block = _seconds(predict_quantiles, models, X[n_fit : n_fit + DEFAULT.refit_every_days * steps])
    _, t_all = _seconds(predict_quantiles, models, X[n_fit:])
    refits = math.ceil(days / DEFAULT.refit_every_days)
    # predicting every later row at refit j costs about (1 - j / refits) of t_all
    return {
        "block_s": t_block,
        "all_later_rows_s": t_all,
        "refits": refits,
        "extra_over_run_s": sum(t_all * (1 - j / refits) - t_block for j in range(refits)),
    }


def split_calibration(df: pd.DataFrame, cfg: ForecastConfig, test_days: pd.DatetimeIndex) -> np.ndarray:
    """The replaced scheme on ``test_days``: refit every ``refit_every_days`` on data ending ``cal`` days before
    the refit, shift by that model's residuals over the last ``cal`` days; lags and ``cal`` from the whole file."""
    series = prepare_series(df)
    n = len(series.history_days)
    weekly = n >= 35
    cal = min(cfg.calibration_days, max(1, (n - (7 if weekly else 2)) // 4))
    fr = series.frame
    X = build_features(series, fr, weekly=weekly).to_numpy()
    y = fr[PRICE].to_numpy(dtype=float)
    day = pd.DatetimeIndex(fr["day"])
    ok = np.isfinite(X).all(axis=1)
    raw = np.full((len(fr), len(cfg.levels)), np.nan)
    out = []
    for i, d in enumerate(test_days):
        if i % cfg.refit_every_days == 0:
            end = d - pd.Timedelta(days=cal)
            m = ok & (day < end) & np.isfinite(y)
            models = fit_quantile_models(X[m], y[m], cfg)
            later = ok & (day >= end)
            raw[:] = np.nan
            raw[later] = predict_quantiles(models, X[later])
        w = (day >= d - pd.Timedelta(days=cal)) & (day < d) & ~np.isnan(raw[:, 0]) & np.isfinite(y)
        shift = conformal_shifts(raw[w], y[w], cfg.levels)
        out.append(rearrange(raw[day == d] + shift))
    return np.vstack(out)


def history_case(resolution: int, seed: int, days: int) -> dict:
    """Part (b) on one series: the package against the split calibration, and the baselines."""
    df = synthetic_prices(days, resolution, seed=seed, start="2024-03-01")
    r, t_new = _seconds(run_forecast, df, DEFAULT)
    m = r.metrics
    series = prepare_series(df)
    test_days = series.history_days[-m["backtest_days"] :]
    y = r.backtest["realised"].to_numpy()
    old, t_old = _seconds(split_calibration, df, DEFAULT, test_days)
    old_s = score(y, old, DEFAULT.levels)
    naive = {}
    for lag in (1, 7):
        fc = seasonal_naive(series, list(test_days), lag, DEFAULT.baseline_window_days, DEFAULT.levels)
        q = np.vstack([fc[d] for d in test_days])
        naive[lag] = float(pinball(y, q, DEFAULT.levels).mean()) if np.isfinite(q).all() else math.inf
    best = min(naive.values())
    return {
        "resolution": resolution,
        "seed": seed,
        "history_days": days,
        "backtest_days": m["backtest_days"],
        "baseline_pinball": m["baseline_pinball_loss"],
        "best_naive_pinball": best,
        "new_pinball": m["pinball_loss"],
        "new_improvement": m["pinball_improvement"],
        "new_improvement_vs_best": 1 - m["pinball_loss"] / best,
        "new_coverage_90": m["coverage_90"],
        "new_time_s": t_new,
        "old_pinball": old_s["pinball_loss"],
        "old_improvement": 1 - old_s["pinball_loss"] / m["baseline_pinball_loss"],
        "old_improvement_vs_best": 1 - old_s["pinball_loss"] / best,
        "old_coverage_90": old_s["coverage_90"],
        "old_time_s": t_old,
        "weekly_lags": m["weekly_lags"],
        "warmup_days": m["calibration_warmup_days"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke test: short runs, one seed (under a minute)")
    ap.add_argument("--out", type=Path, default=EXPERIMENT_RESULTS, help="results folder")
    args = ap.parse_args(argv)
    if args.quick:
        days, warmup, variants, seeds = 14, 40, VARIANTS[:2], (0,)
        year_15 = [(0, {})]
        histories, hist_seeds = ((60, 60),), (11,)
    else:
        days, warmup, variants, seeds = 365, WARMUP_HISTORY, VARIANTS, (0, 1)
        year_15 = [(0, {})]
        histories = tuple((res, n) for res in (60, 15) for n in (60, 92, 180, 365))
        hist_seeds = (11,)

    speed = []
    for name, settings in variants:
        for seed in seeds if name == "default" else seeds[:1]:
            row = {"resolution": 60, "variant": name, "seed": seed, **year_run(60, seed, settings, days, warmup)}
            speed.append(row)
            print(f"hourly, {name}, seed {seed}: {row['time_s']:.0f} s, pinball {row['pinball_loss']:.3f}", flush=True)
    for seed, settings in year_15:
        row = {"resolution": 15, "variant": "default", "seed": seed, **year_run(15, seed, settings, days, warmup)}
        speed.append(row)
        print(f"15-minute, default, seed {seed}: {row['time_s']:.0f} s, pinball {row['pinball_loss']:.3f}", flush=True)
    overhead = {res: predict_overhead(res, 0, days, warmup) for res in (60, 15)}
    sub_days, sub_history = (7, 60) if args.quick else (28, 300)
    sub = subsample_case(0, sub_days, sub_history, SUBSAMPLE_ROWS)
    print(f"subsample: {sub}", flush=True)

    hist = []
    for res, n in histories:
        for seed in hist_seeds if res == 60 else hist_seeds[:1]:
            row = history_case(res, seed, n)
            hist.append(row)
            print(
                f"{res} min, {n} days, seed {seed}: new {100 * row['new_improvement']:.1f} % "
                f"(coverage {row['new_coverage_90']:.3f}), old {100 * row['old_improvement']:.1f} % "
                f"(coverage {row['old_coverage_90']:.3f})",
                flush=True,
            )

    def pct(x: float) -> str:
        return f"{100 * x:.1f} %"

    speed_rows = [
        {
            "step": f"{r['resolution']} min",
            "variant": r["variant"],
            "seed": r["seed"],
            "time": f"{r['time_s']:.0f}",
            "pinball": r["pinball_loss"],
            "vs default": pct(r["pinball_loss"] / _default_pinball(speed, r) - 1),
            "coverage": f"{r['coverage_90']:.3f}",
            "width": f"{r['width_90']:.1f}",
        }
        for r in speed
    ]
    speed_md = markdown_table(
        speed_rows,
        [
            ("step", "step"),
            ("variant", "settings"),
            ("seed", "seed"),
            ("time", "time (s)"),
            ("pinball", "pinball (EUR/MWh)"),
            ("vs default", "pinball vs default (same seed)"),
            ("coverage", "90 % coverage"),
            ("width", "90 % width (EUR/MWh)"),
        ],
    )
    over_md = markdown_table(
        [
            {
                "step": f"{res} min",
                "block": f"{o['block_s']:.2f}",
                "all": f"{o['all_later_rows_s']:.2f}",
                "extra": f"{o['extra_over_run_s']:.0f}",
            }
            for res, o in overhead.items()
        ],
        [
            ("step", "step"),
            ("block", "predict one refit's days (s)"),
            ("all", "predict every row after the first refit (s)"),
            ("extra", f"extra over {days} days if every later row were predicted at each refit (s)"),
        ],
    )
    sub_md = markdown_table(
        [
            {
                "rows": "all" if x["max_train_rows"] is None else str(x["max_train_rows"]),
                "time": f"{x['time_s']:.0f}",
                "pinball": x["pinball_loss"],
                "vs": pct(x["pinball_loss"] / sub[0]["pinball_loss"] - 1),
                "coverage": f"{x['coverage_90']:.3f}",
            }
            for x in sub
        ],
        [
            ("rows", "training rows per refit"),
            ("time", "time (s)"),
            ("pinball", "pinball (EUR/MWh)"),
            ("vs", "pinball vs all rows"),
            ("coverage", "90 % coverage"),
        ],
    )
    hist_rows = [
        {
            "series": f"{r['resolution']} min, {r['history_days']} d, seed {r['seed']}",
            "new": pct(r["new_improvement"]),
            "new best": pct(r["new_improvement_vs_best"]),
            "new cov": f"{r['new_coverage_90']:.3f}",
            "old": pct(r["old_improvement"]),
            "old best": pct(r["old_improvement_vs_best"]),
            "old cov": f"{r['old_coverage_90']:.3f}",
            "weekly": "yes" if r["weekly_lags"] else "no",
            "warmup": r["warmup_days"],
            "time": f"{r['new_time_s']:.0f} / {r['old_time_s']:.0f}",
        }
        for r in hist
    ]
    hist_md = markdown_table(
        hist_rows,
        [
            ("series", "series"),
            ("new", "rolling: improvement"),
            ("new best", "rolling: vs best naive"),
            ("new cov", "rolling: 90 % coverage"),
            ("old", "split: improvement"),
            ("old best", "split: vs best naive"),
            ("old cov", "split: 90 % coverage"),
            ("weekly", "weekly lags (rolling)"),
            ("warmup", "warm-up days"),
            ("time", "time rolling / split (s)"),
        ],
    )
    notes = (
        "Synthetic series only (`synthetic_prices`; no real data can be downloaded where this runs). "
        f"Part (a): {days} consecutive forecast days after {warmup} days of history, on this machine's 2 cores. "
        f"Default: {DEFAULT.boosting_iterations} trees per level at learning rate {DEFAULT.learning_rate}, refit every "
        f"{DEFAULT.refit_every_days} days on all history, {DEFAULT.fit_jobs} fitting processes, "
        f"{DEFAULT.calibration_days}-day rolling calibration."
    )
    write_results(
        "forecast_speed",
        title="Rolling forecaster: a year of daily forecasts, and short histories (synthetic series)",
        notes=notes,
        sections=[
            (f"(a) {days} days of rolling forecasts: time, pinball loss and 90 % coverage", speed_md),
            ("(a) Predicting only the days a model forecasts", over_md),
            (
                f"(a) 15-minute rows subsampled: {sub_days} forecast days after {sub_history} days of history (seed 0)",
                sub_md,
            ),
            (
                "(b) run_forecast (28-day backtest): improvement over seasonal naive, rolling out-of-sample "
                "calibration (the package) against split calibration",
                "Improvement = 1 - pinball / baseline pinball; 'vs best naive' uses the better of the lag-1 and "
                "lag-7 seasonal-naive forecasts on the backtest days (chosen after the fact).\n\n" + hist_md,
            ),
        ],
        data={"speed": speed, "predict_overhead": overhead, "subsample": sub, "histories": hist, "quick": args.quick},
        out_dir=args.out,
    )
    print(speed_md)
    print(over_md)
    print(hist_md)
    return 0


def _default_pinball(rows: list[dict], r: dict) -> float:
    for x in rows:
        if x["resolution"] == r["resolution"] and x["variant"] == "default" and x["seed"] == r["seed"]:
            return x["pinball_loss"]
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
