"""Benchmark of fleet coordination to a community target against the centralized anchors.

T = 24 hourly steps, K = 20 scenarios, a binding target (half the uncoordinated fleet profile: feasible,
since every battery's schedule scaled towards zero is feasible) and two instances of each fleet size N:

* ``qp``: ``random_fleet(N, seed=42)`` (random quadratic costs q > 0);
* ``lp``: the same fleet with q = 0, so that the centralized problem is a linear program.

Each (method, instance, N) runs in a fresh subprocess and is timed there:

* interior-point ALADIN (``coordinate(method="aladin")``): iterations, compile time, time after
  compilation, time per iteration, status, objective gap to the best anchor, coupling residual;
* exchange ADMM (``coordinate(method="admm")``, 200 iterations at most; instance ``qp``, N <= 100 by
  default);
* the centralized anchors, ``jaxvpp.reference.solve_fleet_reference`` on the stacked coupled problem (cvxpy
  model building and solve): Clarabel on both instances, and on ``lp`` also HiGHS's interior point (IPX)
  and dual simplex (by default Clarabel and IPX up to N = 1000, the simplex up to N = 300, the ``lp``
  instance up to N = 1000);
* the whole ``jaxvpp coordinate`` process (start-up, reading the CSV files, compilation with the
  compilation cache switched off and, separately, warm, solve, writing) against the whole
  ``jaxvpp coordinate --method centralized`` process on the same files, with each anchor solver. The CLI
  solves centralized problems with Clarabel; for the HiGHS rows the same CLI runs in a process whose
  ``jaxvpp.reference.solve_fleet_reference`` is given ``solver=...`` (``--cli-solver`` below).

Every ratio is against the fastest anchor measured in the same run, on the same instance and N.

    .venv/bin/python benchmarks/coordination.py                     # full table (about 10 minutes, 2 cores)
    .venv/bin/python benchmarks/coordination.py --sizes 10,100 --process-sizes 100
    .venv/bin/python benchmarks/coordination.py --sizes '' --process-sizes '' --per-iteration-sizes 1000,3000,10000

Writes ``benchmarks/results/coordination.md`` and ``coordination.json`` (and the convergence plot
``coordination.png``); with ``--per-iteration-sizes`` also ``coordination_scaling.md`` / ``.json``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instances import K, T, fleet_and_market  # noqa: E402
from provenance import markdown_table, ratio, save_figure, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
THETA = 0.5
INSTANCES = {
    "qp": "random_fleet(N, seed=42), quadratic costs q > 0",
    "lp": "the same fleet with q = 0 (a linear program)",
}
ANCHORS = {"qp": ("clarabel",), "lp": ("clarabel", "highs-ipx", "highs-simplex")}
ANCHOR_LABEL = {"clarabel": "Clarabel", "highs-ipx": "HiGHS IPX", "highs-simplex": "HiGHS simplex"}
LABEL = {"aladin": "IP-ALADIN", "admm": "ADMM", **ANCHOR_LABEL}
SINGLE_CALL_ABOVE = 20_000  #: above this N the in-process ALADIN row is one call, compilation included


def _problem(n: int, instance: str = "qp"):
    import jax.numpy as jnp
    import numpy as np

    from jaxvpp.battery.solution import solve_batteries

    fleet, market = fleet_and_market(n, instance)
    free = np.asarray(jnp.sum(solve_batteries(fleet, market).net_mw, axis=0))
    return fleet, market, THETA * free


def run_one(method: str, n: int, instance: str) -> dict:
    """Measure one method on one instance at one fleet size (in this process)."""
    import numpy as np

    import jaxvpp
    from jaxvpp.coordination.api import coordinate

    fleet, market, target = _problem(n, instance)
    st = jaxvpp.Settings()
    res: dict = {"method": method, "instance": instance, "N": n}
    if method in ANCHORS["lp"]:
        from jaxvpp.reference import solve_fleet_reference

        t0 = time.perf_counter()
        ref = solve_fleet_reference(fleet, market, st, target, solver=method)
        res.update(
            anchor=True,
            time_s=time.perf_counter() - t0,
            compile_s=0.0,
            in_solver_s=float(ref["solve_time_s"]),
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
        if n > SINGLE_CALL_ABOVE:  # one call only: its time includes the compilation (a few seconds)
            r, t_run = first, t_first
            res["single_call"] = True
        else:
            t0 = time.perf_counter()
            r = coordinate(fleet, market, target, st, **kw)
            t_run = time.perf_counter() - t0
        hist = {k: np.asarray(v).tolist() for k, v in r.history.items() if not k.startswith("_")}
        res.update(
            anchor=False,
            time_s=t_run,
            compile_s=None if res.get("single_call") else max(t_first - t_run, 0.0),
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


def seeded_fleets(n: int, seeds: int) -> dict:
    """ALADIN's iterations and status on ``seeds`` random fleets ``random_fleet(n, seed=s)``, s = 0, 1, ...
    (instance qp: the same market, target THETA x each fleet's uncoordinated profile; one compilation)."""
    import jax.numpy as jnp
    import numpy as np

    import jaxvpp
    from jaxvpp.battery.solution import solve_batteries
    from jaxvpp.coordination.api import coordinate

    market, st = jaxvpp.synthetic_market(K, T, seed=7), jaxvpp.Settings()
    out: dict = {"N": n, "seeds": [], "iterations": [], "status": [], "coupling_residual_mw": []}
    for seed in range(seeds):
        fleet = jaxvpp.random_fleet(n, seed=seed)
        target = THETA * np.asarray(jnp.sum(solve_batteries(fleet, market).net_mw, axis=0))
        r = coordinate(fleet, market, target, st)
        out["seeds"].append(seed)
        out["iterations"].append(r.iterations)
        out["status"].append(r.status)
        out["coupling_residual_mw"].append(r.coupling_residual_mw)
    return out


def profile_iteration(n: int, at: int = 20, repeats: int = 5) -> dict:
    """Where one ALADIN iteration's time goes, at iteration ``at`` of the qp instance: each phase compiled on
    its own and timed at the same iterate (the fastest of ``repeats`` runs), the rest (the coupled solves,
    their refinement and the step's bookkeeping) as the whole iteration less those phases."""
    import jax
    import jax.numpy as jnp

    import jaxvpp
    from jaxvpp.battery.ipm import kkt_measures
    from jaxvpp.battery.kernel import kkt_residuals
    from jaxvpp.battery.qp import FLEET_QP_AXES
    from jaxvpp.coordination import aggregator as agg
    from jaxvpp.coordination.aladin import (
        aladin_problem,
        aladin_start,
        aladin_step,
        battery_factor,
        coupling_curvature,
        coupling_dual,
    )

    fleet, market, target = _problem(n, "qp")
    pb = aladin_problem(fleet, market, target, jaxvpp.Settings())
    step = jax.jit(aladin_step)
    state = aladin_start(pb)
    for _ in range(at):
        state = step(pb, state)
    fleet_map = lambda f, *axes: jax.vmap(f, in_axes=(FLEET_QP_AXES, *axes))  # noqa: E731

    @jax.jit
    def residuals(pb, st):
        return fleet_map(kkt_residuals, 0, 0, 0)(pb.qp, st.local.x, st.local.s, st.local.z)

    @jax.jit
    def factors(pb, st):
        return fleet_map(battery_factor, 0)(pb.qp, st.local.z / st.local.s)

    @jax.jit
    def curvatures(pb, fac, st):
        M = jax.vmap(coupling_curvature)(fac, pb.sc)
        D = agg.elastic_curvature(st.elastic, pb.rho, st.lam)
        zero = jnp.zeros((M.shape[0], M.shape[1]))
        return agg.factor_coupling(agg.AgentMessage(M, zero, zero), elastic_curvature=D)

    @jax.jit
    def measures(pb, st):
        dual = jax.vmap(coupling_dual, in_axes=(FLEET_QP_AXES, 0, None))(pb.qp, pb.sc, st.lam)
        return fleet_map(kkt_measures, 0, 0, 0, 0)(pb.qp, st.local.x, st.local.s, st.local.z, dual)

    def best(f, *args):
        jax.block_until_ready(f(*args))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t0)
        return min(times)

    fac = factors(pb, state)
    phases = {
        "whole iteration": best(step, pb, state),
        "residuals at the iterate": best(residuals, pb, state),
        "factorisations (net-power coordinates)": best(factors, pb, state),
        "curvatures and the aggregator's factor": best(curvatures, pb, fac, state),
        "measures of the new iterate": best(measures, pb, state),
    }
    rest = phases["whole iteration"] - sum(v for k, v in phases.items() if k != "whole iteration")
    phases["coupled solves (predictor, corrector, centrality correctors, refinement) and the step"] = rest
    return {"N": n, "at_iteration": at, "phases_s": phases}


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


def _subprocess(args: list[str], timeout: float, label: dict) -> dict:
    cmd = [sys.executable, __file__, *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {**label, "status": f"not finished in {timeout:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {**label, "status": "failed: " + (exc.stderr.strip().splitlines() or [""])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _coordinate_args(d: Path, out: str) -> list[str]:
    return [
        "coordinate",
        "--fleet",
        str(d / "fleet.csv"),
        "--scenarios",
        str(d / "scenarios.csv"),
        "--target",
        str(d / "target.csv"),
        "--quiet",
        "--out",
        str(d / out),
    ]


def whole_process(n: int, instance: str, anchors: list[str]) -> dict:
    """Time ``jaxvpp coordinate`` with the compilation cache off (cold) and warm, and the centralized process with
    each anchor solver, on the same files."""
    from jaxvpp import io

    fleet, market, target = _problem(n, instance)
    steps = [f"{t:02d}:00" for t in range(T)]
    out: dict = {"N": n, "instance": instance, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "fleet.csv").write_text(io.fleet_csv([f"b{i:05d}" for i in range(n)], fleet))
        (d / "scenarios.csv").write_text(io.scenarios_csv(steps, market))
        (d / "target.csv").write_text(io.target_csv(steps, target))
        exe = [str(Path(sys.executable).with_name("jaxvpp"))]
        cache = str(d / "xla-cache")
        # the warm run reuses the compilation cache that a first, untimed run writes
        subprocess.run(
            exe + _coordinate_args(d, "fill") + ["--method", "aladin"],
            capture_output=True,
            text=True,
            env=dict(os.environ, JAXVPP_CACHE_DIR=cache),
            check=True,
        )
        runs = [("aladin_cold", exe + ["--method", "aladin"], ""), ("aladin_warm", exe + ["--method", "aladin"], cache)]
        for a in anchors:
            cli = exe if a == "clarabel" else [sys.executable, __file__, "--cli-solver", a]
            runs.append((a, cli + ["--method", "centralized"], ""))
        for key, cmd, cache_dir in runs:
            # options after the subcommand's own: argparse takes them in any order
            full = cmd[:-2] + _coordinate_args(d, key) + cmd[-2:]
            t0 = time.perf_counter()
            proc = subprocess.run(
                full, capture_output=True, text=True, env=dict(os.environ, JAXVPP_CACHE_DIR=cache_dir)
            )
            wall = time.perf_counter() - t0
            summary = json.loads((d / key / "summary.json").read_text()) if proc.returncode == 0 else {}
            out["runs"][key] = dict(
                wall_s=wall,
                returncode=proc.returncode,
                status=summary.get("status") if proc.returncode == 0 else proc.stderr.strip()[-200:],
                objective_eur=summary.get("objective_eur"),
                iterations=summary.get("iterations"),
            )
    ok = {a: out["runs"][a]["wall_s"] for a in anchors if out["runs"][a]["returncode"] == 0}
    out["fastest_anchor"] = min(ok, key=ok.get) if ok else None
    base = ok.get(out["fastest_anchor"]) if ok else None
    for r in out["runs"].values():
        r["ratio_to_fastest_anchor"] = ratio(r["wall_s"], base)
    return out


def _cli_with_solver(solver: str, argv: list[str]) -> int:
    """Run the ``jaxvpp`` command line with ``solve_fleet_reference`` bound to ``solver`` (the HiGHS rows of the
    whole-process comparison)."""
    import functools

    import jaxvpp.reference
    from jaxvpp.cli import main

    jaxvpp.reference.solve_fleet_reference = functools.partial(jaxvpp.reference.solve_fleet_reference, solver=solver)
    return main(argv)


def _fastest_anchors(rows: list[dict]) -> dict:
    """(instance, N) -> the fastest anchor row that finished with a solution."""
    best: dict = {}
    for r in rows:
        if not r.get("anchor") or not isinstance(r.get("time_s"), float):
            continue
        if not str(r.get("status", "")).startswith("optimal"):
            continue
        key = (r["instance"], r["N"])
        if key not in best or r["time_s"] < best[key]["time_s"]:
            best[key] = r
    return best


def tables(rows: list[dict], processes: list[dict], instances: list[str]) -> list[tuple[str, str]]:
    """The markdown sections: one in-process table per instance, then the whole-process table."""
    best = _fastest_anchors(rows)
    objs: dict = {}
    for r in rows:
        if r.get("anchor") and isinstance(r.get("objective_eur"), float):
            key = (r["instance"], r["N"])
            objs[key] = min(objs.get(key, float("inf")), r["objective_eur"])
    sections = []
    for inst in instances:
        out = []
        for r in sorted((r for r in rows if r["instance"] == inst), key=lambda r: (r["N"], not r.get("anchor"))):
            b, f = best.get((inst, r["N"])), objs.get((inst, r["N"]))
            per_it = r.get("time_per_iteration_s")
            gap = None
            if f is not None and isinstance(r.get("objective_eur"), float):
                gap = f"{abs(r['objective_eur'] - f) / abs(f):.1e}"
            out.append(
                dict(
                    N=r["N"],
                    method=LABEL.get(r["method"], r["method"]),
                    status=r.get("status"),
                    iterations=r.get("iterations"),
                    compile_s=None if r.get("anchor") else r.get("compile_s"),
                    time_s=r.get("time_s"),
                    in_solver_s=r.get("in_solver_s"),
                    ratio=_x(ratio(r.get("time_s"), b["time_s"] if b else None)),
                    per_it_ms=per_it * 1e3 if per_it is not None else None,
                    gap=gap,
                    residual=f"{r['coupling_residual_mw']:.1e}" if "coupling_residual_mw" in r else None,
                    rss=r.get("peak_rss_mb"),
                )
            )
        body = markdown_table(
            out,
            [
                ("N", "N"),
                ("method", "method"),
                ("status", "status"),
                ("iterations", "iterations"),
                ("compile_s", "compile (s)"),
                ("time_s", "solve (s)"),
                ("in_solver_s", "of which in the solver (s)"),
                ("ratio", "time / fastest anchor"),
                ("per_it_ms", "per iteration (ms)"),
                ("gap", "objective gap to the best anchor"),
                ("residual", "coupling residual (MW)"),
                ("rss", "peak RSS (MB)"),
            ],
        )
        note = (
            f"Instance `{inst}`: {INSTANCES[inst]}. Anchors: {', '.join(ANCHOR_LABEL[a] for a in ANCHORS[inst])} "
            "(`jaxvpp.reference`, cvxpy model with explicit state of charge; the time includes building the "
            "cvxpy model). ALADIN and ADMM: the second call of `coordinate()` in the process (compile = first "
            "call less second). The ratio is the method's time over the fastest anchor's at the same N."
        )
        sections.append((f"In process, instance {inst}", note + "\n\n" + body))
    if processes:
        out = []
        for p in processes:
            for key, r in p["runs"].items():
                label = {"aladin_cold": "IP-ALADIN, compilation cache off", "aladin_warm": "IP-ALADIN, cache warm"}
                out.append(
                    dict(
                        instance=p["instance"],
                        N=p["N"],
                        run=label.get(key, f"--method centralized, {ANCHOR_LABEL.get(key, key)}"),
                        wall_s=r["wall_s"],
                        status=r["status"],
                        iterations=r["iterations"],
                        ratio=_x(r.get("ratio_to_fastest_anchor")),
                        goal=_goal(r, p["N"]) if key == "aladin_warm" else None,
                    )
                )
        body = markdown_table(
            out,
            [
                ("instance", "instance"),
                ("N", "N"),
                ("run", "process"),
                ("wall_s", "wall (s)"),
                ("status", "status"),
                ("iterations", "iterations"),
                ("ratio", "wall / fastest centralized process"),
                ("goal", "goal (warm): " + ", ".join(f"<= {g} at N = {n}" for n, g in PROCESS_GOAL.items())),
            ],
        )
        note = (
            "Whole processes on the same CSV files, from start-up to written results: `jaxvpp coordinate` "
            "(ALADIN) against `jaxvpp coordinate --method centralized` with each anchor solver."
        )
        sections.append(("Whole process", note + "\n\n" + body))
    return sections


def extra_sections(seeded: dict | None, profile: dict | None) -> list[tuple[str, str]]:
    """The sections on iteration counts over seeded fleets and on one iteration's phases."""
    out = []
    if seeded and seeded.get("iterations"):
        its = seeded["iterations"]
        body = (
            f"`random_fleet({seeded['N']}, seed=s)` for s = 0 ... {len(its) - 1}, the same market, target = {THETA} x "
            "each fleet's uncoordinated profile (instance qp), one process.\n\n"
            + markdown_table(
                [
                    {"seed": s, "iterations": i, "status": st, "res": c}
                    for s, i, st, c in zip(
                        seeded["seeds"], its, seeded["status"], seeded["coupling_residual_mw"], strict=True
                    )
                ],
                [
                    ("seed", "seed"),
                    ("iterations", "iterations"),
                    ("status", "status"),
                    ("res", "coupling residual (MW)"),
                ],
            )
            + f"\n\nIterations: median {sorted(its)[len(its) // 2]}, largest {max(its)} (goal: none above 50)."
        )
        out.append((f"Iterations on {len(its)} seeded fleets of {seeded['N']} batteries", body))
    elif seeded:
        out.append(("Iterations on seeded fleets", f"not measured: {seeded.get('status')}"))
    if profile and profile.get("phases_s"):
        ph = profile["phases_s"]
        whole = ph["whole iteration"]
        rows = [{"phase": k, "ms": v * 1e3, "share": v / whole, "us": v / profile["N"] * 1e6} for k, v in ph.items()]
        body = (
            f"Instance qp, N = {profile['N']}, at iteration {profile['at_iteration']}: each phase compiled on its own "
            "and timed at the same iterate (fastest of 5); the last row is the whole iteration less the phases above.\n\n"
            + markdown_table(
                rows,
                [
                    ("phase", "phase"),
                    ("ms", "time (ms)"),
                    ("us", "per battery (us)"),
                    ("share", "share of the iteration"),
                ],
            )
        )
        out.append(("One iteration, phase by phase", body))
    return out


def _x(v: float | None) -> str | None:
    return None if v is None else f"{v:.2f}"


#: the whole warm process's goal: at most this fraction of the fastest centralized process, by fleet size
PROCESS_GOAL = {1000: 0.15, 10000: 0.05}


def _goal(r: dict, n: int) -> str | None:
    q, goal = r.get("ratio_to_fastest_anchor"), PROCESS_GOAL.get(n)
    return None if q is None or goal is None else (f"met (<= {goal})" if q <= goal else f"not met (> {goal})")


def plot(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for r in sorted(rows, key=lambda r: r["N"]):
        h = r.get("history")
        if not h or r.get("instance") != "qp":
            continue
        it = np.arange(1, len(h["coupling_residual_mw"]) + 1)
        style = "-" if r["method"] == "aladin" else "--"
        label = f"{LABEL[r['method']]}, N={r['N']}"
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
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Coordination to a binding target, instance qp, T={T}, K={K}")
    return fig


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _limits(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--cli-solver":
        sys.exit(_cli_with_solver(sys.argv[2], sys.argv[3:]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000,10000", help="N for the in-process table ('' for none)")
    ap.add_argument("--instances", default="qp,lp", help="instances: qp (random q > 0) and/or lp (q = 0)")
    ap.add_argument("--admm-max", type=int, default=100, help="largest N for ADMM")
    ap.add_argument("--lp-max", type=int, default=1000, help="largest N for the lp instance (in process)")
    ap.add_argument(
        "--anchor-max",
        default="clarabel=1000,highs-ipx=1000,highs-simplex=300",
        help="largest N per centralized anchor in process",
    )
    ap.add_argument("--process-sizes", default="1000,10000", help="N for the whole-process comparison ('' for none)")
    ap.add_argument(
        "--process-anchor-max",
        default="clarabel=10000,highs-ipx=1000,highs-simplex=300",
        help="largest N per centralized anchor in the whole-process comparison (lp only up to --lp-max)",
    )
    ap.add_argument("--seeded", type=int, default=20, help="random fleets of --seeded-size batteries (0: none)")
    ap.add_argument("--seeded-size", type=int, default=1000)
    ap.add_argument("--profile-size", type=int, default=1000, help="N of the one-iteration profile (0: none)")
    ap.add_argument(
        "--per-iteration-sizes",
        default="",
        help="N for the per-iteration scaling probe (first 10 iterations), e.g. 1000,3000,10000,20000",
    )
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "N", "INSTANCE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        method, n, inst = args.one[0], int(args.one[1]), args.one[2]
        if method == "per_iteration":
            print(json.dumps(per_iteration(n)))
        elif method == "seeded":
            print(json.dumps(seeded_fleets(n, int(inst))))
        elif method == "profile":
            print(json.dumps(profile_iteration(n)))
        else:
            print(json.dumps(run_one(method, n, inst)))
        return
    instances = [s for s in args.instances.split(",") if s]
    limit = _limits(args.anchor_max)
    scaling = [
        _subprocess(["--one", "per_iteration", str(n), "qp"], args.timeout, {"N": n})
        for n in _ints(args.per_iteration_sizes)
    ]
    if scaling:
        body = markdown_table(
            scaling,
            [
                ("N", "N"),
                ("iterations", "iterations"),
                ("per_iteration_ms", "per iteration (ms)"),
                ("per_battery_iteration_us", "per battery and iteration (us)"),
            ],
        )
        write_results(
            "coordination_scaling",
            title="IP-ALADIN: time per battery and iteration",
            notes=f"First 10 iterations of a net-zero target, `random_fleet(N, seed=42)`, T = {T}, K = {K}; "
            "compiled first, the faster of two timed runs.",
            sections=[("Per-iteration cost against N", body)],
            data=scaling,
        )
        print(body)
    rows = []
    for n in _ints(args.sizes):
        for inst in instances:
            if inst == "lp" and n > args.lp_max:
                continue
            methods = ["aladin"] + (["admm"] if n <= args.admm_max and inst == "qp" else [])
            methods += [a for a in ANCHORS[inst] if n <= limit.get(a, 10**9)]
            for m in methods:
                r = _subprocess(["--one", m, str(n), inst], args.timeout, {"method": m, "N": n, "instance": inst})
                print(json.dumps({k: v for k, v in r.items() if k != "history"}), flush=True)
                rows.append(r)
    processes = []
    plimit = _limits(args.process_anchor_max)
    for n in _ints(args.process_sizes):
        for inst in instances:
            if inst == "lp" and n > args.lp_max:
                continue
            p = whole_process(n, inst, [a for a in ANCHORS[inst] if n <= plimit.get(a, 10**9)])
            print(json.dumps(p), flush=True)
            processes.append(p)
    seeded = (
        _subprocess(["--one", "seeded", str(args.seeded_size), str(args.seeded)], args.timeout, {})
        if args.seeded
        else None
    )
    profile = (
        _subprocess(["--one", "profile", str(args.profile_size), "qp"], args.timeout, {}) if args.profile_size else None
    )
    if not rows and not processes and not seeded and not profile:
        return
    sections = tables(rows, processes, [i for i in instances if any(r["instance"] == i for r in rows)])
    sections += extra_sections(seeded, profile)
    fig = save_figure(plot(rows), "coordination") if any(r.get("history") for r in rows) else None
    write_results(
        "coordination",
        title="Coordination to a binding target: IP-ALADIN, ADMM and the centralized anchors",
        notes=f"T = {T} hourly steps, K = {K} scenarios (`synthetic_market(K, T, seed=7)`), target = {THETA} x "
        "the uncoordinated fleet profile; every measurement in a fresh process."
        + ("\n\n![convergence](coordination.png)" if fig else ""),
        sections=sections,
        data={"rows": rows, "processes": processes, "seeded": seeded, "profile": profile},
    )
    for _, body in sections:
        print(body)


if __name__ == "__main__":
    main()
