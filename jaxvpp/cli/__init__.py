"""The ``jaxvpp`` command line.

Exit codes: 0 success, 1 numerical error (nothing written), 2 bad input or an output path that cannot be
written (the message names file, row and column, the config key, the parameter or the path), 3 infeasible
target, 130 interrupted (``Ctrl-C``; nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

from jaxvpp.cli import backtest, market, run, solve, study
from jaxvpp.cli.common import EXIT_INFEASIBLE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_NUMERICAL, EXIT_OK, input_error
from jaxvpp.errors import InputError
from jaxvpp.files import InterruptedAfterWrite

__all__ = [
    "EXIT_INFEASIBLE",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_NUMERICAL",
    "EXIT_OK",
    "build_parser",
    "enable_compilation_cache",
    "main",
]


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
            "  jaxvpp sweep --param risk_weight --values 0:2:64 --out sweep/\n"
            "  jaxvpp backtest --prices prices.csv --out backtest/   a year of days, out of sample\n\n"
            "`jaxvpp COMMAND --help` describes each command. Exit codes: 0 success, 1 numerical error,\n"
            "2 bad input or an unwritable output path (file, row and column, config key, option or path\n"
            "named), 3 infeasible target, 130 interrupted. Outputs are written whole or not at all.\n"
            "Compiled programs are cached in ~/.cache/jaxvpp/xla (JAXVPP_CACHE_DIR; empty = no cache)."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run.register(sub)
    solve.register(sub)
    market.register(sub)
    study.register(sub)
    backtest.register(sub)
    return parser


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk between runs (``JAXVPP_CACHE_DIR``, default ~/.cache/jaxvpp/xla;
    set it to an empty string to switch the cache off)."""

    path = os.environ.get("JAXVPP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "jaxvpp", "xla"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    enable_compilation_cache()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InterruptedAfterWrite as exc:
        print(f"interrupted after writing {', '.join(exc.paths)} (complete)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except InputError as exc:  # e.g. an output path that fails only when written
        return input_error(exc)


if __name__ == "__main__":
    sys.exit(main())
