"""The ``jaxvpp`` command line.

Exit codes: 0 success, 1 numerical error (nothing written), 2 bad input (the message names file, row and
column, the config key, or the parameter), 3 infeasible target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_NUMERICAL, EXIT_INPUT, EXIT_INFEASIBLE = 0, 1, 2, 3

#: ``jaxvpp run`` flags that override a config key: (flag, dest, type, dotted key(s), help).
RUN_OVERRIDES: tuple[tuple[str, str, type, tuple[str, ...], str], ...] = (
    ("--data-dir", "data_dir", str, ("output.data_dir",), "data folder for raw/ and processed/ ([output] data_dir)"),
    ("--batteries", "batteries", int, ("fleet.batteries",), "number of batteries in the random fleet ([fleet] batteries)"),
    ("--seed", "seed", int, ("market.seed", "forecast.seed", "scenarios.seed", "fleet.seed"),
     "one random seed for the prices, forecast, scenarios and fleet (the four seed keys)"),
    ("--history-days", "history_days", int, ("market.history_days",),
     "days of synthetic price history ([market] history_days)"),
    ("--prices", "prices", str, ("market.prices_file",),
     "price file to forecast from instead of a synthetic history, e.g. from `jaxvpp fetch` ([market] prices_file)"),
    ("--samples", "samples", int, ("scenarios.samples",), "sampled price paths ([scenarios] samples)"),
    ("--k", "k", int, ("scenarios.count",), "number of reduced scenarios K ([scenarios] count)"),
    ("--alpha", "alpha", float, ("risk.alpha",), "CVaR tail probability in (0, 1) ([risk] alpha)"),
    ("--fleet", "fleet", str, ("fleet.file",), "fleet.csv instead of the random fleet ([fleet] file)"),
    ("--theta", "theta", float, ("target.theta",),
     "committed share of the fleet's point-forecast schedule ([target] theta)"),
    ("--target", "target", str, ("target.file",), "target.csv instead of the committed schedule ([target] file)"),
    ("--max-iter", "max_iter", int, ("coordination.max_iter",), "ALADIN's iteration limit ([coordination] max_iter)"),
    ("--admm-max-iter", "admm_max_iter", int, ("coordination.admm_max_iter",),
     "ADMM's iteration limit ([coordination] admm_max_iter)"),
    ("--devices", "devices", int, ("coordination.devices",),
     "devices ALADIN splits the fleet over ([coordination] devices)"),
)


def add_problem_arguments(p: argparse.ArgumentParser) -> None:
    """The input files and model options that every solving command takes (read by :func:`read_problem`)."""
    p.add_argument("--fleet", type=Path, help="fleet.csv (battery_id plus optional parameter columns)")
    p.add_argument("--scenarios", type=Path, help="scenarios.csv (scenario, probability, one price column per step)")
    p.add_argument("--target", type=Path, help="target.csv (step, target_mw): the required fleet sum of p_t")
    p.add_argument("--alpha", type=float, default=0.05, help="CVaR tail probability in (0, 1) (default 0.05)")
    p.add_argument("--dt-hours", type=float, default=1.0, help="step length in hours (default 1; 0.25 for 15-min)")
    p.add_argument("--baseline", choices=("zero", "expected"), default="zero",
                   help="loss baseline: Loss = -Revenue (zero) or E[Revenue] - Revenue (expected)")


def _add_coordinate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "coordinate",
        help="solve the fleet's risk-aware schedules (each battery alone, or against a community target)",
        description=(
            "Solve every battery's risk-aware problem (expected profit minus a CVaR penalty) for the whole "
            "fleet at once. Without --fleet/--scenarios a built-in example is used (100 batteries, 20 "
            "scenarios, 24 hourly steps). Writes DIR/schedules.csv and DIR/summary.json."
        ),
    )
    add_problem_arguments(p)
    p.add_argument("--method", choices=("aladin", "admm", "centralized"), default="aladin",
                   help="aladin: interior-point ALADIN in JAX (default; without --target every battery is solved "
                        "alone by the batched interior-point solver); admm: the ADMM baseline; centralized: one "
                        "cvxpy + Clarabel problem")
    p.add_argument("--tol", type=float, default=None,
                   help="relative residual and gap tolerance (default 1e-8 coordinated, 1e-9 alone; MW for admm)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="iteration limit (default 100 for aladin, 300 for admm, 80 for the local solver)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration log")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default results/)")
    g = p.add_argument_group(
        "scale-out (aladin with --target)",
        "Split the fleet over devices (the same answer; the aggregator's sums are the only communication). On a "
        "CPU, --devices N makes JAX show N host devices. Several hosts: start the same command in every process "
        "with --coordinator, --num-processes and its --process-id; --devices is then the total over all "
        "processes (an equal share each); process 0 writes the outputs.")
    g.add_argument("--devices", type=int, default=1, metavar="N", help="devices to split the fleet over (default 1)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (multi-process runs)")
    g.add_argument("--num-processes", type=int, default=1, metavar="P", help="number of processes (default 1)")
    g.add_argument("--process-id", type=int, default=0, metavar="I", help="this process's id, 0 ... P-1")
    p.set_defaults(func=cmd_coordinate)


def _example_inputs():
    from jaxvpp.problem import random_fleet, synthetic_market

    fleet = random_fleet(100, seed=0)
    market = synthetic_market(20, 24, seed=0)
    ids = [f"bess_{i:03d}" for i in range(100)]
    steps = [f"{t:02d}:00" for t in range(24)]
    return ids, fleet, steps, market


def set_up_devices(devices: int, coordinator: str | None = None, num_processes: int = 1, process_id: int = 0) -> None:
    """Make JAX show ``devices`` devices before it starts (CPU: forced host devices), joining a multi-process
    run first if ``coordinator`` is given. Raises :class:`~jaxvpp.errors.InputError` naming the option."""
    from jaxvpp import distributed
    from jaxvpp.errors import InputError

    if devices < 1:
        raise InputError(f"--devices must be at least 1, got {devices}", column="--devices")
    if coordinator is not None or num_processes != 1:
        if coordinator is None or num_processes < 2:
            raise InputError("a multi-process run needs --coordinator HOST:PORT and --num-processes >= 2",
                             column="--coordinator")
        if not 0 <= process_id < num_processes:
            raise InputError(f"--process-id must lie in 0 ... {num_processes - 1}, got {process_id}", column="--process-id")
        if devices % num_processes:
            raise InputError(f"--devices {devices} must be a multiple of --num-processes {num_processes} (an equal "
                             "share per process)", column="--devices")
        try:
            distributed.initialize(coordinator, num_processes, process_id, local_devices=devices // num_processes)
        except RuntimeError as exc:
            raise InputError(f"could not join the multi-process run at {coordinator}: {exc}", column="--coordinator")
    elif devices > 1:
        distributed.use_cpu_devices(devices)
    try:
        distributed.fleet_mesh(devices)
    except ValueError as exc:
        raise InputError(str(exc), column="--devices") from None


def read_problem(args: argparse.Namespace):
    """The checked options and input files of a solving command (``coordinate``, ``sensitivity``, ``sweep``):
    ids, fleet, step labels, market, target (MW, or None) and settings. Raises :class:`InputError`."""
    from jaxvpp import io
    from jaxvpp.errors import InputError
    from jaxvpp.problem import Settings

    io.validate_alpha(args.alpha)
    if not (args.dt_hours > 0):
        raise InputError(f"--dt-hours must be positive, got {args.dt_hours}", column="--dt-hours")
    if args.tol is not None and not (args.tol > 0):
        raise InputError(f"--tol must be positive, got {args.tol}", column="--tol")
    if args.max_iter is not None and args.max_iter < 1:
        raise InputError(f"--max-iter must be at least 1, got {args.max_iter}", column="--max-iter")
    if (args.fleet is None) != (args.scenarios is None):
        raise InputError("give both --fleet and --scenarios, or neither for the built-in example",
                         column="--fleet" if args.fleet is None else "--scenarios")
    if args.fleet is None:
        ids, fleet, steps, market = _example_inputs()
    else:
        ids, fleet = io.read_fleet(args.fleet)
        steps, market = io.read_scenarios(args.scenarios)
    target = io.read_target(args.target, len(steps)) if args.target is not None else None
    settings = Settings(dt_hours=args.dt_hours, alpha=args.alpha, baseline=args.baseline)
    return ids, fleet, steps, market, target, settings


def cmd_coordinate(args: argparse.Namespace) -> int:
    """``jaxvpp coordinate``: solve and write schedules.csv and summary.json."""
    import numpy as np

    from jaxvpp import io
    from jaxvpp.errors import InputError

    t0 = time.perf_counter()
    try:
        # before anything starts JAX: on a CPU the number of host devices is fixed when it starts
        if args.devices > 1 and (args.target is None or args.method != "aladin"):
            raise InputError("--devices applies to coordination with --method aladin and a --target", column="--devices")
        set_up_devices(args.devices, args.coordinator, args.num_processes, args.process_id)
        ids, fleet, steps, market, target, settings = read_problem(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT

    extra_files: dict[str, str] = {}
    if target is not None:
        from jaxvpp.coordination import coordinate

        log = None if args.quiet else print
        if log:
            print(f"coordinating {len(ids)} batteries to the target ({args.method}):")
        res = coordinate(fleet, market, target, settings, method=args.method,
                         tol=args.tol if args.tol is not None else (1e-6 if args.method == "admm" else 1e-8),
                         max_iter=args.max_iter, log=log, devices=args.devices)
        if res.status == "infeasible_target":
            steps_txt = "; ".join(f"step {steps[t]} (#{t + 1}): {why}" for t, why in res.infeasible_steps[:10])
            print(f"error: infeasible target {args.target}: {steps_txt}", file=sys.stderr)
            return EXIT_INFEASIBLE
        sol = res.solution
        charge, discharge, soc = (np.asarray(a) for a in (sol.charge_mw, sol.discharge_mw, sol.soc_mwh))
        summary = io.coordination_summary(res)
        frame_h = io.convergence_frame(res)
        if frame_h is not None:
            extra_files["convergence.csv"] = frame_h.to_csv(index=False)
        if res.status == "numerical_error":
            print("error: numerical error in the coordination (non-finite iterates); nothing written",
                  file=sys.stderr)
            return 1
    elif args.method == "centralized":
        from jaxvpp.reference import solve_fleet_reference

        ref = solve_fleet_reference(fleet, market, settings, None)
        charge, discharge, soc = (np.asarray(ref[k]) for k in ("charge", "discharge", "soc"))
        summary = dict(
            objective_eur=float(ref["objective_eur"]),
            expected_revenue_eur=float(np.sum(ref["expected_revenue_eur"])),
            cvar_eur=float(np.sum(ref["cvar_eur"])),
            converged=bool(ref["status"] in ("optimal",)),
            status="converged" if ref["status"] == "optimal" else str(ref["status"]),
            iterations=int(ref.get("iterations", 0) or 0),
        )
    else:
        from jaxvpp.battery import solve_batteries

        sol = solve_batteries(fleet, market, settings, tol=args.tol or 1e-9, max_iter=args.max_iter or 80)
        charge, discharge, soc = (np.asarray(a) for a in (sol.charge_mw, sol.discharge_mw, sol.soc_mwh))
        conv = bool(np.all(np.asarray(sol.converged)))
        summary = dict(
            objective_eur=float(np.sum(sol.objective_eur)),
            expected_revenue_eur=float(np.sum(sol.expected_revenue_eur)),
            cvar_eur=float(np.sum(sol.cvar_eur)),
            converged=conv,
            status="converged" if conv else "max_iter",
            iterations=int(np.max(np.asarray(sol.iterations))),
            batteries_not_converged=[ids[i] for i in np.flatnonzero(~np.asarray(sol.converged))],
        )
    for key in ("charge", "discharge", "soc"):
        arr = {"charge": charge, "discharge": discharge, "soc": soc}[key]
        if not np.all(np.isfinite(arr)):
            print(f"error: the {key} schedule has non-finite values (numerical error); nothing written",
                  file=sys.stderr)
            return 1
    summary.update(
        # without a target no coordination runs: every battery is solved alone by the batched solver
        method=args.method if (target is not None or args.method == "centralized") else "batched_ipm",
        coordinated=target is not None,
        num_batteries=len(ids),
        num_steps=len(steps),
        num_scenarios=int(market.num_scenarios),
        alpha=args.alpha,
        dt_hours=args.dt_hours,
        baseline=args.baseline,
        devices=args.devices,
        processes=args.num_processes,
        wall_time_s=time.perf_counter() - t0,
    )
    if args.process_id != 0:  # a multi-process run: process 0 writes the outputs
        print(f"process {args.process_id} of {args.num_processes}: done; process 0 writes {args.out}/")
        return EXIT_OK
    frame = io.schedules_frame(ids, charge, discharge, soc, steps)
    io.write_outputs(args.out, {
        "schedules.csv": frame.to_csv(index=False),
        "summary.json": json.dumps(summary, indent=2) + "\n",
        **extra_files,
    })
    status = "converged" if summary["converged"] else summary["status"]
    print(f"{len(ids)} batteries, {len(steps)} steps, {market.num_scenarios} scenarios: "
          f"objective {summary['objective_eur']:.2f} EUR, expected revenue {summary['expected_revenue_eur']:.2f} EUR, "
          f"CVaR {summary['cvar_eur']:.2f} EUR; {status} in {summary['iterations']} iterations, "
          f"{summary['wall_time_s']:.2f} s; wrote {args.out}/schedules.csv and summary.json")
    return EXIT_OK


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: market history, forecast, scenarios, fleet, target, ALADIN vs ADMM, frontier, plots",
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
            "   8 ADMM          the baseline, for the convergence comparison\n"
            "   9 frontier      expected profit against CVaR over risk weights (one batched solve)\n"
            "  10 outputs       OUT/schedules.csv, summary.json, convergence.csv, frontier.csv, the forecast and\n"
            "                   scenario files, config.toml and the figures risk_bands.png, scenarios.png,\n"
            "                   schedule.png, soc.png, convergence.png, frontier.png\n\n"
            "Every parameter lives in the TOML config (`jaxvpp init-config` writes the default, with comments);\n"
            "the flags below override it. Nothing is written unless every phase succeeds.\n"
            "Exit codes: 0 done (summary.json says whether ALADIN converged), 1 numerical error, 2 bad input\n"
            "or config (the message names the file, line and key, or the flag), 3 infeasible target."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="configuration file (default: the built-in defaults)")
    p.add_argument("--out", type=str, metavar="DIR", help="results folder ([output] results_dir, default results/)")
    for flag, dest, typ, _keys, text in RUN_OVERRIDES:
        metavar = {"--data-dir": "DIR", "--prices": "FILE", "--fleet": "FILE", "--target": "FILE"}.get(
            flag, "N" if typ is int else "X")
        p.add_argument(flag, dest=dest, type=typ, default=None, metavar=metavar, help=text)
    p.add_argument("--no-admm", action="store_true", help="skip the ADMM baseline ([coordination] admm = false)")
    p.add_argument("--no-plots", action="store_true", help="write no figures ([output] plots = false)")
    p.add_argument("--quiet", action="store_true", help="no progress display and no ALADIN log; only the result line")
    p.set_defaults(func=cmd_run)


def run_config(args: argparse.Namespace):
    """The run's configuration: the file (or the defaults) with the command-line flags applied."""
    from jaxvpp.config import DEFAULT, load_config

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
    if args.no_admm:
        values["coordination.admm"], flag_of["coordination.admm"] = False, "--no-admm"
    if args.no_plots:
        values["output.plots"], flag_of["output.plots"] = False, "--no-plots"
    return cfg.override(values, source=lambda k: flag_of.get(k, k))


def cmd_run(args: argparse.Namespace) -> int:
    """``jaxvpp run``: the whole job (see :mod:`jaxvpp.pipeline`)."""
    from jaxvpp.errors import InfeasibleTargetError, InputError

    try:
        cfg = run_config(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if cfg.coordination.devices > 1:  # before the pipeline starts JAX (CPU: forced host devices)
        try:
            set_up_devices(cfg.coordination.devices)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INPUT
    from jaxvpp.pipeline import NumericalError, run

    log = None if args.quiet else print
    if log:
        src = f"synthetic history of {cfg.market.history_days} days" if not cfg.market.prices_file else cfg.market.prices_file
        fleet = cfg.fleet.file or f"{cfg.fleet.batteries} batteries"
        print(f"jaxvpp run: {fleet}, {src}, {cfg.scenarios.count} scenarios -> {cfg.output.results_dir}/ "
              f"(config: {args.config or 'built-in defaults'})", flush=True)
    try:
        result = run(cfg, log=log)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except InfeasibleTargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
    except NumericalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NUMERICAL
    s = result.summary
    state = "converged" if s["converged"] else f"did NOT converge ({s['status']})"
    print(f"ALADIN {state} in {s['iterations']} iterations; coordinated objective {s['objective_eur']:.2f} EUR vs "
          f"{s['uncoordinated']['objective_eur']:.2f} EUR uncoordinated; coupling residual "
          f"{s['coupling_residual_mw']:.1e} MW; {s['wall_time_s']:.1f} s; wrote {result.results_dir}/")
    return EXIT_OK


def _add_init_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-config",
        help="write the default configuration of `jaxvpp run` (TOML, every key commented)",
        description=("Write the default configuration of `jaxvpp run` as TOML, with a comment (and the unit) on "
                     "every key. Edit it and pass it with `jaxvpp run --config FILE`. Without --out it is printed."),
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="file to write (default: print to standard output)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_init_config)


def cmd_init_config(args: argparse.Namespace) -> int:
    """``jaxvpp init-config``: the default config with comments."""
    from jaxvpp.config import default_config_text
    from jaxvpp.ingress import write_file_atomic

    text = default_config_text()
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    if args.out.exists() and not args.force:
        print(f"error: {args.out} exists; use --force to overwrite it", file=sys.stderr)
        return EXIT_INPUT
    write_file_atomic(args.out, text)
    print(f"wrote {args.out}; run it with: jaxvpp run --config {args.out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="jaxvpp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Risk-aware (CVaR) battery fleet optimisation and ALADIN coordination in JAX.",
        epilog=(
            "examples:\n"
            "  jaxvpp run --out results/              the main job on the built-in example (about a minute)\n"
            "  jaxvpp init-config --out run.toml      the default configuration, every key commented\n"
            "  jaxvpp run --config run.toml --batteries 500 --seed 3\n"
            "  jaxvpp coordinate --fleet fleet.csv --scenarios scenarios.csv --target target.csv\n"
            "  jaxvpp sensitivity --fleet fleet.csv --scenarios scenarios.csv --target target.csv --out sens/\n"
            "  jaxvpp sweep --param risk_weight --values 0:2:64 --out sweep/\n\n"
            "`jaxvpp COMMAND --help` describes each command. Exit codes: 0 success, 1 numerical error,\n"
            "2 bad input (file, row and column, config key, or option named), 3 infeasible target.\n"
            "Compiled programs are cached in ~/.cache/jaxvpp/xla (JAXVPP_CACHE_DIR; empty = no cache)."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_run(sub)
    _add_init_config(sub)
    _add_coordinate(sub)
    try:
        from jaxvpp import cli_market
    except ImportError:  # market-data phases not installed in this build
        cli_market = None
    if cli_market is not None:
        cli_market.register(sub)
    from jaxvpp import cli_study

    cli_study.register(sub)
    return parser


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk between runs (``JAXVPP_CACHE_DIR``, default ~/.cache/jaxvpp/xla;
    set it to an empty string to switch the cache off)."""
    import os

    import jax

    path = os.environ.get("JAXVPP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "jaxvpp", "xla"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    enable_compilation_cache()
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
