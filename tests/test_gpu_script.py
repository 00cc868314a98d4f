"""The GPU benchmark script (``benchmarks/gpu.sh`` and its driver ``benchmarks/gpu.py``).

``gpu.sh --smoke`` runs on this CPU with the packages the GPU image lacks (cvxpy, Clarabel, HiGHS, jaxopt,
optax) made unimportable, as they are there; the results files must carry the provenance and a row per step,
and the correctness step (here the CPU against itself) must pass. The budget logic (a size whose estimated
time exceeds what is left is not started; a failure stops the series) is checked with a fake clock.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("correctness", "solver", "aladin", "sweep", "slots", "live_log")
ABSENT = ("cvxpy", "clarabel", "highspy", "jaxopt", "optax")
# the test suite's compilation cache (tests/conftest.py), shared with the smoke run's subprocess
CACHE = os.environ.get("JAXVPP_TEST_CACHE_DIR", str(ROOT / ".cache" / "jax-tests"))


def _driver():
    spec = importlib.util.spec_from_file_location("gpu_driver", ROOT / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gpu():
    return _driver()


def _git_head() -> str | None:
    out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory):
    """An environment whose Python cannot import the packages the GPU image lacks."""
    block = tmp_path_factory.mktemp("block")
    (block / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in ABSENT), encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "JAXVPP_COMMIT", "JAX_PLATFORMS", "XLA_FLAGS")}
    env.update(PYTHON=sys.executable, PYTHONPATH=str(block))
    if CACHE:
        env.update(JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    return env


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, blocked_env):
    out = tmp_path_factory.mktemp("gpu_smoke")
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--smoke", "--out", str(out)],
        env=blocked_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "gpu.json").read_text(encoding="utf-8"))
    return proc, (out / "gpu.md").read_text(encoding="utf-8"), data


def test_the_blocked_packages_cannot_be_imported(blocked_env):
    for name in ABSENT:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], env=blocked_env, capture_output=True)
        assert proc.returncode != 0, f"{name} is importable in the blocked environment"


@pytest.mark.slow
def test_smoke_writes_markdown_and_json_with_provenance(smoke):
    proc, md, data = smoke
    prov = data["provenance"]
    assert "cpu:0" in proc.stdout  # jax.devices() printed
    for key in ("commit", "commit_source", "gpu", "gpu_driver", "versions", "date_utc", "devices", "float64"):
        assert key in prov, key
    assert {"jax", "jaxlib"} <= set(prov["versions"])
    head = _git_head()
    if head is not None:
        assert prov["commit"] == head and prov["commit_source"] == "git"
    assert prov["float64"] is True
    assert prov["absent_packages_imported"] == "none"
    assert prov["gpu"].startswith("none")  # no NVIDIA driver on this machine
    for line in (f"- commit: `{prov['commit']}`", "- gpu: ", "- gpu_driver: ", f"jax {prov['versions']['jax']}"):
        assert line in md, line
    assert f"jaxlib {prov['versions']['jaxlib']}" in md


@pytest.mark.slow
def test_smoke_has_a_row_per_step(smoke):
    _, md, data = smoke
    assert [s["step"] for s in data["data"]["steps"]] == list(STEPS)
    steps_table = md.split("## Steps", 1)[1].split("\n## ", 1)[0]
    for step in STEPS:
        assert sum(line.startswith(f"| {step} |") for line in steps_table.splitlines()) == 1, step
    for s in data["data"]["steps"]:
        assert s["rows"], s["step"]
        assert not str(s["status"]).startswith("failed"), (s["step"], s["status"])
    assert len(data["data"]["goals"]) == 5


@pytest.mark.slow
def test_smoke_correctness_passes_on_the_cpu(smoke):
    _, _, data = smoke
    step = next(s for s in data["data"]["steps"] if s["step"] == "correctness")
    assert step["status"] == "passed"
    solver, aladin = step["rows"]
    assert solver["objective_rel_diff"] == 0.0 and solver["batteries_with_other_iterations"] == 0
    assert solver["iterations_cpu"] == solver["iterations_device"] >= solver["N"]
    assert aladin["objective_rel_diff"] == 0.0 and aladin["iterations_cpu"] == aladin["iterations_device"] > 0
    assert aladin["status_cpu"] == aladin["status_device"] == "converged"


@pytest.mark.slow
def test_smoke_measures_solver_and_aladin(smoke):
    _, _, data = smoke
    steps = {s["step"]: s for s in data["data"]["steps"]}
    solver = steps["solver"]["rows"]
    assert [r["N"] for r in solver] == [10, 100]
    for r in solver:
        assert r["status"] == "ok" and r["battery_iterations"] >= r["N"] and r["us_per_battery_iteration"] > 0
        assert r["first_call_s"] >= r["solve_s"] > 0
    for r in steps["aladin"]["rows"]:
        assert r["status"] == "converged" and r["coupling_residual_mw"] < 1e-6 and r["time_per_iteration_s"] > 0
    assert [r["kind"] for r in steps["sweep"]["rows"]] == ["independent", "coordinated"]
    assert all(r["status"] == "ok" and r["problems"] == 2 for r in steps["sweep"]["rows"])
    live = steps["live_log"]["rows"][0]
    assert live["status"] == "converged" and live["log_lines"] >= live["iterations"]


def _fake(now: list[float], fail_at: int | None = None):
    calls = []

    def measure(n, left):
        calls.append(n)
        if n == fail_at:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.0GiB")
        now[0] += n / 100.0  # the "solve" takes N / 100 seconds
        return {"status": "ok", "setup_s": 0.0, "compile_s": 0.0, "solve_s": n / 100.0}

    return measure, calls


def test_series_does_not_start_a_size_whose_estimate_exceeds_the_time_left(gpu):
    now = [0.0]
    measure, calls = _fake(now)
    rows = gpu.run_series([100, 1000, 10000, 100000], measure, gpu.estimate_time, 50.0, clock=lambda: now[0])
    # N = 1000: estimated 1.1 x 2 x 10 s = 22 s of 49 s left: run (10 s); N = 10000: 220 s of 39 s: skipped
    assert calls == [100, 1000]
    assert [r["N"] for r in rows] == [100, 1000, 10000, 100000]
    assert rows[1]["status"] == "ok" and rows[1]["estimated_s"] == pytest.approx(22.0)
    assert rows[2]["status"] == "skipped: estimated 220 s > 39 s left"
    assert rows[3]["status"] == "not run: a smaller one did not fit"


def test_series_records_a_failure_and_stops(gpu):
    now = [0.0]
    measure, calls = _fake(now, fail_at=1000)
    rows = gpu.run_series([100, 1000, 10000], measure, gpu.estimate_time, 1e6, clock=lambda: now[0])
    assert calls == [100, 1000]
    assert rows[1]["status"].startswith("failed: out of memory: RuntimeError: RESOURCE_EXHAUSTED")
    assert rows[2]["status"] == "not run: a smaller one failed"


def test_commit_from_environment_git_stamp_or_unknown(gpu, tmp_path):
    stamp = tmp_path / "gpu_commit.txt"
    assert gpu.resolve_commit({}, None, stamp)["commit"] == "unknown"
    head = _git_head()
    if head is not None:
        written = gpu.write_stamp(stamp)
        assert written["commit"] == head
        got = gpu.resolve_commit({}, None, stamp)
        assert got["commit"] == head and got["commit_source"].startswith("stamp file")
        assert got["uncommitted_changes"] == written["uncommitted_changes"]
    assert gpu.resolve_commit({}, "abc123", stamp) == {"commit": "abc123", "commit_source": "git"}
    assert gpu.resolve_commit({"JAXVPP_COMMIT": "fff000"}, "abc123", stamp)["commit"] == "fff000"


def test_goals_are_judged_from_the_rows(gpu):
    steps = {
        "aladin": {"rows": [{"N": 100000, "status": "converged", "first_call_s": 8.0, "iterations": 77,
                             "us_per_battery_iteration": 2.0}]},
        "solver": {"rows": [{"N": 100000, "status": "ok", "us_per_battery_iteration": 0.5},
                            {"N": 1000000, "status": "ok", "solve_s": 6.0, "first_call_s": 20.0}]},
        "slots": {"rows": [{"slots": 65536, "N_batteries": 1000000, "status": "ok", "solve_s": 3.0,
                            "first_call_s": 12.0}]},
    }  # fmt: skip
    ref = {"solver_us": {1000: 30.0, 10000: 25.0}, "aladin_us": {10000: 100.0}}
    met = [g["met"] for g in gpu.evaluate_goals(steps, ref)]
    # ALADIN 8 s <= 10 s; the solver 6 s > 5 s with 256 slots, 3 s with 65536; 25 / 0.5 = 50x; 100 / 2 = 50x
    assert met == ["yes", "no", "yes", "yes", "yes"]
    steps["aladin"]["rows"][0]["status"] = "max_iter"  # not converged: not met, however fast
    del steps["solver"]["rows"][1]
    assert [g["met"] for g in gpu.evaluate_goals(steps, {})] == ["no", "not measured", "yes"] + ["no CPU reference"] * 2
