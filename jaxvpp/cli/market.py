"""Market-data subcommands: ``synthetic``, ``fetch``, ``forecast`` and ``scenarios``.

Each checks its output path before any work, returns 0 on success and 2 on bad input or an output path
that cannot be written (``error: <message>`` on stderr, nothing written), and writes whole or not at all
(:mod:`jaxvpp.files`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxvpp.cli.common import EXIT_OK, add_fill_gaps_argument, gap_steps, input_error
from jaxvpp.errors import InputError
from jaxvpp.files import check_file, check_folder
from jaxvpp.market.forecasting import FORECAST_FILES, ForecastConfig, run_forecast, write_forecast
from jaxvpp.market.ingress import (
    Gap,
    fetch_entsoe,
    fill_gaps,
    find_gaps,
    format_timestamps,
    gap_counts,
    gap_lines,
    read_entsoe_csvs,
    read_price_file,
    synthetic_prices,
    write_price_file,
)
from jaxvpp.market.scenarios import SCENARIO_FILES, build_scenarios, load_forecast, write_scenarios


def register(sub: argparse._SubParsersAction) -> None:
    """Add the market-data subcommands to the ``jaxvpp`` parser."""
    _add_synthetic(sub)
    _add_fetch(sub)
    _add_forecast(sub)
    _add_scenarios(sub)


def _fail(exc: Exception) -> int:
    return input_error(exc)


def _report_gaps(gaps: list[Gap], file: object) -> None:
    for line in gap_lines(gaps, file=None if file is None else str(file)):
        print(f"note: {line}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# synthetic
# ----------------------------------------------------------------------------------------------------


def _add_synthetic(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synthetic",
        help="write a synthetic day-ahead price file (seeded, with a renewable-share column)",
        description=(
            "Write a seeded synthetic day-ahead price series: daily and weekly shapes, seasonal and fuel-price "
            "level drift, a renewable-share driver (written as the exogenous column renewable_share, a day-ahead "
            "forecast), heavy-tailed noise, spikes and negative prices. Whole delivery days in CET/CEST (23 and "
            "25 hours on daylight-saving days). Output: timestamp (UTC, ISO 8601), price_eur_per_mwh, "
            "renewable_share."
        ),
    )
    p.add_argument("--days", type=int, default=365, help="number of delivery days (default 365)")
    p.add_argument(
        "--resolution",
        type=int,
        choices=(15, 30, 60),
        default=60,
        help="step length in minutes (default 60; 15 for quarter-hour products)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--start", default="2024-01-01", help="first delivery day, local date YYYY-MM-DD (default 2024-01-01)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("data/raw/prices.csv"),
        help="price file to write (default data/raw/prices.csv)",
    )
    p.set_defaults(func=cmd_synthetic)


def cmd_synthetic(args: argparse.Namespace) -> int:
    """``jaxvpp synthetic``: write a synthetic price file."""

    try:
        check_file(args.out, option="--out")
        df = synthetic_prices(args.days, args.resolution, args.seed, start=args.start)
        write_price_file(df, args.out, option="--out")
    except (InputError, ValueError) as exc:
        return input_error(exc)
    print(
        f"wrote {args.out}: {len(df)} steps ({args.days} days at {args.resolution} min), seed {args.seed}, "
        f"prices {df['price_eur_per_mwh'].min():.1f} to {df['price_eur_per_mwh'].max():.1f} EUR/MWh"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# fetch
# ----------------------------------------------------------------------------------------------------


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch",
        help="get day-ahead prices from ENTSO-E (API via entsoe-py, or exported CSV files)",
        description=(
            "Get day-ahead prices of a bidding zone into a price file (timestamp in UTC, price_eur_per_mwh). "
            "From the ENTSO-E API through entsoe-py (pip install 'jaxvpp[entsoe]'; API key in the environment "
            "variable ENTSOE_API_KEY; the response is cached under --cache-dir), or, with --import-csv, from "
            "the CSV files the ENTSO-E Transparency Platform exports (no key needed). Daylight-saving days and "
            "the switch from hourly to 15-minute products (1 October 2025) are handled; a file that mixes them "
            "keeps each step as delivered (jaxvpp forecast brings it to 15 minutes)."
        ),
    )
    p.add_argument("--zone", default="DE_LU", help="bidding zone as entsoe-py names it (default DE_LU)")
    p.add_argument("--start", help="first delivery day, local date YYYY-MM-DD (API only)")
    p.add_argument("--end", help="day after the last delivery day, local date YYYY-MM-DD (API only)")
    p.add_argument(
        "--import-csv",
        type=Path,
        nargs="+",
        metavar="CSV",
        help="ENTSO-E Transparency Platform export(s) to import instead of calling the API",
    )
    p.add_argument("--cache-dir", type=Path, default=Path("data/raw"), help="cache folder (default data/raw)")
    p.add_argument("--refresh", action="store_true", help="query the API even when the cache has the range")
    p.add_argument(
        "--fill-gaps",
        type=gap_steps,
        default=0,
        metavar="STEPS",
        help=(
            "fill runs of up to STEPS missing steps (prices the export leaves empty, rows missing from the time "
            "grid) by linear interpolation in time before writing; a longer run is an error (default 0: the "
            "prices are written as delivered, gaps included; with the API it needs --out, the cache keeps them)"
        ),
    )
    p.add_argument(
        "--out",
        type=Path,
        help="price file to write (default: the cache file for the API; data/raw/prices_<zone>.csv for imports)",
    )
    p.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    """``jaxvpp fetch``: ENTSO-E prices into a price file."""

    gaps: list[Gap] = []
    try:
        if args.import_csv:
            out = args.out or args.cache_dir / f"prices_{args.zone}.csv"
            option = "--out" if args.out else "--cache-dir"
            check_file(out, option=option)
            df = read_entsoe_csvs(list(args.import_csv))
            if args.fill_gaps:
                df, gaps = fill_gaps(df, args.fill_gaps)
            write_price_file(df, out, option=option)
        else:
            if not args.start or not args.end:
                raise InputError("give --start and --end (local dates), or --import-csv FILE", column="--start")
            if args.fill_gaps and args.out is None:
                raise InputError(
                    "--fill-gaps with the API needs --out (the cache keeps the prices as delivered)",
                    column="--fill-gaps",
                )
            if args.out is not None:
                check_file(args.out, option="--out")
            df, cache = fetch_entsoe(args.zone, args.start, args.end, cache_dir=args.cache_dir, refresh=args.refresh)
            out = args.out or cache
            if args.fill_gaps:
                df, gaps = fill_gaps(df, args.fill_gaps)
            if args.out is not None:
                write_price_file(df, out, option="--out")
    except InputError as exc:
        return input_error(exc)
    _report_gaps(gaps, out)
    if not args.fill_gaps:
        left = find_gaps(df, allow_future=False)
        if left:
            n = gap_counts(left)
            print(
                f"note: {out} has {n['runs']} gap{'s' * (n['runs'] > 1)} ({n['steps']} missing "
                f"step{'s' * (n['steps'] > 1)}), the first at {format_timestamps([left[0].first])[0]}; "
                "jaxvpp forecast and jaxvpp run refuse gaps unless --fill-gaps STEPS fills them",
                file=sys.stderr,
            )
    print(
        f"wrote {out}: {len(df)} steps from {df['timestamp'].iloc[0].isoformat()} "
        f"to {df['timestamp'].iloc[-1].isoformat()} (UTC)"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# forecast
# ----------------------------------------------------------------------------------------------------


def _add_forecast(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forecast",
        help="day-ahead quantile forecasts for the next delivery day, with a rolling backtest",
        description=(
            "Forecast the price quantiles (levels 0.05, 0.10, ..., 0.95) of every step of the delivery day after "
            "the last complete day in --prices, by quantile regression on calendar features, lagged prices and "
            "the file's exogenous columns (their values at the step are taken as day-ahead forecasts; trailing "
            "rows with an empty price give them for the day to forecast, else yesterday's values are used). "
            "Quantiles are calibrated (conformal shifts on the last --calibration-days out-of-sample days) and "
            "never cross. A rolling-origin backtest over the last --backtest-days days scores the model and a "
            "seasonal-naive baseline. Writes DIR/quantiles.csv, backtest.csv, baseline_backtest.csv, "
            "forecast_metrics.json and risk_bands.png."
        ),
    )
    p.add_argument(
        "--prices",
        type=Path,
        required=True,
        help="price file: timestamp, price_eur_per_mwh and optional exogenous columns",
    )
    p.add_argument(
        "--out", type=Path, default=Path("results/forecast"), help="output folder (default results/forecast)"
    )
    p.add_argument(
        "--model",
        choices=("gbm", "qra"),
        default="gbm",
        help="gbm: gradient-boosted quantile trees (default); qra: linear quantile regression",
    )
    d = ForecastConfig()  # the forecaster's defaults
    p.add_argument(
        "--backtest-days",
        type=int,
        default=d.backtest_days,
        help=f"days of the rolling-origin backtest (default {d.backtest_days})",
    )
    p.add_argument(
        "--calibration-days",
        type=int,
        default=d.calibration_days,
        help=f"out-of-sample days before each origin for the conformal calibration (default {d.calibration_days})",
    )
    p.add_argument(
        "--refit-every",
        type=int,
        default=d.refit_every_days,
        help=f"days between model refits in the backtest (default {d.refit_every_days})",
    )
    p.add_argument("--no-calibration", action="store_true", help="skip the conformal calibration (for comparison)")
    p.add_argument(
        "--max-iter",
        type=int,
        default=d.boosting_iterations,
        help=f"boosting iterations per level (gbm, default {d.boosting_iterations})",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed of the boosted trees (default {d.seed})")
    add_fill_gaps_argument(p, "--prices")
    p.set_defaults(func=cmd_forecast)


def cmd_forecast(args: argparse.Namespace) -> int:
    """``jaxvpp forecast``: backtest, forecast and write the five output files."""

    t0 = time.perf_counter()
    notes: list[str] = []
    try:
        check_folder(args.out, option="--out", names=FORECAST_FILES)
        cfg = ForecastConfig(
            model=args.model,
            backtest_days=args.backtest_days,
            calibration_days=args.calibration_days,
            refit_every_days=args.refit_every,
            calibrate=not args.no_calibration,
            boosting_iterations=args.max_iter,
            seed=args.seed,
        )
        gaps: list[Gap] = []
        df = read_price_file(args.prices, allow_future=True, notes=notes, fill_gaps=args.fill_gaps, gaps=gaps)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        _report_gaps(gaps, args.prices)
        result = run_forecast(df, cfg)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        result.metrics["filled_gaps"] = gap_counts(gaps)
        write_forecast(result, args.out, option="--out")
    except InputError as exc:
        return input_error(exc)
    m = result.metrics
    print(
        f"forecast for {m['forecast_day']} ({m['forecast_steps']} steps) in {args.out}/quantiles.csv; backtest "
        f"{m['backtest_days']} days: pinball {m['pinball_loss']:.2f} vs baseline {m['baseline_pinball_loss']:.2f} "
        f"EUR/MWh ({100 * m['pinball_improvement']:.0f} % lower), 90 % coverage {m['coverage_90']:.3f}, "
        f"CRPS {m['crps']:.2f} EUR/MWh; {time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# scenarios
# ----------------------------------------------------------------------------------------------------


def _add_scenarios(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scenarios",
        help="sample price paths from a quantile forecast and reduce them to K weighted scenarios",
        description=(
            "Sample --samples price paths for the forecast day from DIR/quantiles.csv with a Gaussian copula "
            "across steps (correlation from the ranks of the backtest residuals in --backtest; inverse CDF by "
            "monotone interpolation with exponential tails), reduce them to --k weighted paths and write "
            "scenarios.csv in the solver's format (scenario, probability, one price column per step, "
            "probabilities summing to 1). Every reduction (tail, kmeans, medoids) is measured: the CVaR of a "
            "reference schedule's loss under the full sample and under the reduced set. Also writes "
            "scenarios_<method>.csv, scenario_samples.csv, scenario_metrics.json and scenarios.png."
        ),
    )
    p.add_argument("--quantiles", type=Path, required=True, help="quantiles.csv from jaxvpp forecast")
    p.add_argument(
        "--backtest",
        type=Path,
        help="backtest.csv for the copula correlation (default: backtest.csv next to --quantiles)",
    )
    p.add_argument("--samples", type=int, default=1000, help="number of sampled paths (default 1000)")
    p.add_argument("--k", type=int, default=20, help="number of reduced scenarios (default 20)")
    p.add_argument(
        "--reduction",
        choices=("tail", "kmeans", "medoids"),
        default="tail",
        help="reduction written to scenarios.csv: tail (tail-preserving, default), kmeans or medoids",
    )
    risk = p.add_mutually_exclusive_group()
    risk.add_argument("--alpha", type=float, help="CVaR tail probability in (0, 1) (default 0.05 = the worst 5 %%)")
    risk.add_argument("--confidence", type=float, help="CVaR confidence level, 1 - alpha (e.g. 0.95)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--out",
        type=Path,
        help="output folder (default: the folder of --quantiles; its other files are kept)",
    )
    p.set_defaults(func=cmd_scenarios)


def cmd_scenarios(args: argparse.Namespace) -> int:
    """``jaxvpp scenarios``: sample, reduce and write scenarios.csv."""

    try:
        if args.confidence is not None:
            if not 0 < args.confidence < 1:
                raise InputError(f"--confidence must lie in (0, 1), got {args.confidence}", column="--confidence")
            alpha = 1.0 - args.confidence
        else:
            alpha = 0.05 if args.alpha is None else args.alpha
        if not 0 < alpha < 1:
            raise InputError(f"--alpha must lie in (0, 1), got {alpha}", column="--alpha")
        out = args.out or args.quantiles.parent
        check_folder(out, option="--out", names=SCENARIO_FILES)
        bt_path = args.backtest
        if bt_path is None:
            cand = args.quantiles.parent / "backtest.csv"
            bt_path = cand if cand.is_file() else None
            if bt_path is None:
                print("note: no backtest.csv next to the quantiles; steps correlated as AR(1)", file=sys.stderr)
        q, levels, bt = load_forecast(args.quantiles, bt_path)
        result = build_scenarios(
            q, levels, bt, samples=args.samples, k=args.k, alpha=alpha, reduction=args.reduction, seed=args.seed
        )
        write_scenarios(result, out, option="--out")
    except InputError as exc:
        return input_error(exc)
    e = result.metrics["reductions"]
    print(
        f"wrote {out}/scenarios.csv: {len(result.reductions[args.reduction].probabilities)} scenarios "
        f"({args.reduction}) from {args.samples} samples x {len(result.step_times)} steps; CVaR (alpha {alpha:g}) "
        f"of the reference schedule {e['tail']['cvar_full_eur']:.2f} EUR; reduction errors: "
        + ", ".join(f"{m} {100 * e[m]['relative_error']:+.1f} %" for m in ("kmeans", "medoids", "tail"))
    )
    return EXIT_OK
