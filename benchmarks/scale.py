"""Benchmark of scale-out: memory per battery, the largest fleet, and the fleet split over devices.

T = 24 hourly steps, K = 20 scenarios, ``random_fleet(N, seed=42)``, target = half the uncoordinated fleet
profile (as ``benchmarks/coordination.py``). Every measurement runs in a fresh subprocess:

* ``--memory-sizes``: the compiled ALADIN program's buffers (``compiled.memory_analysis()``: arguments,
  outputs, temporaries; compilation only) per N, and the slope in bytes per battery;
* ``--rss-sizes``: whole coordinations on one device, peak resident memory (``ru_maxrss``) and time;
  the slope of peak RSS in N is the bytes per battery a run really needs;
* ``--devices-n`` with ``--device-counts``: the same fleet on 1, 2, 4 forced host devices (CPU), time per
  iteration, its ratio to one device's, and the difference of the answer to the one-device answer;
* ``--large N``: one coordination of N batteries (the largest fleet), with its per-iteration log in
  ``benchmarks/out/scale_runs/large_N.log``.

    .venv/bin/python benchmarks/scale.py                              # memory, RSS and devices (about 3 min)
    .venv/bin/python benchmarks/scale.py --memory-sizes 100,200 --rss-sizes 100,200 --devices-n 100
    .venv/bin/python benchmarks/scale.py --memory-sizes '' --rss-sizes '' --devices-n 0 --large 100000

Writes ``benchmarks/results/scale.md`` and ``scale.json`` from the runs of this invocation (memory, RSS and
devices), and ``scale_large.md`` / ``.json`` for ``--large``. Scratch (the device runs' answers, the large
run's log) goes to ``benchmarks/out/scale_runs/``.
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

from provenance import write_results  # noqa: E402

RUNS = Path(__file__).resolve().parent / "out" / "scale_runs"  # scratch: answers and logs, not results
ROOT = Path(__file__).resolve().parent.parent
T, K, THETA = 24, 20, 0.5
GiB = 1024.0**3


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _problem(n: int):
    import jax.numpy as jnp
    import numpy as np

    import jaxvpp
    from jaxvpp.battery.solution import solve_batteries

    fleet, market = jaxvpp.random_fleet(n, seed=42), jaxvpp.synthetic_market(K, T, seed=7)
    free = np.asarray(jnp.sum(solve_batteries(fleet, market).net_mw, axis=0))
    return fleet, market, THETA * free


def one_memory(n: int) -> dict:
    """Compile ALADIN for N batteries (one device) and report its buffer sizes (no solve)."""
    import jax.numpy as jnp

    import jaxvpp
    from jaxvpp.coordination.aladin import aladin_ipm

    fleet, market = jaxvpp.random_fleet(n, seed=42), jaxvpp.synthetic_market(K, T, seed=7)
    t0 = time.perf_counter()
    ma = aladin_ipm.lower(fleet, market, jnp.zeros(T), jaxvpp.Settings()).compile().memory_analysis()
    return dict(
        kind="memory",
        N=n,
        compile_s=time.perf_counter() - t0,
        argument_bytes=ma.argument_size_in_bytes,
        output_bytes=ma.output_size_in_bytes,
        temp_bytes=ma.temp_size_in_bytes,
        total_bytes=ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes,
    )


def one_run(n: int, devices: int, kind: str, log_path: str | None) -> dict:
    """Coordinate N batteries on ``devices`` devices (forced host devices on a CPU) in this process."""
    from jaxvpp.coordination import distributed

    distributed.use_cpu_devices(devices)
    import numpy as np

    import jaxvpp
    from jaxvpp.coordination.api import coordinate

    sink = open(log_path, "a", buffering=1) if log_path else None
    t0 = time.perf_counter()
    fleet, market, target = _problem(n)
    t_free = time.perf_counter() - t0
    rss_problem = _rss_mb()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if sink:
            sink.write(f"{line}  (peak RSS {_rss_mb():.0f} MB)\n")

    if sink:
        sink.write(f"N={n} devices={devices}: problem built in {t_free:.1f} s, peak RSS {rss_problem:.0f} MB\n")
    res = coordinate(fleet, market, target, jaxvpp.Settings(), devices=devices, log=log)
    el = np.asarray(res.history.get("elapsed_s", []), dtype=float)
    # the first logged iteration carries the compilation; the rest are the solve
    per_it = float(np.median(np.diff(el))) if el.size > 2 else float("nan")
    out = dict(
        kind=kind,
        N=n,
        devices=devices,
        status=res.status,
        iterations=res.iterations,
        time_s=res.wall_time_s,
        first_iteration_s=float(el[0]) if el.size else float("nan"),
        time_per_iteration_s=per_it,
        solve_after_first_s=float(el[-1] - el[0]) if el.size > 1 else float("nan"),
        problem_s=t_free,
        objective_eur=res.objective_eur,
        coupling_residual_mw=res.coupling_residual_mw,
        peak_rss_mb=_rss_mb(),
        rss_problem_mb=rss_problem,
        cpu_s=sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
    )  # user + system: cores used x time
    RUNS.mkdir(parents=True, exist_ok=True)
    if n <= 20000:
        np.savez(
            RUNS / f"answer_N{n}_d{devices}.npz",
            net_mw=np.asarray(res.solution.net_mw),
            price=res.coupling_price_eur_per_mwh,
            objective=res.objective_eur,
            iterations=res.iterations,
        )
    if sink:
        sink.write(json.dumps(out) + "\n")
        sink.close()
    return out


def _subprocess(args: list[str], timeout: float | None, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"not finished in {timeout:.0f} s", "args": args}
    except subprocess.CalledProcessError as exc:
        return {"status": "failed: " + (exc.stderr.strip().splitlines() or [""])[-1][:300], "args": args}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _save(rows: list[dict], res: dict) -> None:
    rows.append(res)
    print(json.dumps(res), flush=True)


def _fit(xs, ys):
    import numpy as np

    slope, icpt = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(slope), float(icpt)


def write_report(rows: list[dict]) -> list[tuple[str, str]]:
    """The markdown sections of the runs ``rows`` (memory, RSS, large, devices; those present)."""
    import numpy as np

    sections: list[tuple[str, str]] = []
    mem = sorted((r for r in rows if r.get("kind") == "memory" and "total_bytes" in r), key=lambda r: r["N"])
    rss = sorted((r for r in rows if r.get("kind") == "rss" and "peak_rss_mb" in r), key=lambda r: r["N"])
    dev = sorted(
        (r for r in rows if r.get("kind") == "devices" and "peak_rss_mb" in r), key=lambda r: (r["N"], r["devices"])
    )
    large = sorted((r for r in rows if r.get("kind") == "large"), key=lambda r: r.get("N", 0))
    fit_rss = None
    if mem:
        lines = [
            "One device, `compiled.memory_analysis()` (compilation only):",
            "",
            "| N | arguments (MB) | outputs (MB) | temporaries (MB) | total (MB) | per battery (kB) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in mem:
            lines.append(
                f"| {r['N']} | {r['argument_bytes'] / 1e6:.1f} | {r['output_bytes'] / 1e6:.1f} | "
                f"{r['temp_bytes'] / 1e6:.1f} | {r['total_bytes'] / 1e6:.1f} | {r['total_bytes'] / r['N'] / 1e3:.1f} |"
            )
        if len(mem) >= 2:
            s, c = _fit([r["N"] for r in mem], [r["total_bytes"] for r in mem])
            lines += ["", f"Linear fit: {s / 1e3:.1f} kB per battery + {c / 1e6:.1f} MB."]
        sections.append(("Buffers of the compiled ALADIN program", "\n".join(lines)))
    lines = []
    if rss:
        lines += [
            "Fresh process each; peak resident memory (`ru_maxrss`); time = the whole `coordinate()` call, "
            "compilation included:",
            "",
            "| N | status | iterations | time (s) | per iteration (s) | peak RSS (MB) |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for r in rss:
            lines.append(
                f"| {r['N']} | {r['status']} | {r['iterations']} | {r['time_s']:.1f} | "
                f"{r['time_per_iteration_s']:.3f} | {r['peak_rss_mb']:.0f} |"
            )
    # the fit takes every run with a measured peak (the largest ones too: the loop allocates its buffers
    # once, so a run stopped after a few iterations has reached its peak)
    pts = [r for r in rss + large if np.isfinite(r.get("peak_rss_mb", float("nan")))]
    if len(pts) >= 2:
        s, c = _fit([r["N"] for r in pts], [r["peak_rss_mb"] * 2**20 for r in pts])
        fit_rss = (s, c)
        n_max = (24 * GiB * 0.9 - c) / s
        lines += [
            "",
            f"Linear fit of peak RSS over N = {', '.join(str(r['N']) for r in pts)}: {s / 1e3:.1f} kB per "
            f"battery + {c / 2**20:.0f} MB; a 24 GiB machine (90 % usable) holds about {n_max:,.0f} "
            "batteries by this fit.",
        ]
    if lines:
        sections.append(("Whole coordinations on one device", "\n".join(lines)))
    if large:
        lines = [
            "| N | status | iterations | problem set-up (s) | first iteration incl. compilation (s) | "
            "per iteration (s) | coordination (s) | peak RSS (MB) | fit predicts (MB) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in large:
            pred = f"{(fit_rss[0] * r['N'] + fit_rss[1]) / 2**20:.0f}" if fit_rss else "-"
            lines.append(
                f"| {r['N']} | {r.get('status')} | {r.get('iterations', '-')} | {r.get('problem_s', 0):.0f} | "
                f"{r.get('first_iteration_s', float('nan')):.0f} | {r.get('time_per_iteration_s', float('nan')):.2f} | "
                f"{r.get('time_s', float('nan')):.0f} | {r.get('peak_rss_mb', float('nan')):.0f} | {pred} |"
            )
        sections.append(("The largest fleet (one device)", "\n".join(lines)))
    if dev:
        lines = [
            f"The same fleet on forced host devices of this {os.cpu_count()}-core CPU (`--xla_force_host_platform"
            "_device_count`). The ratio is the time per iteration over one device's (the baseline of this run); "
            "the differences are to the one-device answer, relative to its largest entry:",
            "",
            "| N | devices | status | iterations | per iteration (s) | per iteration / one device's | "
            "coordination (s) | CPU time (s) | schedules diff | coupling price diff | objective diff |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        base = {r["N"]: r for r in dev if r["devices"] == 1}
        for r in dev:
            b = base.get(r["N"])
            sp = r["time_per_iteration_s"] / b["time_per_iteration_s"] if b else float("nan")
            diffs = ["-", "-", "-"]
            f0, f1 = RUNS / f"answer_N{r['N']}_d1.npz", RUNS / f"answer_N{r['N']}_d{r['devices']}.npz"
            if b and f0.exists() and f1.exists():
                a0, a1 = np.load(f0), np.load(f1)
                rel = lambda k, a0=a0, a1=a1: np.max(np.abs(a1[k] - a0[k])) / max(np.max(np.abs(a0[k])), 1e-300)  # noqa: E731
                diffs = [
                    f"{rel('net_mw'):.1e}",
                    f"{rel('price'):.1e}",
                    f"{abs(float(a1['objective']) - float(a0['objective'])) / abs(float(a0['objective'])):.1e}",
                ]
            lines.append(
                f"| {r['N']} | {r['devices']} | {r['status']} | {r['iterations']} | "
                f"{r['time_per_iteration_s']:.3f} | {sp:.2f} | {r['time_s']:.1f} | "
                f"{_fmt(r.get('cpu_s'), '.1f')} | {' | '.join(diffs)} |"
            )
        sections.append(("The fleet split over devices", "\n".join(lines)))
    return sections


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory-sizes", default="1000,2000,4000,8000", help="N for the compiled program's buffers")
    ap.add_argument("--rss-sizes", default="1000,2000,4000", help="N for whole runs with peak RSS")
    ap.add_argument("--devices-n", type=int, default=1000, help="N for the device comparison (0: skip)")
    ap.add_argument("--device-counts", default="1,2,4")
    ap.add_argument("--large", type=int, default=0, help="also run one fleet of this size (0: none)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    ap.add_argument("--one", nargs=3, metavar=("KIND", "N", "DEVICES"), help=argparse.SUPPRESS)
    ap.add_argument("--log", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, n, d = args.one[0], int(args.one[1]), int(args.one[2])
        res = one_memory(n) if kind == "memory" else one_run(n, d, kind, args.log)
        print(json.dumps(res))
        return
    # the subprocesses import this checkout's jaxvpp, without the compilation cache (compilation is measured)
    env = dict(
        os.environ,
        JAXVPP_CACHE_DIR="",
        PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
    )
    rows: list[dict] = []
    for n in _ints(args.memory_sizes):
        _save(rows, {**_subprocess(["--one", "memory", str(n), "1"], args.timeout, env), "kind": "memory", "N": n})
    for n in _ints(args.rss_sizes):
        _save(
            rows,
            {**_subprocess(["--one", "rss", str(n), "1"], args.timeout, env), "kind": "rss", "N": n, "devices": 1},
        )
    if args.devices_n:
        for d in _ints(args.device_counts):
            res = _subprocess(["--one", "devices", str(args.devices_n), str(d)], args.timeout, env)
            _save(rows, {**res, "kind": "devices", "N": args.devices_n, "devices": d})
    notes = (
        f"T = {T} hourly steps, K = {K} scenarios, `random_fleet(N, seed=42)`, target = {THETA} x the uncoordinated "
        "fleet profile; every measurement in a fresh process, without the compilation cache."
    )
    if rows:
        sections = write_report(rows)
        write_results(
            "scale",
            title="Scale-out: memory per battery and the fleet split over devices",
            notes=notes,
            sections=sections,
            data=rows,
        )
        for _, body in sections:
            print(body)
    if args.large:
        RUNS.mkdir(parents=True, exist_ok=True)
        log = RUNS / f"large_{args.large}.log"
        res = _subprocess(["--one", "large", str(args.large), "1", "--log", str(log)], args.timeout, env)
        large = [{**res, "kind": "large", "N": args.large, "devices": 1}]
        sections = write_report(large)
        write_results(
            "scale_large",
            title=f"Scale-out: one coordination of {args.large} batteries",
            notes=notes,
            sections=sections,
            data=large,
        )
        for _, body in sections:
            print(body)


if __name__ == "__main__":
    main()
