"""Benchmark of the batched battery solver (every battery alone, no target) against the centralized anchors.

For N in {1, 10, 100, 1000, 10000} batteries, T = 24 hourly steps, K = 20 scenarios and two instances,
``qp`` (``random_fleet(N, seed=42)``, random quadratic costs q > 0) and ``lp`` (the same fleet with q = 0, a
linear program), measures:

* jaxvpp (batched interior point, jit + vmap): compile time and time after compilation (fastest of
  ``--repeats`` calls);
* the anchors of ``jaxvpp.reference`` (cvxpy model with explicit state of charge; building the model is
  timed too): a per-battery Clarabel loop, one stacked Clarabel problem holding the whole fleet and, on
  ``lp``, the stacked problem with HiGHS's interior point (IPX) and with its dual simplex;
* jaxopt's OSQP (BoxOSQP) under vmap on the same QPs in dense form (a baseline, not an anchor: it stops
  about 1e-2 off the optimum);

with the largest objective gap to the stacked Clarabel solution and each run's peak resident memory. Each
(method, instance, N) runs in a fresh subprocess so that peak memory is its own. Every ratio is against the
fastest anchor measured in the same run, on the same instance and N.

    .venv/bin/python benchmarks/local_solver.py                 # full table (about 5 minutes on 2 cores)
    .venv/bin/python benchmarks/local_solver.py --sizes 1,10,100 --repeats 1

Writes ``benchmarks/results/local_solver.md`` and ``local_solver.json``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instances import K, T, fleet_and_market  # noqa: E402
from provenance import markdown_table, ratio, write_results  # noqa: E402

INSTANCES = {
    "qp": "random_fleet(N, seed=42), quadratic costs q > 0",
    "lp": "the same fleet with q = 0 (a linear program)",
}
#: method -> the reference solver it runs (the anchors)
ANCHORS = {
    "clarabel_loop": "clarabel",
    "clarabel_stacked": "clarabel",
    "highs_ipx": "highs-ipx",
    "highs_simplex": "highs-simplex",
}
LP_ONLY = ("highs_ipx", "highs_simplex")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(method: str, n: int, instance: str, repeats: int) -> dict:
    """Measure one method on one instance at one fleet size (in this process)."""
    import numpy as np

    import jaxvpp  # noqa: F401  (float64)
    from jaxvpp.problem import Settings, fleet_take

    fleet, market = fleet_and_market(n, instance)
    st = Settings()
    base_rss = _peak_rss_mb()
    res: dict = {"method": method, "instance": instance, "N": n, "anchor": method in ANCHORS}
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
    elif method in ANCHORS:
        from jaxvpp.reference import solve_fleet_reference

        t0 = time.perf_counter()
        ref = solve_fleet_reference(fleet, market, st, None, mode="stacked", solver=ANCHORS[method])
        res.update(
            time_s=time.perf_counter() - t0,
            compile_s=0.0,
            in_solver_s=float(ref["solve_time_s"]),
            status=str(ref["status"]),
            iterations=int(ref["iterations"]),
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
    ap.add_argument("--instances", default="qp,lp", help="qp (random q > 0) and/or lp (q = 0)")
    ap.add_argument("--methods", default="jaxvpp,clarabel_loop,clarabel_stacked,highs_ipx,highs_simplex,jaxopt_osqp")
    ap.add_argument(
        "--max-n",
        default="clarabel_loop=1000,clarabel_stacked=10000,highs_ipx=1000,highs_simplex=100,jaxopt_osqp=10",
        help="largest N per method (slow ones are skipped above it)",
    )
    ap.add_argument(
        "--lp-max-n",
        default="clarabel_loop=100,clarabel_stacked=1000,jaxvpp=1000,jaxopt_osqp=0",
        help="tighter limits on the lp instance (the qp instance carries the large sizes)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "N", "INSTANCE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.one[2], args.repeats)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    instances = [i for i in args.instances.split(",") if i]
    max_n = {k: int(v) for k, v in (kv.split("=") for kv in args.max_n.split(",") if kv)}
    lp_max = {**max_n, **{k: int(v) for k, v in (kv.split("=") for kv in args.lp_max_n.split(",") if kv)}}
    results = []
    for inst in instances:
        for n in sizes:
            for m in methods:
                if n > (lp_max if inst == "lp" else max_n).get(m, 10**9) or (m in LP_ONLY and inst != "lp"):
                    continue
                cmd = [sys.executable, __file__, "--one", m, str(n), inst, "--repeats", str(args.repeats)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if proc.returncode != 0:
                    print(f"{m} {inst} N={n} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    results.append(dict(method=m, instance=inst, N=n, status="failed", anchor=m in ANCHORS))
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append(r)
                print(
                    f"{m:17s} {inst} N={n:6d}  time {r['time_s']:9.3f} s  compile {r['compile_s']:6.2f} s  "
                    f"peak RSS {r['peak_rss_mb']:8.0f} MB",
                    flush=True,
                )
    _write(results, sizes, methods, instances)
    return 0


def _write(results: list[dict], sizes: list[int], methods: list[str], instances: list[str]) -> None:
    import numpy as np

    by = {(r["method"], r["instance"], r["N"]): r for r in results}
    sections = []
    for inst in instances:
        rows = []
        for n in sizes:
            ref = by.get(("clarabel_stacked", inst, n)) or by.get(("clarabel_loop", inst, n))
            jx = by.get(("jaxvpp", inst, n))
            timed = [by.get((m, inst, n)) for m in ANCHORS]
            timed = [r for r in timed if r is not None and "time_s" in r]
            fastest = min(timed, key=lambda r: r["time_s"]) if timed else None
            for m in methods:
                r = by.get((m, inst, n))
                if r is None:
                    continue
                gap = None
                if ref is not None and r is not ref and "objectives" in r:
                    a, b = np.asarray(r["objectives"]), np.asarray(ref["objectives"])
                    gap = f"{np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))):.1e}"
                t = r.get("time_s")
                rows.append(
                    dict(
                        N=n,
                        method=m + (" (anchor)" if r.get("anchor") else ""),
                        status=r.get("status")
                        or ({True: "converged", False: "not converged"}[r["converged"]] if "converged" in r else None),
                        time_s=t,
                        compile_s=None if r.get("anchor") else r.get("compile_s"),
                        in_solver_s=r.get("in_solver_s"),
                        per_battery_ms=1e3 * t / n if t is not None else None,
                        ratio=_x(ratio(t, fastest["time_s"] if fastest else None)),
                        vs_jaxvpp=_x(ratio(t, jx.get("time_s") if jx else None)) if r is not jx else None,
                        gap=gap,
                        rss=r.get("peak_rss_mb"),
                    )
                )
        body = markdown_table(
            rows,
            [
                ("N", "N"),
                ("method", "method"),
                ("status", "status"),
                ("time_s", "time after compile (s)"),
                ("compile_s", "compile (s)"),
                ("in_solver_s", "of which in the solver (s)"),
                ("per_battery_ms", "per battery (ms)"),
                ("ratio", "time / fastest anchor"),
                ("vs_jaxvpp", "time / jaxvpp"),
                ("gap", "max rel. objective gap to stacked Clarabel"),
                ("rss", "peak RSS (MB)"),
            ],
        )
        note = (
            f"Instance `{inst}`: {INSTANCES[inst]}. jaxvpp: fastest of the timed calls of the compiled solver "
            "(float64). Anchors: the whole `jaxvpp.reference` call, cvxpy model building included (Clarabel "
            "tolerances 1e-10). The objective gap is per battery, relative to max(1, |objective|)."
        )
        sections.append((f"Instance {inst}", note + "\n\n" + body))
    write_results(
        "local_solver",
        title="The batched battery solver against the centralized anchors (every battery alone)",
        notes=f"T = {T} hourly steps, K = {K} scenarios (`synthetic_market(K, T, seed=7)`); each (method, "
        "instance, N) in a fresh process.",
        sections=sections,
        data=[{k: v for k, v in r.items() if k != "objectives"} for r in results],
    )
    for _, body in sections:
        print(body)


def _x(v: float | None) -> str | None:
    return None if v is None else f"{v:.3g}"


if __name__ == "__main__":
    sys.exit(main())
