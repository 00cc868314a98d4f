"""The ``jaxvpp`` command line.

Exit codes: 0 success, 2 bad input (the message names file, row and column or the parameter),
3 infeasible target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_INPUT, EXIT_INFEASIBLE = 0, 2, 3


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
    p.add_argument("--fleet", type=Path, help="fleet.csv (battery_id plus optional parameter columns)")
    p.add_argument("--scenarios", type=Path, help="scenarios.csv (scenario, probability, one price column per step)")
    p.add_argument("--target", type=Path, help="target.csv (step, target_mw): the required fleet sum of p_t")
    p.add_argument("--alpha", type=float, default=0.05, help="CVaR tail probability in (0, 1) (default 0.05)")
    p.add_argument("--dt-hours", type=float, default=1.0, help="step length in hours (default 1; 0.25 for 15-min)")
    p.add_argument("--baseline", choices=("zero", "expected"), default="zero",
                   help="loss baseline: Loss = -Revenue (zero) or E[Revenue] - Revenue (expected)")
    p.add_argument("--method", choices=("aladin", "admm", "centralized"), default="aladin",
                   help="aladin: interior-point ALADIN in JAX (default; without --target every battery is solved "
                        "alone by the batched interior-point solver); admm: the ADMM baseline; centralized: one "
                        "cvxpy + Clarabel problem")
    p.add_argument("--tol", type=float, default=None,
                   help="relative residual and gap tolerance (default 1e-8 coordinated, 1e-9 alone; MW for admm)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="iteration limit (default 50 for aladin, 300 for admm, 80 for the local solver)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration log")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default results/)")
    p.set_defaults(func=cmd_coordinate)


def _example_inputs():
    from jaxvpp.problem import random_fleet, synthetic_market

    fleet = random_fleet(100, seed=0)
    market = synthetic_market(20, 24, seed=0)
    ids = [f"bess_{i:03d}" for i in range(100)]
    steps = [f"{t:02d}:00" for t in range(24)]
    return ids, fleet, steps, market


def cmd_coordinate(args: argparse.Namespace) -> int:
    """``jaxvpp coordinate``: solve and write schedules.csv and summary.json."""
    import numpy as np

    from jaxvpp import io
    from jaxvpp.errors import InputError
    from jaxvpp.problem import Settings

    t0 = time.perf_counter()
    try:
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
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    settings = Settings(dt_hours=args.dt_hours, alpha=args.alpha, baseline=args.baseline)

    extra_files: dict[str, str] = {}
    if target is not None:
        from jaxvpp.coordination import coordinate

        log = None if args.quiet else print
        if log:
            print(f"coordinating {len(ids)} batteries to the target ({args.method}):")
        res = coordinate(fleet, market, target, settings, method=args.method,
                         tol=args.tol if args.tol is not None else (1e-6 if args.method == "admm" else 1e-8),
                         max_iter=args.max_iter, log=log)
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
        wall_time_s=time.perf_counter() - t0,
    )
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="jaxvpp",
        description="Risk-aware (CVaR) battery fleet optimisation and ALADIN coordination in JAX.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_coordinate(sub)
    try:
        from jaxvpp import cli_market
    except ImportError:  # market-data phases not installed in this build
        cli_market = None
    if cli_market is not None:
        cli_market.register(sub)
    return parser


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk between runs (``JAXVPP_CACHE_DIR``, default ~/.cache/jaxvpp/xla;
    set it to an empty string to switch the cache off)."""
    import os

    import jax

    path = os.environ.get("JAXVPP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "jaxvpp", "xla"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    enable_compilation_cache()
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
