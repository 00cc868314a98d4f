"""``jaxvpp coordinate``: every battery's risk-aware schedule, alone or coordinated to a target."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxvpp import io
from jaxvpp.battery.solution import solve_batteries
from jaxvpp.cli.common import (
    EXIT_INFEASIBLE,
    EXIT_OK,
    add_problem_arguments,
    input_error,
    read_problem,
    set_up_devices,
)
from jaxvpp.coordination.api import coordinate
from jaxvpp.errors import InputError
from jaxvpp.files import check_folder

#: The files ``jaxvpp coordinate`` writes into --out (it owns them: one it does not write is removed).
COORDINATE_FILES = ("schedules.csv", "summary.json", "convergence.csv")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``coordinate`` to the ``jaxvpp`` parser."""
    _add_coordinate(sub)


def _add_coordinate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "coordinate",
        help="solve the fleet's risk-aware schedules (each battery alone, or against a community target)",
        description=(
            "Solve every battery's risk-aware problem (expected profit minus a CVaR penalty) for the whole "
            "fleet at once. Without --fleet/--scenarios a built-in example is used (100 batteries, 20 "
            "scenarios, 24 hourly steps). Writes DIR/schedules.csv, DIR/summary.json and, coordinated, "
            "DIR/convergence.csv (whole or not at all; the folder is checked before the solve). The target's "
            "rows are matched to the scenarios' steps by their labels."
        ),
    )
    add_problem_arguments(p)
    p.add_argument(
        "--method",
        choices=("aladin", "admm", "centralized"),
        default="aladin",
        help="aladin: interior-point ALADIN in JAX (default; without --target every battery is solved "
        "alone by the batched interior-point solver); admm: the ADMM baseline; centralized: one "
        "cvxpy + Clarabel problem",
    )
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help="relative residual and gap tolerance (default 1e-8 coordinated, 1e-9 alone; MW for admm)",
    )
    p.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="iteration limit (default 100 for aladin, 300 for admm, 80 for the local solver)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-iteration log")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default results/)")
    g = p.add_argument_group(
        "scale-out (aladin with --target)",
        "Split the fleet over devices (the same answer; the aggregator's sums are the only communication). On a "
        "CPU, --devices N makes JAX show N host devices. Several hosts: start the same command in every process "
        "with --coordinator, --num-processes and its --process-id; --devices is then the total over all "
        "processes (an equal share each); process 0 writes the outputs.",
    )
    g.add_argument("--devices", type=int, default=1, metavar="N", help="devices to split the fleet over (default 1)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (multi-process runs)")
    g.add_argument("--num-processes", type=int, default=1, metavar="P", help="number of processes (default 1)")
    g.add_argument("--process-id", type=int, default=0, metavar="I", help="this process's id, 0 ... P-1")
    p.set_defaults(func=cmd_coordinate)


def cmd_coordinate(args: argparse.Namespace) -> int:
    """``jaxvpp coordinate``: solve and write schedules.csv and summary.json."""

    t0 = time.perf_counter()
    try:
        if args.process_id == 0:  # the process that writes: its output folder is checked before any work
            check_folder(args.out, option="--out", names=COORDINATE_FILES)
        # before anything starts JAX: on a CPU the number of host devices is fixed when it starts
        if args.devices > 1 and (args.target is None or args.method != "aladin"):
            raise InputError(
                "--devices applies to coordination with --method aladin and a --target", column="--devices"
            )
        set_up_devices(args.devices, args.coordinator, args.num_processes, args.process_id)
        ids, fleet, steps, market, target, settings = read_problem(args)
    except InputError as exc:
        return input_error(exc)

    extra_files: dict[str, str] = {}
    if target is not None:
        log = None if args.quiet else print
        if log:
            print(f"coordinating {len(ids)} batteries to the target ({args.method}):")
        res = coordinate(
            fleet,
            market,
            target,
            settings,
            method=args.method,
            tol=args.tol if args.tol is not None else (1e-6 if args.method == "admm" else 1e-8),
            max_iter=args.max_iter,
            log=log,
            devices=args.devices,
        )
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
            print("error: numerical error in the coordination (non-finite iterates); nothing written", file=sys.stderr)
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
            print(
                f"error: the {key} schedule has non-finite values (numerical error); nothing written", file=sys.stderr
            )
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
    try:
        io.write_outputs(
            args.out,
            {
                "schedules.csv": frame.to_csv(index=False),
                "summary.json": json.dumps(summary, indent=2) + "\n",
                **extra_files,
            },
            owned=COORDINATE_FILES,
            option="--out",
        )
    except InputError as exc:
        return input_error(exc)
    status = "converged" if summary["converged"] else summary["status"]
    print(
        f"{len(ids)} batteries, {len(steps)} steps, {market.num_scenarios} scenarios: "
        f"objective {summary['objective_eur']:.2f} EUR, expected revenue {summary['expected_revenue_eur']:.2f} EUR, "
        f"CVaR {summary['cvar_eur']:.2f} EUR; {status} in {summary['iterations']} iterations, "
        f"{summary['wall_time_s']:.2f} s; wrote {args.out}/schedules.csv and summary.json"
    )
    return EXIT_OK
