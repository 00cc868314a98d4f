"""Study subcommands: ``sensitivity`` (gradients of the optimum) and ``sweep`` (a batch of problems in one call).

Both read the files of ``jaxvpp coordinate`` (or use its built-in example), check --out before any work,
print ``error: <file, row, column, parameter or path: message>`` and exit with 2 on bad input, and write
their output folder whole or not at all (:mod:`jaxvpp.files`): nothing is written unless the whole study
succeeded.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jaxvpp import io
from jaxvpp.cli.common import (
    EXIT_INFEASIBLE,
    EXIT_NUMERICAL,
    EXIT_OK,
    add_problem_arguments,
    input_error,
    read_problem,
)
from jaxvpp.coordination.feasibility import check_target
from jaxvpp.errors import InputError
from jaxvpp.files import check_folder
from jaxvpp.problem import FLEET_COLUMNS
from jaxvpp.studies.sensitivity import sensitivities
from jaxvpp.studies.sweeps import SWEEP_PARAMS, check_values, parse_values, sweep

#: The files each command writes into --out (it owns them: one it does not write is removed).
SENSITIVITY_FILES = ("sensitivities.csv", "price_sensitivities.csv", "summary.json")
SWEEP_FILES = ("sweep.csv", "frontier.png", "summary.json")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sensitivity`` and ``sweep`` to the ``jaxvpp`` parser."""
    _add_sensitivity(sub)
    _add_sweep(sub)


def _common(p: argparse.ArgumentParser) -> None:

    add_problem_arguments(p)
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help="relative tolerance (default: ALADIN 1e-9 for sensitivity, 1e-8 for sweep; battery solver 1e-9)",
    )
    p.add_argument("--max-iter", type=int, default=None, help="iteration limit (default 100 ALADIN, 80 battery solver)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default results/)")


def _scenario_labels(path: Path | None, k: int) -> list[str]:
    if path is None:
        return [f"s{i + 1}" for i in range(k)]
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh, skipinitialspace=True) if any(c.strip() for c in r)]
    col = [c.strip() for c in rows[0]].index("scenario")
    return [r[col].strip() for r in rows[1:]]


def _inputs(args: argparse.Namespace):
    """Validated inputs: ids, fleet, step labels, market, scenario labels, target (or None), settings."""

    ids, fleet, steps, market, target, settings = read_problem(args)
    return ids, fleet, steps, market, _scenario_labels(args.scenarios, market.num_scenarios), target, settings


def _infeasible(fleet, target, settings, steps, path) -> str | None:

    bad = check_target(fleet, target, settings)
    if not bad:
        return None
    return f"infeasible target {path}: " + "; ".join(f"step {steps[t]} (#{t + 1}): {why}" for t, why in bad[:10])


# ----------------------------------------------------------------------------------------------------
# sensitivity
# ----------------------------------------------------------------------------------------------------


def _add_sensitivity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sensitivity",
        help="gradients of the (coordinated) optimum w.r.t. every fleet parameter, the prices and the target",
        description=(
            "Solve the fleet (coordinated to --target by ALADIN, or each battery alone without it) and differentiate "
            "the optimal total objective by implicit differentiation of the optimality conditions. Writes "
            "DIR/sensitivities.csv (battery_id, d_objective_d_<column> for every numeric fleet column: EUR per unit "
            "of the column), DIR/price_sensitivities.csv (step, d_objective_d_price_<scenario> in EUR per EUR/MWh, "
            "and with a target d_objective_d_target_mw in EUR per MW and coupling_price_eur_per_mwh) and "
            "DIR/summary.json (objective, status, d objective / d alpha, dt and each probability). The gradient "
            "is the derivative where the optimum is smooth: every battery with a quadratic cost > 0 and, with a "
            "target, at least one battery free to move at every step (summary.json: smooth, condition)."
        ),
    )
    _common(p)
    p.set_defaults(func=cmd_sensitivity)


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """``jaxvpp sensitivity``: write sensitivities.csv, price_sensitivities.csv and summary.json."""

    t0 = time.perf_counter()
    try:
        check_folder(args.out, option="--out", names=SENSITIVITY_FILES)
        ids, fleet, steps, market, labels, target, settings = _inputs(args)
    except InputError as exc:
        return input_error(exc)
    if target is not None:
        why = _infeasible(fleet, target, settings, steps, args.target)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return EXIT_INFEASIBLE
    sens = sensitivities(fleet, market, target, settings, tol=args.tol or 1e-9, max_iter=args.max_iter or 100)
    if sens.status == "infeasible_target":
        print(f"error: infeasible target {args.target}: the coupling price diverged", file=sys.stderr)
        return EXIT_INFEASIBLE
    per_battery = pd.DataFrame(
        {"battery_id": ids, **{f"d_objective_d_{c}": sens.d_objective_d_fleet[c] for c in FLEET_COLUMNS}}
    )
    per_step = pd.DataFrame(
        {"step": steps, **{f"d_objective_d_price_{s}": sens.d_objective_d_prices[k] for k, s in enumerate(labels)}}
    )
    if target is not None:
        per_step["d_objective_d_target_mw"] = sens.d_objective_d_target
        per_step["coupling_price_eur_per_mwh"] = sens.coupling_price_eur_per_mwh
    numbers = [
        per_battery.iloc[:, 1:].to_numpy(),
        per_step.iloc[:, 1:].to_numpy(),
        np.array([sens.objective_eur, sens.d_objective_d_alpha, sens.d_objective_d_dt_hours]),
    ]
    if not all(np.all(np.isfinite(a)) for a in numbers) or sens.status == "numerical_error":
        print(
            "error: the solve or its derivative has non-finite values (numerical error); nothing written",
            file=sys.stderr,
        )
        return EXIT_NUMERICAL
    summary = dict(
        objective_eur=sens.objective_eur,
        expected_revenue_eur=float(np.sum(sens.expected_revenue_eur)),
        cvar_eur=float(np.sum(sens.cvar_eur)),
        coordinated=target is not None,
        status=sens.status,
        converged=sens.converged,
        iterations=sens.iterations,
        smooth=sens.smooth,
        condition=None if not np.isfinite(sens.condition) else float(sens.condition),
        d_objective_d_alpha=sens.d_objective_d_alpha,
        d_objective_d_dt_hours=sens.d_objective_d_dt_hours,
        d_objective_d_probability={s: float(v) for s, v in zip(labels, sens.d_objective_d_probabilities)},
        num_batteries=len(ids),
        num_steps=len(steps),
        num_scenarios=int(market.num_scenarios),
        alpha=args.alpha,
        dt_hours=args.dt_hours,
        baseline=args.baseline,
        wall_time_s=time.perf_counter() - t0,
    )
    try:
        io.write_outputs(
            args.out,
            {
                "sensitivities.csv": per_battery.to_csv(index=False),
                "price_sensitivities.csv": per_step.to_csv(index=False),
                "summary.json": json.dumps(summary, indent=2) + "\n",
            },
            owned=SENSITIVITY_FILES,
            option="--out",
        )
    except InputError as exc:
        return input_error(exc)
    flag = "" if sens.smooth else " (not smooth here: see summary.json)"
    print(
        f"{len(ids)} batteries, {len(steps)} steps: objective {sens.objective_eur:.2f} EUR ({sens.status}, "
        f"{sens.iterations} iterations); gradients{flag} in {summary['wall_time_s']:.1f} s; wrote "
        f"{args.out}/sensitivities.csv, price_sensitivities.csv and summary.json"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# sweep
# ----------------------------------------------------------------------------------------------------


def _add_sweep(sub: argparse._SubParsersAction) -> None:

    params = "; ".join(f"{k}: {v}" for k, v in SWEEP_PARAMS.items())
    p = sub.add_parser(
        "sweep",
        help="solve the problem for many values of one parameter in one compiled, batched call",
        description=(
            "Solve the fleet (coordinated to --target by ALADIN, or each battery alone) for every value of one "
            f"parameter, all problems in one vmapped call. Parameters: {params}. Writes DIR/sweep.csv (one row "
            "per value: the value, objective_eur, expected_revenue_eur, degradation_eur, expected_profit_eur, "
            "cvar_eur, converged, status, iterations, coupling_residual_mw), DIR/frontier.png (expected profit "
            "against CVaR) and DIR/summary.json."
        ),
    )
    _common(p)
    p.add_argument("--param", required=True, help=f"the parameter to sweep: {', '.join(SWEEP_PARAMS)}")
    p.add_argument(
        "--values",
        required=True,
        help="a:b:n = n values from a to b inclusive (0:2:64 is 64 values 0, 2/63, ..., 2), or a comma "
        "list such as 0,0.5,1",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write frontier.png")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``jaxvpp sweep``: write sweep.csv, frontier.png and summary.json."""

    t0 = time.perf_counter()
    try:
        check_folder(args.out, option="--out", names=SWEEP_FILES)
        values = parse_values(args.values)
        ids, fleet, steps, market, _labels, target, settings = _inputs(args)
        check_values(args.param, values, has_target=target is not None)
    except InputError as exc:
        return input_error(exc)
    if target is not None and args.param != "target_scale":
        why = _infeasible(fleet, target, settings, steps, args.target)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return EXIT_INFEASIBLE
    t1 = time.perf_counter()
    table, _ = sweep(fleet, market, settings, target, args.param, values, tol=args.tol, max_iter=args.max_iter)
    t_solve = time.perf_counter() - t1
    ok = table["status"] != "infeasible_target"
    nums = table.loc[ok, ["objective_eur", "expected_revenue_eur", "cvar_eur"]].to_numpy()
    if not np.all(np.isfinite(nums)):
        print("error: the sweep produced non-finite values (numerical error); nothing written", file=sys.stderr)
        return EXIT_NUMERICAL
    files: dict[str, str | bytes] = {"sweep.csv": table.to_csv(index=False)}
    if not args.no_plot:
        from jaxvpp.plots import png_bytes, sweep_frontier

        what = "coordinated to the target" if target is not None else "each battery alone"
        files["frontier.png"] = png_bytes(
            sweep_frontier(table, args.param, alpha=args.alpha, subtitle=f"{len(ids)} batteries, {what}"), dpi=90
        )
    summary = dict(
        param=args.param,
        values=len(values),
        coordinated=target is not None,
        converged=int(table["converged"].sum()),
        num_batteries=len(ids),
        num_steps=len(steps),
        num_scenarios=int(market.num_scenarios),
        alpha=args.alpha,
        dt_hours=args.dt_hours,
        baseline=args.baseline,
        solve_time_s=t_solve,
        wall_time_s=time.perf_counter() - t0,
    )
    files["summary.json"] = json.dumps(summary, indent=2) + "\n"
    try:
        io.write_outputs(args.out, files, owned=SWEEP_FILES, option="--out")
    except InputError as exc:
        return input_error(exc)
    print(
        f"{len(values)} values of {args.param} x {len(ids)} batteries in one batched call: {summary['converged']} "
        f"converged; solve {t_solve:.1f} s (compilation included), {summary['wall_time_s']:.1f} s in all; wrote "
        f"{args.out}/sweep.csv" + ("" if args.no_plot else ", frontier.png") + " and summary.json"
    )
    return EXIT_OK
