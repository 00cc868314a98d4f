"""Benchmark of the main job, ``jaxvpp run``, on a year of prices: time per phase.

A synthetic price year (``jaxvpp synthetic --days 365 --seed 5 --start 2025-01-01``) at 15-minute and hourly
resolution, the default configuration (100 batteries; the ADMM comparison off, as by default), each run as a
whole process: once with an empty compilation cache (cold) and then again with the cache it filled (warm).
The phase times come from the run's ``summary.json``; the process time includes start-up and imports.

    .venv/bin/python benchmarks/main_job.py                  # both resolutions (about 3 minutes on 2 cores)
    .venv/bin/python benchmarks/main_job.py --resolutions 60 --admm

Writes ``benchmarks/results/main_job.md`` and ``main_job.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import markdown_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
JAXVPP = [sys.executable, "-m", "jaxvpp"]


def run_once(prices: Path, out: Path, cache: Path, admm: bool) -> dict:
    env = dict(os.environ, JAXVPP_CACHE_DIR=str(cache))
    cmd = JAXVPP + ["run", "--prices", str(prices), "--out", str(out / "results"), "--data-dir", str(out / "data")]
    cmd += ["--quiet"] + (["--admm"] if admm else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "results" / "summary.json").read_text())
    return {"process_s": wall, "phases_s": summary["phase_wall_time_s"], "aladin_iterations": summary["iterations"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", default="15,60", help="comma-separated step lengths in minutes")
    ap.add_argument("--admm", action="store_true", help="also run the ADMM comparison (--admm)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    rows, data = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for res in (int(r) for r in args.resolutions.split(",")):
            prices = tmp / f"prices_{res}.csv"
            subprocess.run(
                JAXVPP
                + ["synthetic", "--days", "365", "--resolution", str(res), "--seed", "5", "--start", "2025-01-01"]
                + ["--out", str(prices)],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            cache = tmp / f"cache_{res}"
            for state in ("cold", "warm"):
                r = run_once(prices, tmp / f"run_{res}_{state}", cache, args.admm)
                print(res, state, r, flush=True)
                data.append({"resolution_minutes": res, "cache": state, **r})
                rows.append(
                    {
                        "steps": f"{res} min",
                        "cache": state,
                        "process (s)": r["process_s"],
                        **{f"{k} (s)": v for k, v in r["phases_s"].items()},
                    }
                )
    write_results(
        "main_job",
        title="The main job on a year of prices: time per phase",
        notes=(
            "`jaxvpp run --prices FILE` with the default configuration (100 batteries, 20 scenarios, 28-day forecast "
            f"backtest, ALADIN, the 8-point frontier{', ADMM' if args.admm else '; ADMM off, the default'}) on a "
            "synthetic year (seed 5, 2025); each run a whole process, first with an empty compilation cache, "
            "then with the cache it filled. Phase times from summary.json."
        ),
        sections=[("Time per phase", markdown_table(rows))],
        data=data,
        out_dir=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
