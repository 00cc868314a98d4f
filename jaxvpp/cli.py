"""The ``jaxvpp`` command line.

Exit codes: 0 success, 2 bad input (a message names file, row and column), 3 infeasible target.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="jaxvpp",
        description="Risk-aware (CVaR) battery fleet optimisation and ALADIN coordination in JAX.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    try:
        from jaxvpp import cli_market
    except ImportError:  # market-data phases not installed in this build
        cli_market = None
    if cli_market is not None:
        cli_market.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
