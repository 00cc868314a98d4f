"""``jaxvpp backtest``: every strategy scheduled on every day of a period, judged on the realised prices.

Checks --out before any work, prints one line per block of days, exits 2 on bad input (the file, row and
column, or the option named; nothing written), 1 on a numerical error, and writes --out whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from jaxvpp import io
from jaxvpp.cli.common import EXIT_NUMERICAL, EXIT_OK, add_fill_gaps_argument, input_error
from jaxvpp.errors import InputError, NumericalError
from jaxvpp.files import check_folder
from jaxvpp.market.forecasting import ForecastConfig, read_quantile_file
from jaxvpp.market.ingress import (
    MARKET_TZ,
    Gap,
    check_time_zone,
    gap_counts,
    gap_lines,
    read_price_file,
    synthetic_prices,
)
from jaxvpp.problem import random_fleet
from jaxvpp.studies.backtesting import (
    BACKTEST_FILES,
    DEFAULT_STRATEGIES,
    STRATEGIES,
    BacktestConfig,
    backtest,
    write_backtest,
)

#: Days of synthetic history before the backtest's copula window (the forecaster's training and warm-up).
SYNTHETIC_WARMUP_DAYS = 91


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``backtest`` to the ``jaxvpp`` parser."""
    d, f = BacktestConfig(), ForecastConfig()
    p = sub.add_parser(
        "backtest",
        help="out of sample: each strategy's schedule on every day of a period, judged on the realised prices",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "For every delivery day D from --from to --to: the quantile forecast issued at gate closure on D-1\n"
            "(only prices known then), the day's scenarios, every battery's schedule under each strategy, and\n"
            "its realised revenue on D's actual prices. Strategies:\n"
            + "".join(f"  {k:<18} {v}\n" for k, v in STRATEGIES.items())
            + "All days and batteries of one strategy are one batched solve. Writes DIR/days.csv (per day and\n"
            "strategy, fleet sums), batteries.csv (per battery), forecasts.csv (the issued quantiles),\n"
            "summary.json (per strategy: mean daily profit, its 5 % tail mean, worst day, regret, cycles, how\n"
            "often the realised loss exceeded the predicted CVaR) and the figures cumulative_profit.png,\n"
            "daily_profit.png and cvar.png. Without --prices: the built-in synthetic market, --days days.\n"
            "Exit codes: 0 done, 1 numerical error, 2 bad input or output path, 130 interrupted."
        ),
    )
    p.add_argument("--prices", type=Path, metavar="FILE", help="price file (default: the synthetic market)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--from", dest="first", metavar="DAY", help="first delivery day (YYYY-MM-DD; default the first possible)"
    )
    p.add_argument("--to", dest="last", metavar="DAY", help="last delivery day (default the last complete day)")
    p.add_argument(
        "--days", type=int, default=365, metavar="N", help="synthetic market only: days of the backtest (default 365)"
    )
    p.add_argument(
        "--resolution",
        type=int,
        choices=(60, 30, 15),
        default=60,
        help="synthetic market only: step length in minutes (default 60)",
    )
    p.add_argument(
        "--forecasts",
        type=Path,
        metavar="FILE",
        help="issued quantile forecasts to judge instead of the built-in forecaster's (timestamp, q0.05, ...; "
        "the format of forecasts.csv and backtest.csv)",
    )
    p.add_argument("--fleet", type=Path, metavar="FILE", help="fleet.csv (default: a random fleet)")
    p.add_argument("--batteries", type=int, default=100, metavar="N", help="random fleet size (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic prices, the fleet and the scenarios")
    p.add_argument(
        "--strategies",
        default=",".join(DEFAULT_STRATEGIES),
        metavar="A,B",
        help=f"comma-separated, from {', '.join(STRATEGIES)} (default {','.join(DEFAULT_STRATEGIES)})",
    )
    p.add_argument(
        "--risk-weights",
        default="",
        metavar="W1,W2",
        help="risk_aware at these common risk weights (default: each battery's own weight)",
    )
    p.add_argument("--theta", type=float, default=d.theta, help=f"coordinated target share (default {d.theta})")
    p.add_argument("--alpha", type=float, default=d.alpha, help=f"CVaR tail probability (default {d.alpha})")
    p.add_argument("--samples", type=int, default=d.samples, help=f"paths sampled per day (default {d.samples})")
    p.add_argument("--k", type=int, default=d.scenarios, help=f"scenarios per day (default {d.scenarios})")
    p.add_argument(
        "--refit-every",
        type=int,
        default=f.refit_every_days,
        metavar="DAYS",
        help=f"days between forecaster refits (default {f.refit_every_days})",
    )
    add_fill_gaps_argument(p, "--prices")
    p.add_argument(
        "--time-zone", default=MARKET_TZ, help=f"market time zone of the delivery days (default {MARKET_TZ})"
    )
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true", help="no progress lines; only the result line")
    p.set_defaults(func=cmd_backtest)


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"not a comma-separated list of numbers: {text!r}", column=option) from None


def _day(text: str | None, option: str) -> pd.Timestamp | None:
    if text is None:
        return None
    try:
        return pd.Timestamp(text).normalize()
    except (ValueError, TypeError):
        raise InputError(f"not a date (YYYY-MM-DD): {text!r}", column=option) from None


def cmd_backtest(args: argparse.Namespace) -> int:
    """``jaxvpp backtest``: forecast, schedule and judge every day; write the folder."""
    t0 = time.perf_counter()
    log = None if args.quiet else (lambda line: print(line, flush=True))
    try:
        check_folder(args.out, option="--out", names=BACKTEST_FILES)
        why = check_time_zone(args.time_zone)
        if why:
            raise InputError(why, column="--time-zone")
        for name, value in (
            ("--batteries", args.batteries),
            ("--days", args.days),
            ("--refit-every", args.refit_every),
        ):
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}", column=name)
        cfg = BacktestConfig(
            strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
            risk_weights=_floats(args.risk_weights, "--risk-weights"),
            theta=args.theta,
            alpha=args.alpha,
            samples=args.samples,
            scenarios=args.k,
            seed=args.seed,
            forecast=ForecastConfig(refit_every_days=args.refit_every, seed=args.seed, tz=args.time_zone),
        )
        first, last = _day(args.first, "--from"), _day(args.last, "--to")
        gaps: list[Gap] = []
        if args.prices is not None:
            notes: list[str] = []
            prices = read_price_file(args.prices, notes=notes, fill_gaps=args.fill_gaps, gaps=gaps)
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            for line in gap_lines(gaps, file=args.prices):
                print(f"note: {line}", file=sys.stderr)
        else:
            prices = synthetic_prices(
                args.days + cfg.copula_days + SYNTHETIC_WARMUP_DAYS, args.resolution, args.seed, tz=args.time_zone
            )
            if first is None and last is None:
                days = pd.DatetimeIndex(pd.to_datetime(prices["timestamp"]).dt.tz_convert(args.time_zone))
                last = days.tz_localize(None).normalize().max()
                first = last - pd.Timedelta(days=args.days - 1)
        if args.fleet is not None:
            ids, fleet = io.read_fleet(args.fleet)
        else:
            fleet = random_fleet(args.batteries, seed=args.seed)
            width = max(3, len(str(args.batteries)))
            ids = [f"prosumer_{i + 1:0{width}d}" for i in range(args.batteries)]
        forecasts = read_quantile_file(args.forecasts)[0] if args.forecasts is not None else None
        result = backtest(prices, fleet, ids, first_day=first, last_day=last, config=cfg, forecasts=forecasts, log=log)
        result.summary["filled_gaps"] = gap_counts(gaps)
        write_backtest(result, args.out, plots=not args.no_plots)
    except InputError as exc:
        return input_error(exc)
    except NumericalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NUMERICAL
    s = result.summary
    by = s["by_strategy"]
    best = max((n for n in by if n != "perfect_foresight"), key=lambda n: by[n]["mean_daily_profit_eur"], default=None)
    print(
        f"backtest {s['first_day']} .. {s['last_day']} ({s['days']} days, {s['batteries']} batteries) in "
        f"{args.out}/: "
        + "; ".join(
            f"{n} {by[n]['mean_daily_profit_eur']:.0f} EUR/day (tail {by[n]['profit_tail_mean_eur']:.0f})"
            for n in s["strategies"]
        )
        + (f"; best forecast-based: {best}" if best else "")
        + f"; {time.perf_counter() - t0:.1f} s"
    )
    return EXIT_OK
