"""Does the risk-aware schedule pay off out of sample? A year of delivery days, 100 batteries.

Run from the repository root:

    .venv/bin/python experiments/backtest_year.py            # both markets, 365 days each (about 15 minutes)
    .venv/bin/python experiments/backtest_year.py --quick    # 5 days, 10 batteries (a smoke test)

Two markets, the same fleet (``random_fleet(100, seed=0)``, the fleet of ``jaxvpp run``):

* **synthetic**: the built-in synthetic market (hourly, seed 0), the year 2025 after a 119-day warm-up (forecaster training and the copula window), with
  the strategies perfect foresight, deterministic, risk-neutral, risk-aware (each battery's own weight, and
  common weights 2 and 5) and coordinated (theta = 0.6);
* **entsoe-layout**: a real-looking price file. No real data can be downloaded on this machine, so it is the
  synthetic generator at 15-minute resolution with another seed (7), written in the ENTSO-E Transparency
  Platform's CSV export layout (local delivery periods, CET/CEST marks, ``n/e`` for 40 missing prices in
  runs of up to 4 quarter-hours), imported with ``read_entsoe_csv`` and filled with ``fill_gaps`` (4 steps),
  as ``jaxvpp market --import-csv`` and ``--fill-gaps 4`` do.

Writes ``experiments/results/backtest_year.md`` and ``.json``: time per phase, and per strategy the mean daily
realised profit, its 5 % tail mean, the worst day, regret, cycles and how often the realised loss exceeded the
predicted CVaR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import EXPERIMENT_RESULTS, markdown_table, write_results  # noqa: E402

from jaxvpp.market.ingress import PRICE, TIMESTAMP, fill_gaps, read_entsoe_csv, synthetic_prices  # noqa: E402
from jaxvpp.problem import random_fleet  # noqa: E402
from jaxvpp.studies.backtesting import BacktestConfig, backtest, write_backtest  # noqa: E402

TZ = "Europe/Berlin"


def entsoe_export(prices: pd.DataFrame, missing: int, seed: int) -> str:
    """``prices`` as an ENTSO-E day-ahead export (local MTU with CET/CEST marks), ``missing`` prices as ``n/e``
    in runs of 1 to 4 steps."""
    rng = np.random.default_rng(seed)
    ts = pd.DatetimeIndex(prices[TIMESTAMP])
    step = ts[1] - ts[0]
    loc, end = ts.tz_convert(TZ), (ts + step).tz_convert(TZ)

    def fmt(t: pd.DatetimeIndex) -> list[str]:
        return [f"{x:%d.%m.%Y %H:%M} ({'CEST' if x.dst() else 'CET'})" for x in t]

    cells = [f"{p:.2f}" for p in prices[PRICE]]
    done = 0
    while done < missing:
        run = int(min(rng.integers(1, 5), missing - done))
        i = int(rng.integers(200, len(cells) - 200))
        for j in range(i, i + run):
            cells[j] = "n/e"
        done += run
    lines = ['"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]","Currency","BZN|DE-LU"']
    lines += [f'"{a} - {b}","{c}","EUR",""' for a, b, c in zip(fmt(loc), fmt(end), cells)]
    return "\n".join(lines) + "\n"


def run_case(
    name: str,
    prices: pd.DataFrame,
    cfg: BacktestConfig,
    days: int,
    n: int,
    out: Path | None,
    forecasts: pd.DataFrame | None = None,
) -> dict:
    fleet = random_fleet(n, seed=0)
    last = pd.DatetimeIndex(pd.to_datetime(prices[TIMESTAMP])).tz_convert(TZ).tz_localize(None).normalize().max()
    first = last - pd.Timedelta(days=days - 1)
    t0 = time.perf_counter()
    res = backtest(
        prices,
        fleet,
        first_day=first,
        last_day=last,
        config=cfg,
        forecasts=forecasts,
        log=lambda s: print(f"[{name}] {s}", flush=True),
    )
    wall = time.perf_counter() - t0
    if out is not None:
        write_backtest(res, out / name, plots=True, option=None)
    return {"name": name, "wall_s": wall, "summary": res.summary, "forecasts": res.forecasts}


def strategy_rows(case: dict) -> list[dict]:
    rows = []
    by = case["summary"]["by_strategy"]
    ref = by.get("risk_neutral") or by.get("deterministic")
    for k, s in by.items():
        rows.append(
            {
                "strategy": k,
                "mean profit (EUR/day)": s["mean_daily_profit_eur"],
                "5 % tail mean profit (EUR/day)": s["profit_tail_mean_eur"],
                "worst day (EUR)": s["worst_day_profit_eur"],
                "mean regret (EUR/day)": s["mean_daily_regret_eur"],
                "mean predicted CVaR (EUR)": s["mean_predicted_cvar_eur"],
                "realised CVaR (EUR)": s["realised_cvar_eur"],
                "days beyond predicted CVaR": s["fleet_loss_beyond_predicted_cvar_share"],
                "cycles/day": s["cycles_per_day"],
                "tail vs risk-neutral (EUR/day)": s["profit_tail_mean_eur"] - ref["profit_tail_mean_eur"],
                "mean vs risk-neutral (EUR/day)": s["mean_daily_profit_eur"] - ref["mean_daily_profit_eur"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 days, 10 batteries, 200 samples (a smoke test)")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--batteries", type=int, default=100)
    ap.add_argument("--cases", default="synthetic,entsoe-layout")
    ap.add_argument("--out", type=Path, default=EXPERIMENT_RESULTS, help="results folder (md and json)")
    ap.add_argument("--folders", type=Path, default=None, help="also write each backtest's output folder here")
    args = ap.parse_args(argv)
    days, n = (5, 10) if args.quick else (args.days, args.batteries)
    extra = {"samples": 200, "scenarios": 8} if args.quick else {}
    warm = 28 + 91
    cases = []
    chosen = args.cases.split(",")
    if "synthetic" in chosen:
        start = pd.Timestamp("2025-01-01") - pd.Timedelta(days=warm)
        prices = synthetic_prices(days + warm, 60, 0, start=f"{start:%Y-%m-%d}", tz=TZ)
        cfg = BacktestConfig(
            strategies=("perfect_foresight", "deterministic", "risk_neutral", "risk_aware", "coordinated"),
            **extra,
        )
        cases.append(run_case("synthetic", prices, cfg, days, n, args.folders))
        cfg_w = BacktestConfig(strategies=("risk_neutral", "risk_aware"), risk_weights=(2.0, 5.0), **extra)
        # the same issued forecasts (and so the same scenarios) as the case above
        cases.append(run_case("synthetic-common-weights", prices, cfg_w, days, n, args.folders, cases[-1]["forecasts"]))
    if "entsoe-layout" in chosen:
        raw = synthetic_prices(days + warm, 15, 7, start="2025-06-01", tz=TZ)
        tmp = ROOT / "experiments" / "out"
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "entsoe_layout_prices.csv"
        path.write_text(entsoe_export(raw, 40, seed=7))
        imported = read_entsoe_csv(path, tz=TZ)
        filled, gaps = fill_gaps(imported, 4, file=str(path))
        print(f"[entsoe-layout] {len(gaps)} gaps filled ({sum(g.steps for g in gaps)} steps)")
        cases.append(run_case("entsoe-layout", filled, BacktestConfig(**extra), days, n, args.folders))
        cases[-1]["filled_gaps"] = len(gaps)
    sections = []
    for c in cases:
        s = c["summary"]
        head = (
            f"{s['days']} days {s['first_day']} .. {s['last_day']}, {s['batteries']} batteries, "
            f"{s['resolution_minutes']}-minute steps, K = {s['scenarios']} scenarios from {s['samples']} samples; "
            f"forecast pinball {s['forecast']['pinball_loss']:.2f} EUR/MWh vs {s['forecast']['baseline_pinball_loss']:.2f} "
            f"seasonal-naive (lag {s['forecast']['baseline_lag_days']} d), 90 % coverage {s['forecast']['coverage_90']:.3f}. "
            "Time per phase (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s["phase_wall_time_s"].items()) + "."
        )
        sections.append((c["name"], head + "\n\n" + markdown_table(strategy_rows(c))))
    write_results(
        "backtest_year",
        title="Out-of-sample backtest: does the risk-aware schedule pay off?",
        notes=(
            "Fleet sums per day (EUR). Profit = realised revenue on the day's actual prices - degradation and "
            "quadratic cost. Tail mean: the mean of the worst 5 % of days. Realised CVaR: the same tail of the "
            "realised loss (-revenue), comparable with the predicted CVaR (the solver's, summed over "
            "batteries). Regret: perfect foresight's realised profit minus the strategy's. Both markets are "
            "synthetic (no real data can be downloaded here); the second is written and read in the ENTSO-E "
            "export layout with gaps."
        ),
        sections=sections,
        data=[{k: v for k, v in c.items() if k != "forecasts"} for c in cases],
        out_dir=args.out,
    )
    for _, body in sections:
        print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
