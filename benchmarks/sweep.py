"""Benchmark of sweeps: one vmapped call against loops of separate runs.

The sweep ``--param risk_weight --values 0:2:64`` (64 problems), on ``random_fleet(N, seed=42)``, T = 24,
K = 20, with a binding target (half the uncoordinated fleet profile; coordinated by ALADIN) and without one
(every battery alone). Per fleet size and mode it measures:

* **sweep, in process**: :func:`jaxvpp.studies.sweeps.sweep`, one compiled call (compiled by a first call,
  then timed);
* **loop, in process**: 64 calls of ``coordinate()`` (with a target) or ``solve_batteries()`` (without),
  compiled by a first call, then timed; the two are timed three times, alternately, and the fastest of each
  counts (the machine may be shared);
* **loop of processes**: ``python -m jaxvpp coordinate`` once per value (CSV in, results out, compilation
  cache warm); ``--process-runs`` of them are timed and the mean is scaled to 64;
* **sweep process**: one ``python -m jaxvpp sweep ... --values 0:2:64`` (cache warm, and off).

The anchors here are the loops (what a user does without the sweep): the ratios are the loop's time over
the sweep's (throughput gain; the last two columns compare whole processes with whole processes). Each
case runs in a fresh process.

    .venv/bin/python benchmarks/sweep.py                         # N = 10, 100 (about 8 minutes on 2 cores)
    .venv/bin/python benchmarks/sweep.py --sizes 10 --process-runs 2

Writes ``benchmarks/results/sweep.md`` and ``sweep.json``.
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

from provenance import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
T, K, B = 24, 20, 64
REPEATS = 3
VALUES = "0:2:64"


def _problem(n: int):
    import jax.numpy as jnp
    import numpy as np

    import jaxvpp
    from jaxvpp.battery.solution import solve_batteries

    fleet, market = jaxvpp.random_fleet(n, seed=42), jaxvpp.synthetic_market(K, T, seed=7)
    free = np.asarray(jnp.sum(solve_batteries(fleet, market).net_mw, axis=0))
    return fleet, market, 0.5 * free


def in_process(n: int, coordinated: bool) -> dict:
    """Time the vmapped sweep and the in-process loop (this process)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxvpp
    from jaxvpp.battery.solution import solve_batteries
    from jaxvpp.coordination.api import coordinate
    from jaxvpp.studies.sweeps import parse_values, sweep

    fleet, market, target = _problem(n)
    target = target if coordinated else None
    st = jaxvpp.Settings()
    values = parse_values(VALUES)
    t0 = time.perf_counter()
    sweep(fleet, market, st, target, "risk_weight", values)
    t_first = time.perf_counter() - t0

    def one(v):
        fl = fleet._replace(risk_weight=jnp.full(n, v))
        if coordinated:
            return coordinate(fl, market, target, st).objective_eur
        return float(jnp.sum(jax.block_until_ready(solve_batteries(fl, market, st)).objective_eur))

    t0 = time.perf_counter()
    one(values[0])
    t_first_loop = time.perf_counter() - t0
    # the machine is shared: both are timed REPEATS times, alternately, and the fastest of each is reported
    t_sweep, t_loop = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        table, _ = sweep(fleet, market, st, target, "risk_weight", values)
        t_sweep.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        objs = [one(v) for v in values]
        t_loop.append(time.perf_counter() - t0)
    t_sweep, t_loop = min(t_sweep), min(t_loop)
    gap = float(np.max(np.abs(np.asarray(objs) - table.objective_eur.to_numpy()) / np.abs(np.asarray(objs))))
    return dict(
        N=n,
        coordinated=coordinated,
        sweep_s=t_sweep,
        sweep_compile_s=max(t_first - t_sweep, 0.0),
        loop_s=t_loop,
        loop_compile_s=max(t_first_loop - t_loop / B, 0.0),
        max_rel_gap=gap,
        converged=int(table.converged.sum()),
        iterations_max=int(table.iterations.max()),
        iterations_mean=float(table.iterations.mean()),
    )


def processes(n: int, coordinated: bool, runs: int) -> dict:
    """Time ``python -m jaxvpp coordinate`` per value and one ``python -m jaxvpp sweep`` (whole processes)."""
    import numpy as np

    from jaxvpp import io
    from jaxvpp.studies.sweeps import parse_values

    fleet, market, target = _problem(n)
    steps = [f"{t:02d}:00" for t in range(T)]
    ids = [f"b{i:05d}" for i in range(n)]
    values = parse_values(VALUES)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "scenarios.csv").write_text(io.scenarios_csv(steps, market))
        (d / "target.csv").write_text(io.target_csv(steps, target))
        (d / "fleet.csv").write_text(io.fleet_csv(ids, fleet))
        cache = str(d / "xla-cache")
        env = dict(os.environ, JAXVPP_CACHE_DIR=cache)
        tgt = ["--target", str(d / "target.csv")] if coordinated else []
        exe = [sys.executable, "-m", "jaxvpp"]

        def coord(i: int, v: float) -> list[str]:
            f = d / f"fleet_{i}.csv"
            f.write_text(io.fleet_csv(ids, fleet._replace(risk_weight=np.full(n, v))))
            return exe + [
                "coordinate",
                "--fleet",
                str(f),
                "--scenarios",
                str(d / "scenarios.csv"),
                *tgt,
                "--quiet",
                "--out",
                str(d / f"c{i}"),
            ]

        subprocess.run(coord(0, values[0]), cwd=ROOT, env=env, capture_output=True, check=True)  # fills the cache
        idx = np.linspace(0, B - 1, runs).round().astype(int)
        t0 = time.perf_counter()
        for i in idx:
            subprocess.run(coord(int(i), float(values[i])), cwd=ROOT, env=env, capture_output=True, check=True)
        out["process_per_run_s"] = (time.perf_counter() - t0) / runs
        out["process_runs"] = runs
        sw = exe + [
            "sweep",
            "--fleet",
            str(d / "fleet.csv"),
            "--scenarios",
            str(d / "scenarios.csv"),
            *tgt,
            "--param",
            "risk_weight",
            "--values",
            VALUES,
            "--out",
            str(d / "sw"),
        ]
        subprocess.run(sw, cwd=ROOT, env=env, capture_output=True, check=True)  # fills the cache
        for label, e in (("warm", env), ("cold", dict(os.environ, JAXVPP_CACHE_DIR=""))):
            t0 = time.perf_counter()
            subprocess.run(sw, cwd=ROOT, env=e, capture_output=True, check=True)
            out[f"sweep_process_{label}_s"] = time.perf_counter() - t0
    return out


def _child(kind: str, n: int, coordinated: bool, runs: int) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, str(n), str(int(coordinated)), str(runs)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_report(rows: list[dict]) -> str:
    lines = [
        "| N | mode | sweep, one vmapped call (s) | loop in process (s) | loop of processes (s, est.) | "
        "sweep process, cache warm / off (s) | throughput sweep / loop in process | sweep / loop of processes | "
        "sweep process (warm) / loop of processes | iterations max / mean | max rel. objective gap |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        proc_total = r["process_per_run_s"] * B
        lines.append(
            f"| {r['N']} | {'coordinated (ALADIN)' if r['coordinated'] else 'each battery alone'} | {r['sweep_s']:.2f} | "
            f"{r['loop_s']:.2f} | {proc_total:.0f} ({r['process_runs']} runs x {r['process_per_run_s']:.1f} s) | "
            f"{r['sweep_process_warm_s']:.1f} / {r['sweep_process_cold_s']:.1f} | {r['loop_s'] / r['sweep_s']:.2f}x | "
            f"{proc_total / r['sweep_s']:.0f}x | {proc_total / r['sweep_process_warm_s']:.1f}x | "
            + (
                f"{r['iterations_max']} / {r['iterations_mean']:.1f}"
                if r["coordinated"]
                else f"{r['iterations_max']} (lock-step)"
            )
            + f" | {r['max_rel_gap']:.0e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100")
    ap.add_argument("--process-runs", type=int, default=4, help="separate jaxvpp processes timed per case")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, n, coordinated, runs = args.one[0], int(args.one[1]), bool(int(args.one[2])), int(args.one[3])
        res = in_process(n, coordinated) if kind == "in" else processes(n, coordinated, runs)
        print(json.dumps(res))
        return
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        for coordinated in (False, True):
            r = _child("in", n, coordinated, args.process_runs)
            r.update(_child("proc", n, coordinated, args.process_runs))
            print(json.dumps(r), flush=True)
            rows.append(r)
    report = write_report(rows)
    write_results(
        "sweep",
        title="Sweeps: one vmapped call against loops of separate runs",
        notes=f"`--param risk_weight --values {VALUES}` ({B} problems), `random_fleet(N, seed=42)`, T = {T}, "
        f"K = {K}; coordinated: target = half the uncoordinated fleet profile. Loops in process: the fastest of "
        f"{REPEATS} timings, alternating with the sweep's. Loop of processes: `python -m jaxvpp coordinate` per "
        "value with a warm compilation cache, the measured runs' mean scaled to 64.",
        sections=[("Sweep against loops", report)],
        data=rows,
    )
    print(report)


if __name__ == "__main__":
    main()
