"""What every solving command shares: exit codes, the problem options and files, device set-up."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from jaxvpp import io
from jaxvpp.coordination import distributed
from jaxvpp.errors import InputError
from jaxvpp.problem import Fleet, Market, Settings, random_fleet, synthetic_market

EXIT_OK, EXIT_NUMERICAL, EXIT_INPUT, EXIT_INFEASIBLE = 0, 1, 2, 3


def input_error(exc: Exception) -> int:
    """Report bad input (``error: <file, row, column or parameter: message>`` on stderr); returns exit code 2."""
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_INPUT


#: ``Ctrl-C`` (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130


def check_options(args: argparse.Namespace) -> None:
    """The numeric options of a solving command: ``--alpha`` in (0, 1), ``--dt-hours`` and ``--tol`` positive
    and finite, ``--max-iter`` at least 1. Raises :class:`InputError` naming the option."""
    io.validate_alpha(args.alpha)
    if not (math.isfinite(args.dt_hours) and args.dt_hours > 0):
        raise InputError(f"--dt-hours must be positive and finite, got {args.dt_hours}", column="--dt-hours")
    if args.tol is not None and not (math.isfinite(args.tol) and args.tol > 0):
        raise InputError(f"--tol must be positive and finite, got {args.tol}", column="--tol")
    if args.max_iter is not None and args.max_iter < 1:
        raise InputError(f"--max-iter must be at least 1, got {args.max_iter}", column="--max-iter")


def add_problem_arguments(p: argparse.ArgumentParser) -> None:
    """The input files and model options that every solving command takes (read by :func:`read_problem`)."""
    p.add_argument("--fleet", type=Path, help="fleet.csv (battery_id plus optional parameter columns)")
    p.add_argument("--scenarios", type=Path, help="scenarios.csv (scenario, probability, one price column per step)")
    p.add_argument("--target", type=Path, help="target.csv (step, target_mw): the required fleet sum of p_t")
    p.add_argument("--alpha", type=float, default=0.05, help="CVaR tail probability in (0, 1) (default 0.05)")
    p.add_argument("--dt-hours", type=float, default=1.0, help="step length in hours (default 1; 0.25 for 15-min)")
    p.add_argument(
        "--baseline",
        choices=("zero", "expected"),
        default="zero",
        help="loss baseline: Loss = -Revenue (zero) or E[Revenue] - Revenue (expected)",
    )


def example_inputs() -> tuple[list[str], Fleet, list[str], Market]:
    """The built-in example: 100 random batteries, 20 synthetic scenarios of 24 hourly steps (ids, fleet,
    step labels, market)."""
    fleet = random_fleet(100, seed=0)
    market = synthetic_market(20, 24, seed=0)
    ids = [f"bess_{i:03d}" for i in range(100)]
    steps = [f"{t:02d}:00" for t in range(24)]
    return ids, fleet, steps, market


def set_up_devices(devices: int, coordinator: str | None = None, num_processes: int = 1, process_id: int = 0) -> None:
    """Make JAX show ``devices`` devices before it starts (CPU: forced host devices), joining a multi-process
    run first if ``coordinator`` is given. Raises :class:`~jaxvpp.errors.InputError` naming the option."""

    if devices < 1:
        raise InputError(f"--devices must be at least 1, got {devices}", column="--devices")
    if coordinator is not None or num_processes != 1:
        if coordinator is None or num_processes < 2:
            raise InputError(
                "a multi-process run needs --coordinator HOST:PORT and --num-processes >= 2", column="--coordinator"
            )
        if not 0 <= process_id < num_processes:
            raise InputError(
                f"--process-id must lie in 0 ... {num_processes - 1}, got {process_id}", column="--process-id"
            )
        if devices % num_processes:
            raise InputError(
                f"--devices {devices} must be a multiple of --num-processes {num_processes} (an equal "
                "share per process)",
                column="--devices",
            )
        try:
            distributed.initialize(coordinator, num_processes, process_id, local_devices=devices // num_processes)
        except RuntimeError as exc:
            raise InputError(
                f"could not join the multi-process run at {coordinator}: {exc}", column="--coordinator"
            ) from exc
    elif devices > 1:
        distributed.use_cpu_devices(devices)
    try:
        distributed.fleet_mesh(devices)
    except ValueError as exc:
        raise InputError(str(exc), column="--devices") from None


def read_problem(args: argparse.Namespace):
    """The checked options and input files of a solving command (``coordinate``, ``sensitivity``, ``sweep``):
    ids, fleet, step labels, market, target (MW, or None; its rows matched to the scenarios' steps by label)
    and settings. Raises :class:`InputError`."""

    check_options(args)
    if (args.fleet is None) != (args.scenarios is None):
        raise InputError(
            "give both --fleet and --scenarios, or neither for the built-in example",
            column="--fleet" if args.fleet is None else "--scenarios",
        )
    if args.fleet is None:
        ids, fleet, steps, market = example_inputs()
    else:
        ids, fleet = io.read_fleet(args.fleet)
        steps, market = io.read_scenarios(args.scenarios)
    target = io.read_target(args.target, len(steps), step_labels=steps) if args.target is not None else None
    settings = Settings(dt_hours=args.dt_hours, alpha=args.alpha, baseline=args.baseline)
    return ids, fleet, steps, market, target, settings


def gap_steps(text: str) -> int:
    """The value of ``--fill-gaps``: a whole number of steps, at least 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = off), got {v}")
    return v


def add_fill_gaps_argument(p: argparse.ArgumentParser, what: str) -> None:
    """Add ``--fill-gaps STEPS`` (the gaps of ``what`` filled by linear interpolation) to a command."""
    p.add_argument(
        "--fill-gaps",
        type=gap_steps,
        default=0,
        metavar="STEPS",
        help=(
            f"fill runs of up to STEPS missing steps of {what} (empty or NaN cells, rows missing from the time "
            "grid) by linear interpolation in time; a longer run, or one at either end, is an error "
            "(default 0: every gap is an error)"
        ),
    )
