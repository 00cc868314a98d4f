"""The ``jaxvpp`` command line.

Exit codes: 0 success, 1 numerical error (nothing written), 2 bad input (the message names file, row and
column, the config key, or the parameter), 3 infeasible target.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

from jaxvpp.cli import market, run, solve, study
from jaxvpp.cli.common import EXIT_INFEASIBLE, EXIT_INPUT, EXIT_NUMERICAL, EXIT_OK

__all__ = [
    "EXIT_INFEASIBLE",
    "EXIT_INPUT",
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
            "  jaxvpp sweep --param risk_weight --values 0:2:64 --out sweep/\n\n"
            "`jaxvpp COMMAND --help` describes each command. Exit codes: 0 success, 1 numerical error,\n"
            "2 bad input (file, row and column, config key, or option named), 3 infeasible target.\n"
            "Compiled programs are cached in ~/.cache/jaxvpp/xla (JAXVPP_CACHE_DIR; empty = no cache)."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run.register(sub)
    solve.register(sub)
    market.register(sub)
    study.register(sub)
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
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
