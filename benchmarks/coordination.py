"""Benchmark of fleet coordination to a community target (issue: Phase V).

For N in {10, 100, 1000, 10000} batteries, T = 24 hourly steps, K = 20 scenarios, and a binding target
(half the uncoordinated fleet profile: feasible, since every battery's schedule scaled towards zero is
feasible), measures in fresh subprocesses:

* interior-point ALADIN (``coordinate(method="aladin")``): iterations, compile time, time after
  compilation, time per iteration, status, objective gap to Clarabel, coupling residual;
* exchange ADMM (``coordinate(method="admm")``, 200 iterations at most; N <= 1000 by default);
* centralized cvxpy + Clarabel on the stacked coupled problem (N <= 1000 by default);
* the whole ``jaxvpp coordinate`` process (start-up, reading the CSV files, compilation with the
  compilation cache switched off and, separately, warm, solve, writing) against ``jaxvpp coordinate --method centralized`` on the
  same files, side by side (N = 1000 by default).

    .venv/bin/python benchmarks/coordination.py                       # full table (about 15-25 minutes)
    .venv/bin/python benchmarks/coordination.py --sizes 10,100 --process-sizes 100
    .venv/bin/python benchmarks/coordination.py --sizes '' --per-iteration-sizes 1000,3000,10000,20000

Writes ``benchmarks/out/coordination.md`` (the tables quoted in the README), ``coordination.json`` and the
convergence plot ``coordination.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parent.parent
T, K, THETA = 24, 20, 0.5


def _problem(n: int):
    import jax.numpy as jnp
    import numpy as np

    import jaxvpp
    from jaxvpp.battery.solution import solve_batteries

    fleet, market = jaxvpp.random_fleet(n, seed=42), jaxvpp.synthetic_market(K, T, seed=7)
    free = np.asarray(jnp.sum(solve_batteries(fleet, market).net_mw, axis=0))
    return fleet, market, THETA * free


def run_one(method: str, n: int) -> dict:
    """Measure one method at one fleet size (in this process)."""
    import numpy as np

    import jaxvpp
    from jaxvpp.coordination.api import coordinate

    fleet, market, target = _problem(n)
    st = jaxvpp.Settings()
    res: dict = {"method": method, "N": n}
    if method == "centralized":
        from jaxvpp.reference import solve_fleet_reference

        t0 = time.perf_counter()
        ref = solve_fleet_reference(fleet, market, st, target)
        res.update(
            time_s=time.perf_counter() - t0,
            compile_s=0.0,
            iterations=int(ref["iterations"]),
            status=str(ref["status"]),
            objective_eur=float(ref["objective_eur"]),
            coupling_residual_mw=float(np.max(np.abs(np.sum(ref["net"], axis=0) - target))),
        )
    else:
        kw = dict(method=method) if method == "aladin" else dict(method=method, tol=1e-6, max_iter=200)
        t0 = time.perf_counter()
        first = coordinate(fleet, market, target, st, **kw)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = coordinate(fleet, market, target, st, **kw)
        t_run = time.perf_counter() - t0
        hist = {k: np.asarray(v).tolist() for k, v in r.history.items() if not k.startswith("_")}
        res.update(
            time_s=t_run,
            compile_s=max(t_first - t_run, 0.0),
            iterations=r.iterations,
            status=r.status,
            objective_eur=r.objective_eur,
            coupling_residual_mw=r.coupling_residual_mw,
            time_per_iteration_s=t_run / max(r.iterations, 1),
            history=hist,
            same_as_first=bool(abs(first.objective_eur - r.objective_eur) <= 1e-9 * abs(r.objective_eur)),
        )
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return res


def per_iteration(n: int, iterations: int = 10) -> dict:
    """Time per battery and iteration of the first ``iterations`` ALADIN iterations (net-zero target; compiled
    first, then the faster of two timed runs): how the per-iteration cost scales with N."""
    import jax
    import jax.numpy as jnp

    import jaxvpp
    from jaxvpp.coordination.aladin import aladin_ipm

    fleet, market, st = jaxvpp.random_fleet(n, seed=42), jaxvpp.synthetic_market(K, T, seed=7), jaxvpp.Settings()
    target = jnp.zeros(T)
    run = aladin_ipm.lower(fleet, market, target, st, max_iter=iterations).compile()
    jax.block_until_ready(run(fleet, market, target, st))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        r = jax.block_until_ready(run(fleet, market, target, st))
        times.append(time.perf_counter() - t0)
    it = int(r.iteration)
    return {
        "N": n,
        "iterations": it,
        "per_iteration_ms": min(times) / it * 1e3,
        "per_battery_iteration_us": min(times) / it / n * 1e6,
    }


def _subprocess(method: str, n: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--one", method, str(n)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"method": method, "N": n, "status": f"not finished in {timeout:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {"method": method, "N": n, "status": "failed: " + exc.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cmd(exe: str, d: Path, method: str) -> list[str]:
    return [
        exe,
        "coordinate",
        "--fleet",
        str(d / "fleet.csv"),
        "--scenarios",
        str(d / "scenarios.csv"),
        "--target",
        str(d / "target.csv"),
        "--method",
        method,
        "--quiet",
        "--out",
        str(d / method),
    ]


def whole_process(n: int) -> dict:
    """Time ``jaxvpp coordinate`` with the compilation cache off (cold) and warm, and ``--method centralized``,
    on the same files."""
    from jaxvpp import io

    fleet, market, target = _problem(n)
    steps = [f"{t:02d}:00" for t in range(T)]
    out: dict = {"N": n}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "fleet.csv").write_text(io.fleet_csv([f"b{i:05d}" for i in range(n)], fleet))
        (d / "scenarios.csv").write_text(io.scenarios_csv(steps, market))
        (d / "target.csv").write_text(io.target_csv(steps, target))
        exe = str(Path(sys.executable).with_name("jaxvpp"))
        runs = [("aladin", "cold", ""), ("aladin", "warm", str(d / "xla-cache")), ("centralized", "", "")]
        # the warm run reuses the compilation cache that a first, untimed run writes
        subprocess.run(
            _cmd(exe, d, "aladin"),
            capture_output=True,
            text=True,
            env=dict(os.environ, JAXVPP_CACHE_DIR=str(d / "xla-cache")),
            check=True,
        )
        for method, cache, cache_dir in runs:
            env = dict(os.environ, JAXVPP_CACHE_DIR=cache_dir)
            t0 = time.perf_counter()
            proc = subprocess.run(_cmd(exe, d, method), capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            summary = json.loads((d / method / "summary.json").read_text()) if proc.returncode == 0 else {}
            out[method + (f"_{cache}" if cache else "")] = dict(
                wall_s=wall,
                returncode=proc.returncode,
                status=summary.get("status"),
                objective_eur=summary.get("objective_eur"),
                iterations=summary.get("iterations"),
            )
    for cache in ("cold", "warm"):
        out[f"ratio_{cache}"] = out[f"aladin_{cache}"]["wall_s"] / out["centralized"]["wall_s"]
    return out


def _fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def write_report(rows: list[dict], processes: list[dict]) -> str:
    ref = {r["N"]: r.get("objective_eur") for r in rows if r["method"] == "centralized"}
    lines = [
        "| N | method | status | iterations | compile (s) | solve (s) | per iteration (ms) | "
        "objective gap to Clarabel | coupling residual (MW) | peak RSS (MB) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["N"], r["method"])):
        gap = "-"
        if ref.get(r["N"]) is not None and isinstance(r.get("objective_eur"), float):
            gap = f"{abs(r['objective_eur'] - ref[r['N']]) / abs(ref[r['N']]):.1e}"
        per_it = r.get("time_per_iteration_s")
        lines.append(
            f"| {r['N']} | {r['method']} | {r.get('status', '-')} | {r.get('iterations', '-')} | "
            f"{_fmt(r.get('compile_s'), '.1f')} | {_fmt(r.get('time_s'), '.2f')} | "
            f"{_fmt(per_it * 1e3 if per_it is not None else None, '.1f')} | {gap} | "
            f"{_fmt(r.get('coupling_residual_mw'), '.1e')} | {_fmt(r.get('peak_rss_mb'), '.0f')} |"
        )
    if processes:
        lines += [
            "",
            "Whole process, `jaxvpp coordinate` from CSV files to written results:",
            "",
            "| N | ALADIN, compilation cache off | ALADIN, cache warm | --method centralized | "
            "ratio cold / warm | goal <= 0.25 |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for p in processes:
            a, w, c = p["aladin_cold"], p["aladin_warm"], p["centralized"]
            lines.append(
                f"| {p['N']} | {a['wall_s']:.1f} s ({a['status']}, {a['iterations']} it) | "
                f"{w['wall_s']:.1f} s | {c['wall_s']:.1f} s ({c['status']}) | "
                f"{p['ratio_cold']:.2f} / {p['ratio_warm']:.2f} | "
                f"cold {'met' if p['ratio_cold'] <= 0.25 else 'NOT met'}, "
                f"warm {'met' if p['ratio_warm'] <= 0.25 else 'NOT met'} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for r in sorted(rows, key=lambda r: r["N"]):
        h = r.get("history")
        if not h:
            continue
        it = np.arange(1, len(h["coupling_residual_mw"]) + 1)
        style = "-" if r["method"] == "aladin" else "--"
        label = f"{'IP-ALADIN' if r['method'] == 'aladin' else 'ADMM'}, N={r['N']}"
        axes[0].semilogy(it, np.asarray(h["coupling_residual_mw"]) / r["N"], style, label=label)
        if r["method"] == "aladin":
            kkt = np.maximum.reduce([np.asarray(h[k]) for k in ("primal_residual", "dual_residual", "gap")])
            axes[1].semilogy(it, kkt, style, label=label)
    axes[0].set(
        xlabel="iteration", ylabel="coupling residual per battery (MW)", title="max_t |sum_i p_it - target_t| / N"
    )
    axes[1].set(xlabel="iteration", ylabel="max(primal, dual, gap) (relative)", title="IP-ALADIN optimality measures")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Coordination to a binding target, T={T}, K={K}")
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000,10000")
    ap.add_argument("--admm-max", type=int, default=1000, help="largest N for ADMM")
    ap.add_argument("--centralized-max", type=int, default=1000, help="largest N for centralized Clarabel")
    ap.add_argument("--process-sizes", default="1000", help="N for the whole-process comparison ('' for none)")
    ap.add_argument(
        "--per-iteration-sizes",
        default="",
        help="N for the per-iteration scaling probe (first 10 iterations), e.g. 1000,3000,10000,20000",
    )
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        if args.one[0] == "per_iteration":
            print(json.dumps(per_iteration(int(args.one[1]))))
        else:
            print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    scaling = [_subprocess("per_iteration", int(n), args.timeout) for n in args.per_iteration_sizes.split(",") if n]
    if scaling:
        OUT.mkdir(exist_ok=True)
        lines = ["| N | per iteration (ms) | per battery and iteration (us) |", "|---:|---:|---:|"]
        lines += [f"| {r['N']} | {r['per_iteration_ms']:.1f} | {r['per_battery_iteration_us']:.1f} |" for r in scaling]
        (OUT / "coordination_scaling.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        if not args.sizes:
            return
    OUT.mkdir(exist_ok=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        methods = (
            ["aladin"]
            + (["admm"] if n <= args.admm_max else [])
            + (["centralized"] if n <= args.centralized_max else [])
        )
        for m in methods:
            r = _subprocess(m, n, args.timeout)
            print(json.dumps({k: v for k, v in r.items() if k != "history"}), flush=True)
            rows.append(r)
    processes = []
    for n in [int(s) for s in args.process_sizes.split(",") if s]:
        p = whole_process(n)
        print(json.dumps(p), flush=True)
        processes.append(p)
    report = write_report(rows, processes)
    (OUT / "coordination.md").write_text(report)
    (OUT / "coordination.json").write_text(json.dumps({"rows": rows, "processes": processes}, indent=1))
    plot(rows, OUT / "coordination.png")
    print(report)


if __name__ == "__main__":
    main()
