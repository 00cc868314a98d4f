"""jaxvpp on a GPU: the answer against the CPU's, the battery solver and ALADIN at growing N, a sweep.

Run it through ``benchmarks/gpu.sh`` (which sets ``PYTHONPATH``, float64 and a last-resort ``timeout``)::

    bash benchmarks/gpu.sh                    # the full plan, within 8 minutes; results in $OUT or --out DIR
    bash benchmarks/gpu.sh --smoke --out DIR  # tiny sizes (about a minute on a 2-core CPU)
    bash benchmarks/gpu.sh --cpu-reference    # this CPU's time per battery-iteration (N = 1000, 10000)
    bash benchmarks/gpu.sh --stamp            # before copying the tree to a machine without .git: the commit

Steps, each with its own time budget and each catching its own failure (out of memory, any error), so that
the later steps still run:

1. ``correctness``: a small fleet solved (battery solver and ALADIN) on the default device and on
   ``jax.devices("cpu")``: the objective within 1e-9 relative and the same iteration counts;
2. ``solver``: ``solve_batteries`` at N = 1000 ... 1,000,000: compilation (first call minus second call),
   solve, battery-iterations and the time per battery-iteration;
3. ``aladin``: ``coordinate`` at N = 1000 ... 100,000 to half the uncoordinated fleet's net power:
   iterations, time per iteration, compilation, status;
4. ``sweep``: 64 problems of 1000 batteries (risk weight over 64 values), without and with a target;
5. ``slots``: the battery solver's slot count (``chunk_size``) at N = 100,000, then N = 1,000,000 with the
   fastest one;
6. ``live_log``: ALADIN with the live log (a host callback per iteration) against the run without it.

The solvers cannot be stopped inside a call, so a budget is kept by not starting a size whose estimated
time (from the size before it) exceeds what is left. A step's budget is what is left of the total less the
budgets of the steps after it, so time a step leaves unused goes to the next. The results (``gpu.md``,
``gpu.json``) are rewritten after every measurement, so a run stopped from outside keeps what it finished.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # every budget counts from the driver's start

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from provenance import ROOT, markdown_table, provenance, write_results  # noqa: E402

import jaxvpp  # noqa: E402

T, K = 24, 20  # hourly steps, price scenarios
FLEET_SEED, MARKET_SEED = 42, 7
THETA = 0.5  # ALADIN's target: THETA x the uncoordinated fleet's net power
SOLVER_TOL, SOLVER_MAX_ITER = 1e-9, 80  # solve_batteries' defaults
ALADIN_TOL = 1e-8  # coordinate's default
STAMP = ROOT / "benchmarks" / "out" / "gpu_commit.txt"
COMMIT_ENV = "JAXVPP_COMMIT"
#: Packages the GPU image lacks; the run records whether any of them was imported.
ABSENT_ON_GPU = ("cvxpy", "clarabel", "highspy", "jaxopt", "optax")

#: The goals the GPU results are read against.
GOALS = {
    "aladin_100k": "ALADIN at N = 100,000 (T = 24, K = 20) coordinated in at most 10 s including compilation",
    "solver_1m": "the battery solver at N = 1,000,000 in at most 5 s (the solve after compilation)",
    "speedup_100k": "time per battery-iteration at N = 100,000 at least 20x below the 2-core CPU's",
}

#: This project's 2-core development CPU (AMD EPYC, load average about 1.5), a clean
#: checkout: microseconds per battery-iteration after compilation (the second call), from
#: ``bash benchmarks/gpu.sh --cpu-reference`` (the ``cpu-reference`` plan; see docs/gpu.md).
CPU_REFERENCE: dict[str, Any] = {
    "machine": "AMD EPYC, 2 cores",
    "command": "bash benchmarks/gpu.sh --cpu-reference",
    "commit": "6b9f7a0",
    "date_utc": "2026-12-01 22:16",
    "solver_us": {1000: 12.0, 10000: 17.1},
    "aladin_us": {1000: 33.5, 10000: 45.8},
}


# --------------------------------------------------------------------------------------------------
# Plans and budgets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a run measures and the seconds each step may take."""

    name: str
    steps: tuple[str, ...]
    budgets: dict[str, float]  #: seconds per step; they add up to the total
    correctness_n: int = 100
    solver_sizes: tuple[int, ...] = (1000, 10000, 100000, 1000000)
    aladin_sizes: tuple[int, ...] = (1000, 10000, 100000)
    sweep_problems: int = 64
    sweep_n: int = 1000
    slots_n: int = 100000
    slots: tuple[int, ...] = (65536, 16384, 4096, 1024)  #: most slots first: fewest rounds
    slots_big_n: int = 1000000
    live_log_n: int = 10000
    results_name: str = "gpu"

    @property
    def total_s(self) -> float:
        return float(sum(self.budgets[s] for s in self.steps))


ALL_STEPS = ("correctness", "solver", "aladin", "sweep", "slots", "live_log")
PLANS = {
    "full": Plan(
        "full",
        ALL_STEPS,
        {"correctness": 50, "solver": 100, "aladin": 160, "sweep": 40, "slots": 80, "live_log": 20},
    ),
    "smoke": Plan(
        "smoke",
        ALL_STEPS,
        # caps, not times (about a minute in all on a quiet 2-core CPU): wide enough that a loaded machine
        # (the test suite's two workers) still fits each size's second, timed call
        {"correctness": 80, "solver": 100, "aladin": 100, "sweep": 60, "slots": 50, "live_log": 50},
        correctness_n=10,
        solver_sizes=(10, 100),
        aladin_sizes=(10, 100),
        sweep_problems=2,
        sweep_n=10,
        slots_n=100,
        slots=(32,),
        slots_big_n=100,
        live_log_n=10,
    ),
    "cpu-reference": Plan(
        "cpu-reference",
        ("solver", "aladin"),
        {"solver": 300, "aladin": 900},
        solver_sizes=(1000, 10000),
        aladin_sizes=(1000, 10000),
        results_name="gpu_cpu_reference",
    ),
}

TITLES = {
    "correctness": "Correctness: the default device against the CPU",
    "solver": "Battery solver",
    "aladin": "ALADIN coordination",
    "sweep": "Sweep",
    "slots": "Battery solver: slot count",
    "live_log": "ALADIN with the live log",
}


def run_series(
    items: Sequence[Any],
    measure: Callable[[Any, float], dict],
    estimate: Callable[[dict, Any], float | None],
    budget_s: float,
    *,
    key: str = "N",
    clock: Callable[[], float] = time.perf_counter,
    on_row: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Measure ``items`` in turn within ``budget_s`` seconds; one row per item.

    ``measure(item, seconds_left)`` returns a row; ``estimate(last_row, item)`` the seconds the item would take
    (None: no estimate, run it). The series stops at the first item whose estimate exceeds the time left, and
    after an item that failed (its exception is recorded): the items after it get a row saying so.
    """
    rows: list[dict] = []
    start = clock()
    last: dict | None = None
    for i, item in enumerate(items):
        left = budget_s - (clock() - start)
        est = estimate(last, item) if last is not None else None
        stop = None
        if left <= 0:
            stop = f"skipped: no time left of the step's {budget_s:.0f} s"
        elif est is not None and est > left:
            stop = f"skipped: estimated {est:.0f} s > {left:.0f} s left"
        if stop is None:
            try:
                row = {key: item, **measure(item, left)}
            except Exception as exc:  # noqa: BLE001 (a failed size is a result, and the later steps run)
                row = {key: item, "status": "failed: " + describe(exc)}
                stop = "not run: a smaller one failed"
            else:
                if est is not None:
                    row["estimated_s"] = est
                last = row
            rows.append(row)
            if stop is not None:
                rows += [{key: rest, "status": stop} for rest in items[i + 1 :]]
                break
        else:
            row = {key: item, "status": stop}
            if est is not None:
                row["estimated_s"] = est
            rows.append(row)
            rows += [{key: rest, "status": "not run: a smaller one did not fit"} for rest in items[i + 1 :]]
            break
        if on_row is not None:
            on_row(rows)
    if on_row is not None:
        on_row(rows)
    return rows


def describe(exc: BaseException) -> str:
    """One line for an exception; out-of-memory errors say so first."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    msg = f"{type(exc).__name__}: {first}"[:300]
    if "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower() or isinstance(exc, MemoryError):
        msg = "out of memory: " + msg
    return msg


def estimate_time(last: dict, n: int, *, growth: float = 1.0, margin: float = 1.1) -> float:
    """Seconds for size ``n`` from the row of the size before: set-up and solve scale with N (the solve by
    ``growth`` more, for iterations that grow with N), compilation stays; two calls (first and second)."""
    r = n / float(last["N"])
    setup = float(last.get("setup_s") or 0.0) * r
    if last.get("solve_s") is not None:
        return margin * (setup + float(last.get("compile_s") or 0.0) + 2.0 * float(last["solve_s"]) * r * growth)
    return margin * (setup + 2.0 * float(last.get("first_call_s") or 0.0) * r * growth)


def ok_status(status: Any) -> bool:
    return isinstance(status, str) and (status in ("ok", "converged", "passed") or status.startswith("converged"))


# --------------------------------------------------------------------------------------------------
# Devices and provenance
# --------------------------------------------------------------------------------------------------


def nvidia_smi() -> dict[str, str]:
    """GPU model, driver and memory from ``nvidia-smi`` ("none" where there is none)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"gpu": f"none (nvidia-smi: {type(exc).__name__})", "gpu_driver": "none", "gpu_memory": "none"}
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.strip()]
    if out.returncode != 0 or not lines:
        return {"gpu": f"none (nvidia-smi exit {out.returncode})", "gpu_driver": "none", "gpu_memory": "none"}
    parts = [p.strip() for p in lines[0].split(",")]
    parts += ["unknown"] * (3 - len(parts))
    return {
        "gpu": parts[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""),
        "gpu_driver": parts[1],
        "gpu_memory": parts[2],
    }


def jax_plugins() -> dict[str, str]:
    """Installed JAX plugin packages (the CUDA plugin and its PJRT) and their versions."""
    out = {}
    for d in importlib.metadata.distributions():
        name = (d.metadata.get("Name") or "").lower().replace("_", "-")
        if name.startswith("jax-cuda") or name.startswith("jax-rocm") or name.startswith("libtpu"):
            out[name] = d.version
    return dict(sorted(out.items()))


def resolve_commit(env: dict[str, str], git_commit: str | None, stamp: Path) -> dict[str, Any]:
    """The commit of the tree measured: ``$JAXVPP_COMMIT``, else git, else the stamp file written by
    ``gpu.sh --stamp`` before the tree was copied, else "unknown"."""
    if env.get(COMMIT_ENV, "").strip():
        return {"commit": env[COMMIT_ENV].strip(), "commit_source": f"environment variable {COMMIT_ENV}"}
    if git_commit and git_commit != "unknown":
        return {"commit": git_commit, "commit_source": "git"}
    try:
        data = json.loads(stamp.read_text(encoding="utf-8"))
        return {
            "commit": str(data["commit"]),
            "uncommitted_changes": data.get("uncommitted_changes"),
            "commit_source": f"stamp file {stamp.name} written {data.get('written_utc', 'at an unknown time')}",
        }
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {"commit": "unknown", "commit_source": "none (no git, no $JAXVPP_COMMIT, no stamp file)"}


def write_stamp(path: Path = STAMP) -> dict[str, Any]:
    """Record the checkout's commit (and whether the tree has uncommitted changes) for a copy without .git."""
    info = provenance(["benchmarks/gpu.py", "--stamp"])
    if info["commit"] == "unknown":
        raise SystemExit("gpu.py --stamp: no git checkout here, nothing to stamp")
    data = {
        "commit": info["commit"],
        "uncommitted_changes": info["uncommitted_changes"],
        "written_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) + "\n", encoding="utf-8")
    return data


def device_info() -> dict[str, Any]:
    devs = jax.devices()
    return {
        "devices": [str(d) for d in devs],
        "default_backend": jax.default_backend(),
        "device_kind": devs[0].device_kind,
        "float64": bool(jnp.zeros(1).dtype == jnp.float64),
        "cpu_devices": cpu_devices(),
    }


def cpu_devices() -> list[str] | str:
    try:  # JAX_PLATFORMS may leave the CPU backend out; the correctness step then fails on its own
        return [str(d) for d in jax.devices("cpu")]
    except RuntimeError as exc:
        return f"none ({describe(exc)})"


def memory_gb() -> float | None:
    """Peak bytes in use on the default device so far (GB), where the backend reports it."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 1e9


def placed_on(x: Any) -> str:
    try:
        return ",".join(sorted(str(d) for d in x.devices()))
    except Exception:  # noqa: BLE001
        return "unknown"


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def problem(n: int) -> tuple[jaxvpp.Fleet, jaxvpp.Market, jaxvpp.Settings]:
    """``random_fleet(n, 42)``, ``synthetic_market(20, 24, 7)`` and the default settings."""
    fleet = jaxvpp.random_fleet(n, seed=FLEET_SEED)
    market = jaxvpp.synthetic_market(K, T, seed=MARKET_SEED)
    jax.block_until_ready((fleet, market))
    return fleet, market, jaxvpp.Settings()


def solve(fleet, market, settings, chunk_size: int | None = None) -> jaxvpp.BatterySolution:
    kw = {} if chunk_size is None else {"chunk_size": int(chunk_size)}
    sol = jaxvpp.solve_batteries(fleet, market, settings, tol=SOLVER_TOL, max_iter=SOLVER_MAX_ITER, **kw)
    return jax.block_until_ready(sol)


def uncoordinated_target(fleet, market, settings) -> np.ndarray:
    """THETA x the uncoordinated fleet's net power (T,) MW: feasible, since every battery's schedule scaled
    towards zero is feasible."""
    return THETA * np.asarray(jnp.sum(solve(fleet, market, settings).net_mw, axis=0))


def timed_twice(call: Callable[[], Any], left_s: float) -> tuple[Any, float, float | None]:
    """Call twice (the first compiles); the second only if the first's time still fits in ``left_s``.
    Returns (last result, first call s, second call s or None)."""
    t0 = time.perf_counter()
    out = call()
    first = time.perf_counter() - t0
    if first > left_s - first:
        return out, first, None
    t0 = time.perf_counter()
    out = call()
    return out, first, time.perf_counter() - t0


def measure_solver(n: int, left_s: float, chunk_size: int | None = None) -> dict:
    """``solve_batteries`` on N batteries: first call (compilation + solve), second call (solve)."""
    t0 = time.perf_counter()
    fleet, market, settings = problem(n)
    setup = time.perf_counter() - t0
    sol, first, second = timed_twice(lambda: solve(fleet, market, settings, chunk_size), left_s - setup)
    its = np.asarray(sol.iterations)
    conv = np.asarray(sol.converged)
    bit = int(its.sum())
    row = {
        "status": "ok" if conv.all() else f"{int((~conv).sum())} of {n} not converged",
        "not_converged": [int(i) for i in np.flatnonzero(~conv)[:10]],  # the first 10 batteries' indices
        "setup_s": setup,
        "first_call_s": first,
        "solve_s": second,
        "compile_s": None if second is None else max(first - second, 0.0),
        "battery_iterations": bit,
        "iterations_per_battery": bit / n,
        "max_iterations": int(its.max()),
        "us_per_battery_iteration": None if second is None else second / bit * 1e6,
        "objective_eur": float(np.sum(np.asarray(sol.objective_eur))),
        "peak_memory_gb": memory_gb(),
        "device": placed_on(sol.net_mw),
    }
    if second is None:
        row["note"] = "second call skipped: it would not fit the budget"
    return row


def measure_aladin(n: int, left_s: float, log: bool = False) -> dict:
    """``coordinate`` of N batteries to THETA x their uncoordinated net power: first and second call."""
    t0 = time.perf_counter()
    fleet, market, settings = problem(n)
    target = uncoordinated_target(fleet, market, settings)
    setup = time.perf_counter() - t0
    lines: list[str] = []
    sink = lines.append if log else None
    res, first, second = timed_twice(
        lambda: jaxvpp.coordinate(fleet, market, target, settings, tol=ALADIN_TOL, log=sink), left_s - setup
    )
    it = int(res.iterations)
    row = {
        "status": res.status,
        "setup_s": setup,
        "first_call_s": first,
        "solve_s": second,
        "compile_s": None if second is None else max(first - second, 0.0),
        "iterations": it,
        "time_per_iteration_s": None if second is None else second / max(it, 1),
        "us_per_battery_iteration": None if second is None else second / max(it, 1) / n * 1e6,
        "objective_eur": float(res.objective_eur),
        "coupling_residual_mw": float(res.coupling_residual_mw),
        "accuracy": float(res.accuracy),
        "peak_memory_gb": memory_gb(),
        "device": placed_on(res.solution.net_mw) if res.solution is not None else "none",
    }
    if log:
        row["log_lines"] = len(lines)
    if second is None:
        row["note"] = "second call skipped: it would not fit the budget"
    return row


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def step_correctness(plan: Plan, budget_s: float, save: Callable[[list[dict]], None]) -> tuple[list[dict], list[str]]:
    """The same small fleet on the default device and on the CPU: battery solver and ALADIN."""
    n = plan.correctness_n
    default, cpu = jax.devices()[0], jax.devices("cpu")[0]
    fleet, market, settings = problem(n)
    host = jax.tree.map(np.asarray, (fleet, market))
    same_device = default == cpu
    notes = []
    if same_device:
        notes.append("The default device is the CPU: this compares the CPU with itself (the same program).")

    def on(dev):
        # the default device takes the arrays as made (uncommitted, as in the other steps, which then reuse
        # the compiled programs); the CPU, where it is another device, gets copies committed to it
        with jax.default_device(dev):
            f, m = (fleet, market) if dev == default else jax.device_put(host, dev)
            sol = solve(f, m, settings)
        return f, m, sol

    t0 = time.perf_counter()
    f_cpu, m_cpu, s_cpu = on(cpu)
    target = THETA * np.asarray(jnp.sum(s_cpu.net_mw, axis=0))
    f_dev, m_dev, s_dev = on(default)
    it_c, it_d = np.asarray(s_cpu.iterations), np.asarray(s_dev.iterations)
    obj_c, obj_d = np.asarray(s_cpu.objective_eur), np.asarray(s_dev.objective_eur)
    rel = _rel(float(obj_d.sum()), float(obj_c.sum()))
    differ = int(np.sum(it_c != it_d))
    solver_ok = rel <= 1e-9 and differ == 0
    rows = [
        {
            "solver": "battery solver",
            "N": n,
            "status": "passed" if solver_ok else "differs",
            "objective_rel_diff": rel,
            "max_battery_objective_rel_diff": float(np.max(np.abs(obj_d - obj_c) / np.maximum(np.abs(obj_c), 1e-300))),
            "iterations_cpu": int(it_c.sum()),
            "iterations_device": int(it_d.sum()),
            "batteries_with_other_iterations": differ,
            "max_iteration_difference": int(np.max(np.abs(it_c - it_d))),
            "ran_on": placed_on(s_dev.net_mw),
            "cpu_ran_on": placed_on(s_cpu.net_mw),
        }
    ]
    save(rows)
    if time.perf_counter() - t0 > budget_s:
        rows.append({"solver": "ALADIN", "N": n, "status": "skipped: the battery solver used the step's budget"})
        return rows, notes

    def coord(dev, f, m):
        with jax.default_device(dev):
            return jaxvpp.coordinate(f, m, target, settings, tol=ALADIN_TOL)

    r_cpu, r_dev = coord(cpu, f_cpu, m_cpu), coord(default, f_dev, m_dev)
    rel_a = _rel(r_dev.objective_eur, r_cpu.objective_eur)
    aladin_ok = rel_a <= 1e-9 and r_dev.iterations == r_cpu.iterations and r_dev.status == r_cpu.status
    rows.append(
        {
            "solver": "ALADIN",
            "N": n,
            "status": "passed" if aladin_ok else "differs",
            "objective_rel_diff": rel_a,
            "iterations_cpu": r_cpu.iterations,
            "iterations_device": r_dev.iterations,
            "status_cpu": r_cpu.status,
            "status_device": r_dev.status,
            "coupling_residual_mw_device": r_dev.coupling_residual_mw,
            "ran_on": placed_on(r_dev.solution.net_mw) if r_dev.solution is not None else "none",
            "cpu_ran_on": placed_on(r_cpu.solution.net_mw) if r_cpu.solution is not None else "none",
        }
    )
    if not (solver_ok and aladin_ok):
        notes.append(
            "Not identical. The device's kernels sum in another order than the CPU's (reductions over scenarios, "
            "time steps and batteries; the batched Cholesky factorisations), so their round-off differs at the "
            "1e-16 level; a battery (or the ALADIN loop) whose stopping measure lies near its tolerance can then "
            "stop one iteration earlier or later, and the objectives then differ by up to about the solver "
            "tolerance (1e-9 battery solver, 1e-8 ALADIN) rather than by round-off. The rows give the sizes of the "
            "differences; a difference far above the tolerance would be a bug."
        )
    return rows, notes


def step_solver(plan: Plan, budget_s: float, save) -> tuple[list[dict], list[str]]:
    rows = run_series(plan.solver_sizes, measure_solver, estimate_time, budget_s, on_row=save)
    return rows, ["Default slot count (`chunk_size=256`); battery-iterations summed over the batteries."]


def step_aladin(plan: Plan, budget_s: float, save) -> tuple[list[dict], list[str]]:
    rows = run_series(
        plan.aladin_sizes, measure_aladin, lambda last, n: estimate_time(last, n, growth=1.3), budget_s, on_row=save
    )
    return rows, [
        f"Target {THETA} x the uncoordinated fleet's net power; set-up = the fleet, the market and the "
        "uncoordinated solve for the target; first call = compilation + solve (the goal's 'including "
        "compilation'); no live log (no host callback in the loop)."
    ]


def step_sweep(plan: Plan, budget_s: float, save, aladin_rows: list[dict]) -> tuple[list[dict], list[str]]:
    B, n = plan.sweep_problems, plan.sweep_n
    fleet, market, settings = problem(n)
    values = np.linspace(0.0, 2.0, B)

    def measure(kind: str, left: float) -> dict:
        t0 = time.perf_counter()
        target = uncoordinated_target(fleet, market, settings) if kind == "coordinated" else None
        setup = time.perf_counter() - t0
        (table, res), first, second = timed_twice(
            lambda: jaxvpp.sweep(fleet, market, settings, target, "risk_weight", values), left - setup
        )
        conv = np.asarray(res.converged)
        its = np.asarray(res.iterations)
        return {
            "status": "ok" if conv.all() else f"{int((~conv).sum())} of {B} not converged",
            "not_converged_risk_weights": [float(v) for v in values[~conv]],
            "problems": B,
            "N": n,
            "setup_s": setup,
            "first_call_s": first,
            "solve_s": second,
            "compile_s": None if second is None else max(first - second, 0.0),
            "ms_per_problem": None if second is None else second / B * 1e3,
            "iterations_min": int(its.min()),
            "iterations_max": int(its.max()),
            "objective_eur_first": float(table["objective_eur"].iloc[0]),
            "objective_eur_last": float(table["objective_eur"].iloc[-1]),
            "peak_memory_gb": memory_gb(),
        }

    def estimate(last: dict, kind: str) -> float | None:
        ref = next((r for r in aladin_rows if r.get("N") == n and r.get("solve_s") is not None), None)
        if ref is None:
            return None
        return 1.2 * (float(ref["setup_s"]) + 1.5 * float(ref["compile_s"]) + 2 * B * float(ref["solve_s"]))

    rows = run_series(["independent", "coordinated"], measure, estimate, budget_s, key="kind", on_row=save)
    return rows, [
        f"risk_weight over {B} values in [0, 2] on random_fleet({n}); independent = no target (one battery-solver "
        f"call on the {B} fleets laid end to end); coordinated = {THETA} x the uncoordinated net power, ALADIN per "
        "problem (jaxvpp.sweep)."
    ]


def step_slots(plan: Plan, budget_s: float, save, solver_rows: list[dict]) -> tuple[list[dict], list[str]]:
    n = plan.slots_n
    t0 = time.perf_counter()

    def measure(slots: int, left: float) -> dict:
        return {"N_batteries": n, **measure_solver(n, left, chunk_size=slots)}

    def estimate(last: dict, slots: int) -> float:
        # fewer slots, more rounds: up to last / slots times the solve where a round's time is launch latency
        return estimate_time({**last, "N": 1}, 1, growth=max(1.0, last["slots"] / slots))

    rows = run_series(plan.slots, measure, estimate, budget_s, key="slots", on_row=save)
    for r in rows:
        r.setdefault("N_batteries", n)
    ref = next((r for r in solver_rows if r.get("N") == n and r.get("solve_s") is not None), None)
    if ref is not None:
        rows.insert(0, {"slots": 256, "N_batteries": n, **{k: v for k, v in ref.items() if k != "N"}})
        rows[0]["note"] = "the solver step's row (default slot count)"
    timed = [r for r in rows if r.get("solve_s") is not None]
    notes = [f"`solve_batteries(..., chunk_size=slots)` at N = {n}; each slot count compiles its own program."]
    if not timed:
        return rows, notes
    best = min(timed, key=lambda r: r["solve_s"])
    big = plan.slots_big_n
    left = budget_s - (time.perf_counter() - t0)
    est = estimate_time({**best, "N": n}, big)
    row = {"slots": best["slots"], "N_batteries": big, "estimated_s": est}
    if est > left:
        row["status"] = f"skipped: estimated {est:.0f} s > {left:.0f} s left"
    else:
        try:
            row.update(measure_solver(big, left, chunk_size=best["slots"]))
        except Exception as exc:  # noqa: BLE001
            row["status"] = "failed: " + describe(exc)
    row["note"] = f"N = {big} with the fastest slot count at N = {n}"
    rows.append(row)
    return rows, notes


def step_live_log(plan: Plan, budget_s: float, save, aladin_rows: list[dict]) -> tuple[list[dict], list[str]]:
    n = plan.live_log_n
    ref = next((r for r in aladin_rows if r.get("N") == n and r.get("solve_s") is not None), None)
    notes = ["`coordinate(..., log=...)`: one `jax.debug.callback` per iteration inside the compiled loop."]
    if ref is None:
        notes.append(f"No run without the log at N = {n} to compare with (the ALADIN step did not reach it).")
    est = None if ref is None else estimate_time(ref, n, growth=1.2)
    if est is not None and est > budget_s:
        return [
            {"N": n, "status": f"skipped: estimated {est:.0f} s > {budget_s:.0f} s left", "estimated_s": est}
        ], notes
    rows = run_series([n], lambda m, left: measure_aladin(m, left, log=True), lambda *_: None, budget_s, on_row=save)
    row = rows[0]
    if est is not None:
        row["estimated_s"] = est
    if ref is not None and row.get("time_per_iteration_s") is not None:
        row["time_per_iteration_without_log_s"] = ref["time_per_iteration_s"]
        row["log_overhead_per_iteration_ms"] = (row["time_per_iteration_s"] - ref["time_per_iteration_s"]) * 1e3
    return rows, notes


# --------------------------------------------------------------------------------------------------
# The results file
# --------------------------------------------------------------------------------------------------

COLUMNS = {
    "correctness": [
        ("solver", "solver"),
        ("N", "N"),
        ("status", "status"),
        ("objective_rel_diff", "objective rel. diff"),
        ("iterations_cpu", "iterations CPU"),
        ("iterations_device", "iterations device"),
        ("batteries_with_other_iterations", "batteries with other counts"),
        ("ran_on", "device"),
        ("cpu_ran_on", "CPU device"),
    ],
    "solver": [
        ("N", "N"),
        ("status", "status"),
        ("setup_s", "set-up (s)"),
        ("first_call_s", "first call (s)"),
        ("compile_s", "compile (s)"),
        ("solve_s", "solve (s)"),
        ("battery_iterations", "battery-iterations"),
        ("iterations_per_battery", "per battery"),
        ("us_per_battery_iteration", "us per battery-iteration"),
        ("peak_memory_gb", "peak memory (GB)"),
        ("estimated_s", "estimated (s)"),
    ],
    "aladin": [
        ("N", "N"),
        ("status", "status"),
        ("setup_s", "set-up (s)"),
        ("first_call_s", "first call incl. compile (s)"),
        ("compile_s", "compile (s)"),
        ("solve_s", "solve (s)"),
        ("iterations", "iterations"),
        ("time_per_iteration_s", "per iteration (s)"),
        ("us_per_battery_iteration", "us per battery-iteration"),
        ("coupling_residual_mw", "coupling residual (MW)"),
        ("peak_memory_gb", "peak memory (GB)"),
        ("estimated_s", "estimated (s)"),
    ],
    "sweep": [
        ("kind", "kind"),
        ("status", "status"),
        ("problems", "problems"),
        ("N", "N"),
        ("first_call_s", "first call (s)"),
        ("compile_s", "compile (s)"),
        ("solve_s", "solve (s)"),
        ("ms_per_problem", "per problem (ms)"),
        ("iterations_min", "iterations min"),
        ("iterations_max", "iterations max"),
        ("estimated_s", "estimated (s)"),
    ],
    "slots": [
        ("slots", "slots"),
        ("N_batteries", "N"),
        ("status", "status"),
        ("first_call_s", "first call (s)"),
        ("compile_s", "compile (s)"),
        ("solve_s", "solve (s)"),
        ("battery_iterations", "battery-iterations"),
        ("us_per_battery_iteration", "us per battery-iteration"),
        ("peak_memory_gb", "peak memory (GB)"),
        ("estimated_s", "estimated (s)"),
        ("note", "note"),
    ],
    "live_log": [
        ("N", "N"),
        ("status", "status"),
        ("first_call_s", "first call (s)"),
        ("solve_s", "solve (s)"),
        ("iterations", "iterations"),
        ("time_per_iteration_s", "per iteration (s)"),
        ("time_per_iteration_without_log_s", "without the log (s)"),
        ("log_overhead_per_iteration_ms", "overhead per iteration (ms)"),
        ("log_lines", "log lines"),
    ],
}


def _row(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def evaluate_goals(steps: dict[str, dict], cpu_ref: dict[str, Any] = CPU_REFERENCE) -> list[dict]:
    """One row per goal: what was measured and whether it meets the goal ("yes", "no", "not measured",
    "no CPU reference"). A run that did not converge does not meet a time goal."""

    def rows_of(step: str) -> list[dict]:
        return steps.get(step, {}).get("rows", [])

    def timed(row: dict | None, key: str, limit: float, label: str) -> dict:
        value = None if row is None else row.get(key)
        if value is None:
            return {"measured": "-", "met": "not measured"}
        ok = ok_status(row.get("status"))
        return {
            "measured": f"{value:.2f} s {label} (status {row.get('status')})",
            "met": "yes" if ok and value <= limit else "no",
        }

    out = []
    al = _row(rows_of("aladin"), N=100000)
    its = f", {al.get('iterations')} iterations" if al else ""
    out.append({"goal": GOALS["aladin_100k"], **timed(al, "first_call_s", 10.0, "first call" + its)})
    sv = _row(rows_of("solver"), N=1000000)
    out.append({"goal": GOALS["solver_1m"] + ", default slot count", **timed(sv, "solve_s", 5.0, "solve")})
    big = _row(rows_of("slots"), N_batteries=1000000)
    label = f"solve with {big.get('slots')} slots" if big else "solve"
    out.append({"goal": GOALS["solver_1m"] + ", fastest slot count of the scan", **timed(big, "solve_s", 5.0, label)})
    for name, step, ref_key in (("battery solver", "solver", "solver_us"), ("ALADIN", "aladin", "aladin_us")):
        r = _row(rows_of(step), N=100000)
        us = None if r is None else r.get("us_per_battery_iteration")
        refs = {int(k): float(v) for k, v in (cpu_ref.get(ref_key) or {}).items() if v}
        row = {"goal": f"{GOALS['speedup_100k']} ({name})", "measured": "-", "met": "not measured"}
        if us is not None:
            row["measured"] = f"{us:.3g} us"
            if not refs:
                row["met"] = "no CPU reference"
            else:
                ref_n = max(refs)
                ratio = refs[ref_n] / us
                row["measured"] += f" against {refs[ref_n]:.3g} us (CPU, N = {ref_n}): {ratio:.1f}x"
                row["met"] = "yes" if ratio >= 20 else "no"
        out.append(row)
    return out


def step_summary(step: dict) -> str:
    rows = step.get("rows", [])
    parts = []
    for r in rows:
        if "solver" in r:
            label = f"{r['solver']} N={r.get('N')}"
        elif "kind" in r:
            label = str(r["kind"])
        elif "slots" in r:
            label = f"{r.get('slots')} slots, N={r.get('N_batteries')}"
        else:
            label = f"N={r.get('N')}"
        extra = ""
        if r.get("solve_s") is not None:
            extra = f" {r['solve_s']:.3g} s"
        elif r.get("first_call_s") is not None:
            extra = f" {r['first_call_s']:.3g} s (first call)"
        parts.append(f"{label}: {r.get('status', '-')}{extra}")
    return "; ".join(parts) if parts else "-"


def write(plan: Plan, out_dir: Path, command: str, extra: dict, steps: dict[str, dict]) -> None:
    ordered = [steps[s] for s in plan.steps if s in steps]
    table = [
        {
            "step": s["step"],
            "status": s["status"],
            "budget_s": s["budget_s"],
            "elapsed_s": s.get("elapsed_s"),
            "summary": step_summary(s),
        }
        for s in ordered
    ]
    goals = evaluate_goals(steps)
    cols = [("step", "step"), ("status", "status"), ("budget_s", "budget (s)"), ("elapsed_s", "took (s)")]
    sections = [
        ("Steps", markdown_table(table, cols + [("summary", "summary")])),
        ("Goals", markdown_table(goals, [("goal", "goal"), ("measured", "measured"), ("met", "met")])),
    ]
    for s in ordered:
        body = markdown_table(s["rows"], COLUMNS.get(s["step"])) if s["rows"] else "(no rows)\n"
        if s.get("notes"):
            body += "\n" + "\n\n".join(s["notes"]) + "\n"
        sections.append((TITLES[s["step"]], body))
    sections.append(("CPU reference", cpu_reference_markdown()))
    notes = (
        f"Plan `{plan.name}`: T = {T}, K = {K}, `random_fleet(N, seed={FLEET_SEED})`, "
        f"`synthetic_market({K}, {T}, seed={MARKET_SEED})`, float64. Every step has a time budget (total "
        f"{plan.total_s:.0f} s); a size whose estimated time exceeds what is left is not started. The goals:\n\n"
        + "\n".join(f"- {g}" for g in GOALS.values())
    )
    data = {"plan": plan.name, "goals": goals, "cpu_reference": CPU_REFERENCE, "steps": ordered}
    write_results(
        plan.results_name,
        title="jaxvpp on a GPU" if plan.name != "cpu-reference" else "jaxvpp: the CPU reference for the GPU runs",
        sections=sections,
        data=data,
        command=command,
        notes=notes,
        out_dir=out_dir,
        extra=extra,
    )


def cpu_reference_markdown() -> str:
    ref = CPU_REFERENCE
    if not ref.get("solver_us") and not ref.get("aladin_us"):
        return "Not measured yet (`bash benchmarks/gpu.sh --cpu-reference`).\n"
    lines = [
        f"Microseconds per battery-iteration after compilation on {ref['machine']} (commit `{ref['commit']}`, "
        f"{ref['date_utc']}; `{ref['command']}`):",
        "",
        "| N | battery solver (us) | ALADIN (us) |",
        "|---:|---:|---:|",
    ]
    for n in sorted({int(k) for k in ref["solver_us"]} | {int(k) for k in ref["aladin_us"]}):
        s, a = ref["solver_us"].get(n), ref["aladin_us"].get(n)
        lines.append(f"| {n} | {'-' if s is None else f'{s:.3g}'} | {'-' if a is None else f'{a:.3g}'} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def loaded_absent_packages() -> list[str]:
    """Which of the packages the GPU image lacks were imported by this run (should be none)."""
    return sorted(m for m in ABSENT_ON_GPU if sys.modules.get(m) is not None)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(PLANS), default="full")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "gpu"), help="folder for gpu.md, gpu.json")
    ap.add_argument("--command", default=None, help="the command line to record (gpu.sh passes its own)")
    ap.add_argument("--stamp", action="store_true", help="write benchmarks/out/gpu_commit.txt and exit")
    args = ap.parse_args(argv)
    if args.stamp:
        print(json.dumps(write_stamp()))
        return 0
    plan = PLANS[args.mode]
    out_dir = Path(args.out)
    command = args.command or "python " + " ".join(["benchmarks/gpu.py", *(argv or sys.argv[1:])])
    deadline = _T0 + plan.total_s

    devinfo = device_info()
    print(f"jax {jax.__version__}: devices {devinfo['devices']} (default backend {devinfo['default_backend']})")
    print(f"float64: {devinfo['float64']}; CPU devices: {devinfo['cpu_devices']}")
    smi = nvidia_smi()
    print(f"GPU: {smi['gpu']}, driver {smi['gpu_driver']}, memory {smi['gpu_memory']}")
    git_commit = provenance(command)["commit"]
    extra: dict[str, Any] = {
        **resolve_commit(dict(os.environ), git_commit, STAMP),
        **smi,
        "jax_plugins": jax_plugins() or "none",
        **devinfo,
        "xla_env": {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_"))} or "none",
    }
    print(f"commit: {extra['commit']} ({extra['commit_source']})")

    steps: dict[str, dict] = {}

    def save() -> None:
        extra["absent_packages_imported"] = loaded_absent_packages() or "none"
        write(plan, out_dir, command, extra, steps)

    save()
    for i, name in enumerate(plan.steps):
        later = sum(plan.budgets[s] for s in plan.steps[i + 1 :])
        budget = max(0.0, deadline - time.perf_counter() - later)
        entry = {"step": name, "status": "running", "budget_s": budget, "rows": [], "notes": []}
        steps[name] = entry
        print(f"== {name}: budget {budget:.0f} s", flush=True)
        t0 = time.perf_counter()

        def partial(rows: list[dict], entry=entry, t0=t0) -> None:
            entry["rows"] = list(rows)
            entry["elapsed_s"] = time.perf_counter() - t0
            save()

        try:
            if name == "correctness":
                rows, notes = step_correctness(plan, budget, partial)
            elif name == "solver":
                rows, notes = step_solver(plan, budget, partial)
            elif name == "aladin":
                rows, notes = step_aladin(plan, budget, partial)
            elif name == "sweep":
                rows, notes = step_sweep(plan, budget, partial, steps.get("aladin", {}).get("rows", []))
            elif name == "slots":
                rows, notes = step_slots(plan, budget, partial, steps.get("solver", {}).get("rows", []))
            elif name == "live_log":
                rows, notes = step_live_log(plan, budget, partial, steps.get("aladin", {}).get("rows", []))
            else:
                raise ValueError(f"unknown step {name!r}")
            entry["rows"], entry["notes"] = rows, notes
            statuses = [str(r.get("status", "")) for r in rows]
            if any(s.startswith("failed") for s in statuses):
                entry["status"] = "failed"
            elif statuses and all(ok_status(s) for s in statuses):
                entry["status"] = "passed" if name == "correctness" else "ok"
            elif name == "correctness" and any(s == "differs" for s in statuses):
                entry["status"] = "differs (see the notes)"
            else:
                entry["status"] = "partial"
        except Exception as exc:  # noqa: BLE001 (the step's failure is recorded; the next step runs)
            entry["status"] = "failed: " + describe(exc)
            print(f"   {entry['status']}", flush=True)
        entry["elapsed_s"] = time.perf_counter() - t0
        for r in entry["rows"]:
            print("   " + json.dumps({k: v for k, v in r.items() if k in dict(COLUMNS[name])}, default=str), flush=True)
        print(f"   {name}: {entry['status']} in {entry['elapsed_s']:.1f} s", flush=True)
        save()
    print(f"wrote {out_dir / (plan.results_name + '.md')} and .json in {time.perf_counter() - _T0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
