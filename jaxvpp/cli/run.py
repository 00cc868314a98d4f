"""``jaxvpp run`` (the main job, every phase) and ``jaxvpp init-config``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxvpp.cli.common import (
    EXIT_INFEASIBLE,
    EXIT_NUMERICAL,
    EXIT_OK,
    input_error,
    set_up_devices,
)
from jaxvpp.config import DEFAULT, default_config_text, load_config
from jaxvpp.errors import InfeasibleTargetError, InputError, NumericalError
from jaxvpp.files import check_file, write_file
from jaxvpp.pipeline import check_outputs, run

#: ``jaxvpp run`` flags that override a config key: (flag, dest, type, dotted key(s), help).
RUN_OVERRIDES: tuple[tuple[str, str, type, tuple[str, ...], str], ...] = (
    ("--data-dir", "data_dir", str, ("output.data_dir",), "data folder for raw/ and processed/ ([output] data_dir)"),
    (
        "--batteries",
        "batteries",
        int,
        ("fleet.batteries",),
        "number of batteries in the random fleet ([fleet] batteries)",
    ),
    (
        "--seed",
        "seed",
        int,
        ("market.seed", "forecast.seed", "scenarios.seed", "fleet.seed"),
        "one random seed for the prices, forecast, scenarios and fleet (the four seed keys)",
    ),
    (
        "--history-days",
        "history_days",
        int,
        ("market.history_days",),
        "days of synthetic price history ([market] history_days)",
    ),
    (
        "--prices",
        "prices",
        str,
        ("market.prices_file",),
        "price file to forecast from instead of a synthetic history, e.g. from `jaxvpp fetch` ([market] prices_file)",
    ),
    (
        "--fill-gaps",
        "fill_gaps",
        int,
        ("market.fill_gaps",),
        "interpolate runs of up to STEPS missing steps of the price file linearly; 0 = off ([market] fill_gaps)",
    ),
    ("--samples", "samples", int, ("scenarios.samples",), "sampled price paths ([scenarios] samples)"),
    ("--k", "k", int, ("scenarios.count",), "number of reduced scenarios K ([scenarios] count)"),
    ("--alpha", "alpha", float, ("risk.alpha",), "CVaR tail probability in (0, 1) ([risk] alpha)"),
    ("--fleet", "fleet", str, ("fleet.file",), "fleet.csv instead of the random fleet ([fleet] file)"),
    (
        "--theta",
        "theta",
        float,
        ("target.theta",),
        "committed share of the fleet's point-forecast schedule ([target] theta)",
    ),
    ("--target", "target", str, ("target.file",), "target.csv instead of the committed schedule ([target] file)"),
    ("--max-iter", "max_iter", int, ("coordination.max_iter",), "ALADIN's iteration limit ([coordination] max_iter)"),
    (
        "--admm-max-iter",
        "admm_max_iter",
        int,
        ("coordination.admm_max_iter",),
        "ADMM's iteration limit ([coordination] admm_max_iter)",
    ),
    (
        "--devices",
        "devices",
        int,
        ("coordination.devices",),
        "devices ALADIN splits the fleet over ([coordination] devices)",
    ),
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``init-config`` to the ``jaxvpp`` parser."""
    _add_run(sub)
    _add_init_config(sub)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: market history, forecast, scenarios, fleet, target, ALADIN (ADMM opt-in), frontier, plots",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run every phase on the built-in example (no download) or on your files, as the config says:\n"
            "   1 market        synthetic day-ahead price history (or --prices FILE) -> DATA/raw\n"
            "   2 forecast      calibrated quantile forecast of the delivery day -> DATA/processed, OUT\n"
            "   3 scenarios     copula-sampled paths reduced to K weighted scenarios -> DATA/processed, OUT\n"
            "   4 fleet         100 heterogeneous prosumer batteries (or --fleet FILE)\n"
            "   5 uncoordinated every battery's own risk-aware optimum\n"
            "   6 target        the aggregator's committed schedule: theta x the fleet's point-forecast schedule\n"
            "   7 ALADIN        the fleet coordinated to the target (live per-iteration log)\n"
            "   8 ADMM          the baseline, for the convergence comparison (opt-in: --admm)\n"
            "   9 frontier      expected profit against CVaR over risk weights (one batched solve)\n"
            "  10 outputs       OUT/schedules.csv, summary.json, convergence.csv, frontier.csv, the forecast and\n"
            "                   scenario files, config.toml and the figures risk_bands.png, scenarios.png,\n"
            "                   schedule.png, soc.png, convergence.png, frontier.png\n\n"
            "Every parameter lives in the TOML config (`jaxvpp init-config` writes the default, with comments);\n"
            "the flags below override it. The output folders are checked first; nothing is written unless\n"
            "every phase succeeds, and then OUT, DATA/raw and DATA/processed each whole or not at all.\n"
            "Exit codes: 0 done (summary.json says whether ALADIN converged), 1 numerical error, 2 bad input,\n"
            "config or output path (the message names the file, line and key, the flag or the path),\n"
            "3 infeasible target, 130 interrupted."
        ),
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE.toml", help="configuration file (default: the built-in defaults)"
    )
    p.add_argument("--out", type=str, metavar="DIR", help="results folder ([output] results_dir, default results/)")
    for flag, dest, typ, _keys, text in RUN_OVERRIDES:
        metavar = {
            "--data-dir": "DIR",
            "--prices": "FILE",
            "--fleet": "FILE",
            "--target": "FILE",
            "--fill-gaps": "STEPS",
        }.get(flag, "N" if typ is int else "X")
        p.add_argument(flag, dest=dest, type=typ, default=None, metavar=metavar, help=text)
    admm = p.add_mutually_exclusive_group()
    admm.add_argument(
        "--admm", action="store_true", help="also run the ADMM baseline for the comparison ([coordination] admm = true)"
    )
    admm.add_argument("--no-admm", action="store_true", help="skip the ADMM baseline ([coordination] admm = false)")
    p.add_argument("--no-plots", action="store_true", help="write no figures ([output] plots = false)")
    p.add_argument("--quiet", action="store_true", help="no progress display and no ALADIN log; only the result line")
    p.set_defaults(func=cmd_run)


def run_config(args: argparse.Namespace):
    """The run's configuration: the file (or the defaults) with the command-line flags applied."""

    cfg = load_config(args.config) if args.config is not None else DEFAULT
    values: dict[str, object] = {}
    flag_of: dict[str, str] = {}
    if args.out is not None:
        values["output.results_dir"] = args.out
        flag_of["output.results_dir"] = "--out"
    for flag, dest, _typ, keys, _text in RUN_OVERRIDES:
        v = getattr(args, dest)
        if v is not None:
            for k in keys:
                values[k] = v
                flag_of[k] = flag
    if args.admm or args.no_admm:
        values["coordination.admm"] = bool(args.admm)
        flag_of["coordination.admm"] = "--admm" if args.admm else "--no-admm"
    if args.no_plots:
        values["output.plots"], flag_of["output.plots"] = False, "--no-plots"
    return cfg.override(values, source=lambda k: flag_of.get(k, k))


def cmd_run(args: argparse.Namespace) -> int:
    """``jaxvpp run``: the whole job (see :mod:`jaxvpp.pipeline`)."""

    try:
        cfg = run_config(args)
        check_outputs(cfg)
    except InputError as exc:
        return input_error(exc)
    if cfg.coordination.devices > 1:  # before the pipeline starts JAX (CPU: forced host devices)
        try:
            set_up_devices(cfg.coordination.devices)
        except InputError as exc:
            return input_error(exc)

    log = None if args.quiet else print
    if log:
        src = (
            f"synthetic history of {cfg.market.history_days} days"
            if not cfg.market.prices_file
            else cfg.market.prices_file
        )
        fleet = cfg.fleet.file or f"{cfg.fleet.batteries} batteries"
        print(
            f"jaxvpp run: {fleet}, {src}, {cfg.scenarios.count} scenarios -> {cfg.output.results_dir}/ "
            f"(config: {args.config or 'built-in defaults'})",
            flush=True,
        )
    try:
        result = run(cfg, log=log)
    except InputError as exc:
        return input_error(exc)
    except InfeasibleTargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
    except NumericalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NUMERICAL
    s = result.summary
    state = "converged" if s["converged"] else f"did NOT converge ({s['status']})"
    print(
        f"ALADIN {state} in {s['iterations']} iterations; coordinated objective {s['objective_eur']:.2f} EUR vs "
        f"{s['uncoordinated']['objective_eur']:.2f} EUR uncoordinated; coupling residual "
        f"{s['coupling_residual_mw']:.1e} MW; {s['wall_time_s']:.1f} s; wrote {result.results_dir}/"
    )
    return EXIT_OK


def _add_init_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-config",
        help="write the default configuration of `jaxvpp run` (TOML, every key commented)",
        description=(
            "Write the default configuration of `jaxvpp run` as TOML, with a comment (and the unit) on "
            "every key. Edit it and pass it with `jaxvpp run --config FILE`. Without --out it is printed."
        ),
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="file to write (default: print to standard output)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_init_config)


def cmd_init_config(args: argparse.Namespace) -> int:
    """``jaxvpp init-config``: the default config with comments."""

    text = default_config_text()
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        check_file(args.out, option="--out")
        if args.out.exists() and not args.force:
            raise InputError("exists; use --force to overwrite it", file=args.out, column="--out")
        write_file(args.out, text, option="--out")
    except InputError as exc:
        return input_error(exc)
    print(f"wrote {args.out}; run it with: jaxvpp run --config {args.out}")
    return EXIT_OK
