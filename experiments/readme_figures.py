"""Regenerate the figures of the README and docs and the numbers of the `jaxvpp run` section.

Run from the repository root:

    .venv/bin/python experiments/readme_figures.py

It runs the default main job (the same as `jaxvpp run`, built-in defaults, figures at 80 dpi so that the
copies stay small) into experiments/out/run/ (scratch; data in experiments/out/run_data/), copies the
figures the README shows to docs/img/, and writes experiments/results/readme_run.md and .json: the phase
times and the coordinated/uncoordinated/ADMM figures of this run. About a minute on 2 CPU cores; the
compilation cache (~/.cache/jaxvpp/xla, JAXVPP_CACHE_DIR) is used as by the command line.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import write_results  # noqa: E402

from jaxvpp.cli import enable_compilation_cache  # noqa: E402
from jaxvpp.config import DEFAULT  # noqa: E402
from jaxvpp.pipeline import run  # noqa: E402

OUT = ROOT / "experiments" / "out"  # scratch: the run's outputs and data
IMG = ROOT / "docs" / "img"
#: figures the README shows (results/<name> -> docs/img/run_<name>)
FIGURES = ("schedule.png", "convergence.png", "frontier.png", "risk_bands.png")


def table(summary: dict) -> str:
    s, u, a = summary, summary["uncoordinated"], summary["admm"]
    rows = [
        "| | objective (EUR) | expected revenue (EUR) | CVaR (EUR) | misses the target by (MWh) | iterations |",
        "|---|---:|---:|---:|---:|---:|",
        f"| uncoordinated (each battery alone) | {u['objective_eur']:.1f} | {u['expected_revenue_eur']:.1f} | "
        f"{u['cvar_eur']:.1f} | {u['target_deviation_mwh']:.1f} | {u['iterations']} (interior point, batched) |",
        f"| coordinated, ALADIN | {s['objective_eur']:.1f} | {s['expected_revenue_eur']:.1f} | {s['cvar_eur']:.1f} | "
        f"{s['coupling_residual_mw']:.1e} MW max | {s['iterations']} ({s['status']}) |",
    ]
    if a:
        rows.append(
            f"| coordinated, ADMM | {a['objective_eur']:.1f} | | | {a['coupling_residual_mw']:.2f} MW max | "
            f"{a['iterations']} ({a['status']}) |"
        )
    phases = " | ".join(f"{k} {v:.1f} s" for k, v in s["phase_wall_time_s"].items())
    return (
        f"Default `jaxvpp run` ({s['num_batteries']} batteries, {s['num_steps']} steps, {s['num_scenarios']} "
        f"scenarios, delivery day {s['delivery_day']}):\n\n"
        + "\n".join(rows)
        + f"\n\nPhases: {phases}; total {s['wall_time_s']:.1f} s (in this process, compilation included).\n"
    )


def _jsonable(x):
    """The run summary with anything that is not JSON as its string."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


if __name__ == "__main__":
    enable_compilation_cache()
    cfg = DEFAULT.override({"output.dpi": 80})
    result = run(cfg, OUT / "run", data_dir=OUT / "run_data")
    IMG.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        shutil.copyfile(OUT / "run" / name, IMG / f"run_{name}")
        print(f"copied {name} -> {(IMG / f'run_{name}').relative_to(ROOT)}")
    md = table(result.summary)
    write_results(
        "readme_run",
        title="The default `jaxvpp run`",
        sections=[("Uncoordinated, coordinated by ALADIN and by ADMM", md)],
        data=_jsonable(result.summary),
        out_dir=ROOT / "experiments" / "results",
    )
    print(md)
