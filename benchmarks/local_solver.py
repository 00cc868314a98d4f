"""Benchmark of the batched battery solver (issue: Phase IV).

For N in {1, 10, 100, 1000, 10000} batteries, T = 24 hourly steps, K = 20 scenarios, measures:

* jaxvpp (batched interior point, jit + vmap): compile time and time after compilation;
* a per-battery cvxpy + Clarabel loop;
* one stacked cvxpy + Clarabel problem holding the whole fleet;
* jaxopt's OSQP (BoxOSQP) under vmap on the same QPs in dense form;

with the largest objective gap to the stacked Clarabel solution and each run's peak resident memory. Each
(method, N) runs in a fresh subprocess so that peak memory is its own.

    .venv/bin/python benchmarks/local_solver.py                 # full table (about 10-20 minutes)
    .venv/bin/python benchmarks/local_solver.py --sizes 1,10,100 --quick

Writes ``benchmarks/out/local_solver.md`` (the table quoted in the README) and ``local_solver.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
T, K = 24, 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _problem(n: int):
    import jaxvpp

    return jaxvpp.random_fleet(n, seed=42), jaxvpp.synthetic_market(K, T, seed=7)


def run_one(method: str, n: int, repeats: int) -> dict:
    """Measure one method at one fleet size (in this process)."""
    import numpy as np

    import jaxvpp  # noqa: F401  (float64)
    from jaxvpp.problem import Settings, fleet_take

    fleet, market = _problem(n)
    st = Settings()
    base_rss = _peak_rss_mb()
    res: dict = {"method": method, "N": n}
    if method == "jaxvpp":
        from jaxvpp.battery.solution import solve_batteries

        t0 = time.perf_counter()
        sol = solve_batteries(fleet, market, st)
        sol.objective_eur.block_until_ready()
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sol = solve_batteries(fleet, market, st)
            sol.objective_eur.block_until_ready()
            times.append(time.perf_counter() - t0)
        res.update(
            time_s=min(times),
            compile_s=first - min(times),
            iterations=int(np.max(sol.iterations)),
            converged=bool(np.all(sol.converged)),
            objectives=np.asarray(sol.objective_eur).tolist(),
        )
    elif method == "clarabel_loop":
        from jaxvpp.reference import solve_battery_reference

        t0 = time.perf_counter()
        objs = [float(solve_battery_reference(fleet_take(fleet, i), market, st)["objective_eur"]) for i in range(n)]
        res.update(time_s=time.perf_counter() - t0, compile_s=0.0, objectives=objs)
    elif method == "clarabel_stacked":
        from jaxvpp.reference import solve_fleet_reference

        t0 = time.perf_counter()
        ref = solve_fleet_reference(fleet, market, st, None, mode="stacked")
        res.update(
            time_s=time.perf_counter() - t0,
            compile_s=0.0,
            objectives=np.asarray(ref["objective_per_battery_eur"]).tolist(),
        )
    elif method == "jaxopt_osqp":
        res.update(_run_osqp(fleet, market, st, repeats))
    else:
        raise ValueError(method)
    res["peak_rss_mb"] = _peak_rss_mb()
    res["rss_increase_mb"] = res["peak_rss_mb"] - base_rss
    return res


def _run_osqp(fleet, market, st, repeats: int) -> dict:
    """jaxopt's BoxOSQP under vmap on each battery's QP in dense form.

    OSQP is given jaxvpp's scaled QP (powers by P, money by a price scale): on the QP in physical units
    (prices of about 100 EUR/MWh beside MW-sized variables) it did not reach a feasible point within
    20000 iterations. Its objective is evaluated exactly from the returned (c, d).
    """
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from jaxopt import BoxOSQP

    from jaxvpp.battery.qp import Primal, apply_G, apply_Q, build_qp, linear_cost, rhs_h
    from jaxvpp.battery.solution import schedule_metrics

    T, K = market.horizon, market.num_scenarios
    n = 2 * T + 1 + K

    def unflat(v):
        return Primal(v[:T], v[T : 2 * T], v[2 * T], v[2 * T + 1 :])

    def flat(p):
        return jnp.concatenate([p.c, p.d, p.eta[None], p.u])

    def dense(b):
        qp, sc = build_qp(b, market, st)
        zero = jnp.zeros(n)
        G = jax.jacfwd(lambda v: apply_G(qp, unflat(v)))(zero)
        Q = jax.jacfwd(lambda v: flat(apply_Q(qp, unflat(v))))(zero)
        return Q, flat(linear_cost(qp)), G, rhs_h(qp), sc.power

    solver = BoxOSQP(tol=1e-6, maxiter=20000, jit=True)

    @jax.jit
    def solve(fleet):
        def one(b):
            Q, f, G, h, P = dense(b)
            sol = solver.run(params_obj=(Q, f), params_eq=G, params_ineq=(jnp.full_like(h, -jnp.inf), h))
            x = sol.params.primal[0]
            obj = schedule_metrics(b, market, st, P * x[:T], P * x[T : 2 * T])["objective_eur"]
            return obj, sol.state.iter_num

        return jax.vmap(one)(fleet)

    t0 = time.perf_counter()
    objs, iters = jax.block_until_ready(solve(fleet))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        objs, iters = jax.block_until_ready(solve(fleet))
        times.append(time.perf_counter() - t0)
    return dict(
        time_s=min(times),
        compile_s=first - min(times),
        objectives=np.asarray(objs).tolist(),
        iterations=int(np.max(iters)),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,10,100,1000,10000")
    ap.add_argument("--methods", default="jaxvpp,clarabel_loop,clarabel_stacked,jaxopt_osqp")
    ap.add_argument(
        "--max-n",
        default="clarabel_loop=1000,clarabel_stacked=10000,jaxopt_osqp=10",
        help="largest N per baseline (slow baselines are skipped above it)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.repeats)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    max_n = {k: int(v) for k, v in (kv.split("=") for kv in args.max_n.split(",") if kv)}
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sizes:
        for m in methods:
            if n > max_n.get(m, 10**9):
                continue
            cmd = [sys.executable, __file__, "--one", m, str(n), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode != 0:
                print(f"{m} N={n} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(
                f"{m:17s} N={n:6d}  time {r['time_s']:9.3f} s  compile {r['compile_s']:6.2f} s  "
                f"peak RSS {r['peak_rss_mb']:8.0f} MB",
                flush=True,
            )
    _write(results, sizes, methods)
    return 0


def _write(results: list[dict], sizes: list[int], methods: list[str]) -> None:
    import numpy as np

    by = {(r["method"], r["N"]): r for r in results}
    lines = [
        "| N | method | time after compile (s) | compile (s) | per battery (ms) | max rel. objective gap to stacked Clarabel | peak RSS (MB) | speed-up of jaxvpp |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        ref = by.get(("clarabel_stacked", n)) or by.get(("clarabel_loop", n))
        jx = by.get(("jaxvpp", n))
        for m in methods:
            r = by.get((m, n))
            if r is None:
                continue
            gap = ""
            if ref is not None and r is not ref:
                a, b = np.asarray(r["objectives"]), np.asarray(ref["objectives"])
                gap = f"{np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))):.1e}"
            speed = f"{r['time_s'] / jx['time_s']:.0f}x" if jx is not None and r is not jx else ""
            lines.append(
                f"| {n} | {m} | {r['time_s']:.3f} | {r['compile_s']:.2f} | {1e3 * r['time_s'] / n:.3f} | "
                f"{gap} | {r['peak_rss_mb']:.0f} | {speed} |"
            )
    text = "\n".join(lines) + "\n"
    (OUT / "local_solver.md").write_text(text)
    (OUT / "local_solver.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "objectives"} for r in results], indent=1)
    )
    print(text)


if __name__ == "__main__":
    sys.exit(main())
