"""Provenance and writing of benchmark result files (``benchmarks/results/NAME.md`` and ``NAME.json``).

Every script in ``benchmarks/`` (and every experiment with a result table, into ``experiments/results/``)
ends with::

    from provenance import write_results
    write_results("coordination", title=..., sections=[("ALADIN against Clarabel", table_md)], data=rows)

(experiments put ``benchmarks/`` on ``sys.path`` first and pass ``out_dir=EXPERIMENT_RESULTS``). The markdown
file opens with a provenance block (command, commit, whether the tree had uncommitted changes, CPU model and
core count, load average when written, Python, jax/jaxlib and solver versions, date in UTC, the script's
run time); the JSON twin carries the same provenance under ``"provenance"`` and the measured rows under
``"data"``. Files are written whole (temporary file, then rename), so a killed benchmark leaves the previous
results in place. This module is not part of the ``jaxvpp`` package.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
EXPERIMENT_RESULTS = ROOT / "experiments" / "results"
#: figures kept beside the tables only below this size (bytes); larger ones are not written
MAX_FIGURE_BYTES = 200 * 1024
_STARTED = time.monotonic()  # the importing script's start, near enough
PACKAGES = ("jaxvpp", "jax", "jaxlib", "numpy", "scipy", "cvxpy", "clarabel", "highspy", "scikit-learn", "pandas")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (those not installed are left out)."""
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def provenance(command: Sequence[str] | str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where a measurement comes from: command, commit, machine, versions and date (UTC)."""
    if command is None:
        command = sys.argv
    if not isinstance(command, str):
        parts = list(command)
        if parts and parts[0].endswith(".py"):
            try:
                parts[0] = str(Path(parts[0]).resolve().relative_to(ROOT))
            except ValueError:
                pass
        command = "python " + shlex.join(parts)
    # the results folders are left out: a run that regenerates several files would otherwise see its own
    # earlier outputs as changes to the code
    status = _git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":(exclude)benchmarks/results",
        ":(exclude)experiments/results",
    )
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    info: dict[str, Any] = {
        "command": command,
        "commit": _git("rev-parse", "--short=12", "HEAD") or "unknown",
        "uncommitted_changes": bool(status) if status is not None else None,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": load,
        "python": platform.python_version(),
        "versions": versions(),
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "run_time_s": round(time.monotonic() - _STARTED, 1),
    }
    try:  # the JAX backend, only if the script already imported jax
        if "jax" in sys.modules:
            import jax

            devs = jax.devices()
            info["jax_backend"] = jax.default_backend()
            info["jax_devices"] = f"{len(devs)} x {devs[0].device_kind}"
    except Exception:  # noqa: BLE001 (provenance must never fail a benchmark)
        pass
    if extra:
        info.update(extra)
    return info


def provenance_markdown(info: dict[str, Any]) -> str:
    """The provenance block that heads a results file."""
    vers = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    dirty = " (with uncommitted changes)" if info.get("uncommitted_changes") else ""
    lines = [
        f"- command: `{info['command']}`",
        f"- commit: `{info['commit']}`{dirty}",
        f"- machine: {info['cpu']}, {info['cores']} cores ({info['machine']}), Python {info['python']}",
    ]
    if info.get("load_average"):
        la = info["load_average"]
        lines.append(f"- load average when written: {la[0]} / {la[1]} / {la[2]} (1 / 5 / 15 min)")
    if "jax_devices" in info:
        lines.append(f"- JAX backend: {info['jax_backend']} ({info['jax_devices']})")
    lines += [f"- versions: {vers}", f"- date (UTC): {info['date_utc']}"]
    if info.get("run_time_s") is not None:
        lines.append(f"- run time: {info['run_time_s']:.0f} s")
    lines += [f"- {k}: {v}" for k, v in info.items() if k not in _STANDARD]
    return "\n".join(lines) + "\n"


_STANDARD = {
    "command",
    "commit",
    "uncommitted_changes",
    "cpu",
    "cores",
    "machine",
    "load_average",
    "python",
    "versions",
    "date_utc",
    "run_time_s",
    "jax_backend",
    "jax_devices",
}


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_results(
    name: str,
    *,
    title: str,
    sections: Sequence[tuple[str, str]],
    data: Any,
    command: Sequence[str] | str | None = None,
    notes: str = "",
    out_dir: Path | str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``NAME.md`` (provenance, optional notes, then each ``(heading, markdown)`` section) and
    ``NAME.json`` (``{"provenance": ..., "data": data}``) to ``out_dir`` (default ``benchmarks/results``).

    Returns the two paths.
    """
    info = provenance(command, extra)
    out = Path(out_dir) if out_dir is not None else RESULTS
    md = [f"# {title}\n\n", "Generated by the command below; do not edit by hand.\n\n", provenance_markdown(info)]
    if notes:
        md.append("\n" + notes.strip() + "\n")
    for heading, body in sections:
        md.append(f"\n## {heading}\n\n{body.strip()}\n")
    md_path, json_path = out / f"{name}.md", out / f"{name}.json"
    _atomic_write(md_path, "".join(md))
    _atomic_write(json_path, json.dumps({"provenance": info, "data": data}, indent=2, default=_jsonable) + "\n")
    return md_path, json_path


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]] | None = None) -> str:
    """A markdown table of ``rows``; ``columns`` is ``(key, header)`` pairs (default: the first row's keys).

    Floats are shown with 4 significant digits; missing values as ``-``. Columns whose values are all numbers
    (or missing) are right-aligned, the others left-aligned.
    """
    if not rows:
        return "(no rows)\n"
    cols = list(columns) if columns is not None else [(k, k) for k in rows[0]]

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    head = "| " + " | ".join(h for _, h in cols) + " |"

    def numeric(key: str) -> bool:
        vals = [r.get(key) for r in rows if r.get(key) is not None]

        def num(v: Any) -> bool:
            if isinstance(v, str):
                try:
                    float(v.rstrip("x"))
                except ValueError:
                    return False
                return True
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        return all(num(v) for v in vals)

    rule = "|" + "|".join("---:" if numeric(k) else "---" for k, _ in cols) + "|"
    body = ["| " + " | ".join(cell(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def save_figure(fig: Any, name: str, out_dir: Path | str | None = None, dpi: int = 100) -> Path | None:
    """Save a matplotlib figure as ``out_dir/NAME.png`` (default ``benchmarks/results``) if it stays under
    :data:`MAX_FIGURE_BYTES`; a larger one is not written (and an older copy is removed). Returns the path or
    ``None``."""
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    if tmp.stat().st_size > MAX_FIGURE_BYTES:
        tmp.unlink()
        path.unlink(missing_ok=True)
        return None
    os.replace(tmp, path)
    return path


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or ``None`` when either is missing or ``base`` is not positive."""
    if value is None or base is None or not (base > 0) or value != value:
        return None
    return value / base
