"""The file-facing edge under faults: target labels, output paths checked before any work, writes that are
whole or not at all under SIGKILL, SIGINT and concurrent writers, and results unchanged by row order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxvpp import files, io
from jaxvpp.cli import main
from jaxvpp.config import DEFAULT, load_config
from jaxvpp.errors import InputError
from jaxvpp.market import forecasting
from jaxvpp.market.ingress import read_price_file, synthetic_prices, write_price_file
from jaxvpp.pipeline import run
from jaxvpp.problem import random_fleet, synthetic_market

IDS = ["a", "b", "c"]
STEPS = [f"{t:02d}:00" for t in range(6)]
TARGET = np.array([0.5, -0.8, 1.0, 0.2, -1.2, -0.3])  # MW; feasible for the three batteries
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    paths = {"fleet": d / "fleet.csv", "scenarios": d / "scenarios.csv", "target": d / "target.csv"}
    paths["fleet"].write_text(io.fleet_csv(IDS, random_fleet(3, seed=2)))
    paths["scenarios"].write_text(io.scenarios_csv(STEPS, synthetic_market(4, 6, seed=2)))
    paths["target"].write_text(io.target_csv(STEPS, TARGET))
    return paths


def _argv(command: str, inputs: dict[str, Path], out: Path, *extra: str, target: Path | None = None) -> list[str]:
    argv = [command, "--fleet", str(inputs["fleet"]), "--scenarios", str(inputs["scenarios"])]
    argv += ["--target", str(target or inputs["target"]), "--out", str(out), *extra]
    if command == "coordinate":
        argv.append("--quiet")
    if command == "sweep":
        argv += ["--param", "risk_weight", "--values", "0,1", "--no-plot"]
    return argv


def _schedule(out: Path) -> pd.DataFrame:
    """schedules.csv indexed by battery id and step label."""
    return io.read_schedules(out / "schedules.csv").set_index(["battery_id", "step"]).sort_index()


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> dict[str, Path]:
    """Two complete result sets of `jaxvpp coordinate` (alpha 0.05 and 0.25) to compare others with."""
    d = tmp_path_factory.mktemp("reference")
    refs = {"old": d / "old", "new": d / "new"}
    assert main(_argv("coordinate", inputs, refs["old"], "--alpha", "0.05")) == 0
    assert main(_argv("coordinate", inputs, refs["new"], "--alpha", "0.25")) == 0
    assert not _schedule(refs["old"]).equals(_schedule(refs["new"]))
    return refs


def _which_set(out: Path, reference: dict[str, Path]) -> str:
    """'old' or 'new' when ``out`` holds exactly one complete reference set (fails otherwise)."""
    names = sorted(p.name for p in out.iterdir())
    assert names == ["convergence.csv", "schedules.csv", "summary.json"], names
    alpha = json.loads((out / "summary.json").read_text())["alpha"]
    kind = {0.05: "old", 0.25: "new"}[alpha]
    for name in ("schedules.csv", "convergence.csv"):
        a = pd.read_csv(out / name).drop(columns=["elapsed_s"], errors="ignore")
        b = pd.read_csv(reference[kind] / name).drop(columns=["elapsed_s"], errors="ignore")
        pd.testing.assert_frame_equal(a, b)
    return kind


def _debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".jaxvpp-" in p.name)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("jaxvpp test hook")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------------------------------
# 1. a target is matched to the scenarios' steps by label
# ----------------------------------------------------------------------------------------------------


def test_a_shuffled_target_gives_the_same_result(inputs, reference, tmp_path):
    lines = inputs["target"].read_text().splitlines()
    lines[1], lines[3] = lines[3], lines[1]  # the rows of 00:00 and 02:00 swapped
    shuffled = tmp_path / "target.csv"
    shuffled.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(_argv("coordinate", inputs, out, "--alpha", "0.05", target=shuffled)) == 0
    pd.testing.assert_frame_equal(_schedule(out), _schedule(reference["old"]), atol=1e-9, rtol=0)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, reference["old"]))
    assert a["objective_eur"] == pytest.approx(b["objective_eur"], rel=1e-9)


@pytest.mark.parametrize(
    "rows, row, words",
    [
        ([f"step{t},0" for t in range(6)], 2, "'step0' does not match"),  # labels of another file
        ([f"{t:02d}:00,0" for t in range(5)], None, "missing '05:00'"),
        ([f"{t:02d}:00,0" for t in range(6)] + ["03:00,1"], 8, "duplicate step '03:00'"),
        ([f"{t:02d}:00,0" for t in (0, 1, 2, 3, 4, 7)], 7, "'07:00' does not match"),
    ],
)
@pytest.mark.parametrize("command", ["coordinate", "sensitivity", "sweep"])
def test_bad_target_labels_exit_2_naming_file_row_and_label(command, rows, row, words, inputs, tmp_path, capsys):
    bad = tmp_path / "bad_target.csv"
    bad.write_text("step,target_mw\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(_argv(command, inputs, out, target=bad)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and "bad_target.csv" in line and words in line and "column 'step'" in line
    assert (f"row {row}" in line) if row is not None else ("row " not in line)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------
# 2. output paths: checked before any work, exit 2, no traceback, nothing written
# ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def no_work(monkeypatch):
    """Every solver, forecaster and generator fails if called: a fault must show before any work."""

    def boom(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    for target in (
        "jaxvpp.cli.solve.coordinate",
        "jaxvpp.cli.solve.solve_batteries",
        "jaxvpp.cli.study.sensitivities",
        "jaxvpp.cli.study.sweep",
        "jaxvpp.cli.market.run_forecast",
        "jaxvpp.cli.market.synthetic_prices",
        "jaxvpp.cli.market.read_entsoe_csvs",
        "jaxvpp.cli.market.build_scenarios",
        "jaxvpp.pipeline.synthetic_prices",
        "jaxvpp.pipeline.read_price_file",
    ):
        monkeypatch.setattr(target, boom)


def _fault_cases(tmp: Path, inputs: dict[str, Path]) -> list[tuple[list[str], str, Path]]:
    """(argv, words in the message, a path that must not appear) for every command and fault."""
    a_file = tmp / "a_file"
    a_file.write_text("not a folder\n")
    a_dir = tmp / "a_dir"
    a_dir.mkdir()
    prices = tmp / "prices.csv"
    prices.write_text("timestamp,price_eur_per_mwh\n2025-01-01T00:00:00Z,1\n")
    quantiles = tmp / "quantiles.csv"
    quantiles.write_text("timestamp,q0.05,q0.95\n2025-01-01T00:00:00Z,1,2\n")
    export = tmp / "export.csv"
    export.write_text("MTU (CET/CEST),Day-ahead Price [EUR/MWh]\n")
    under = a_file / "sub"
    cases: list[tuple[list[str], str, Path]] = []
    for command in ("coordinate", "sensitivity", "sweep"):
        cases.append((_argv(command, inputs, a_file), "exists and is not a folder", under))
        cases.append((_argv(command, inputs, under / "out"), "is a file, not a folder", under))
    cases += [
        (["run", "--out", str(a_file), "--data-dir", str(tmp / "data")], "exists and is not a folder", tmp / "data"),
        (["run", "--out", str(tmp / "r"), "--data-dir", str(a_file)], "is a file, not a folder", tmp / "r"),
        (["run", "--out", str(under), "--data-dir", str(tmp / "data")], "is a file, not a folder", tmp / "data"),
        (["forecast", "--prices", str(prices), "--out", str(a_file)], "exists and is not a folder", under),
        (["forecast", "--prices", str(prices), "--out", str(under)], "is a file, not a folder", under),
        (["scenarios", "--quantiles", str(quantiles), "--out", str(a_file)], "exists and is not a folder", under),
        (["synthetic", "--days", "2", "--out", str(a_dir)], "is a folder; give a file name", a_dir / "x"),
        (["synthetic", "--days", "2", "--out", str(under)], "is a file, not a folder", under),
        (["fetch", "--import-csv", str(export), "--out", str(a_dir)], "is a folder; give a file name", a_dir / "x"),
        (["fetch", "--import-csv", str(export), "--cache-dir", str(a_file)], "is a file, not a folder", under),
        (["init-config", "--out", str(a_dir)], "is a folder; give a file name", a_dir / "x"),
        (["init-config", "--out", str(under / "run.toml")], "is a file, not a folder", under),
    ]
    return cases


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def test_every_output_fault_is_found_before_any_work(inputs, tmp_path, capsys, no_work):
    for argv, words, absent in _fault_cases(tmp_path, inputs):
        before = _tree(tmp_path)
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith("error: ") and words in line, (argv, line)
        assert not absent.exists() and _tree(tmp_path) == before, argv  # nothing written, nothing left


def test_a_folder_that_cannot_be_written_is_found_before_any_work(inputs, tmp_path, capsys, monkeypatch, no_work):
    """Permission faults: root may write everywhere, so os.access is monkeypatched to deny writing in one folder
    (the check asks os.access, as a process without the permission would see it)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == locked.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(files.os, "access", access)
    for argv in (
        _argv("coordinate", inputs, locked / "out"),
        _argv("sweep", inputs, locked / "new" / "deeper"),
        ["run", "--out", str(locked / "r"), "--data-dir", str(tmp_path / "data")],
        ["forecast", "--prices", str(tmp_path / "p.csv"), "--out", str(locked / "fc")],
        ["synthetic", "--out", str(locked / "prices.csv")],
        ["init-config", "--out", str(locked / "run.toml")],
    ):
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert "permission denied" in line and str(locked.resolve()) in line, line
        assert list(locked.iterdir()) == [] and not (tmp_path / "data").exists()


def test_a_fault_at_write_time_names_the_path_and_keeps_the_old_set(inputs, reference, tmp_path, capsys, monkeypatch):
    """A fault that only the write shows (here a full disk, by the test hook) is one error line, exit 2."""
    out = tmp_path / "out"
    assert main(_argv("coordinate", inputs, out, "--alpha", "0.05")) == 0
    for point in ("staged", "swapped"):
        monkeypatch.setenv(files.HOOK_ENV, f"{point}:fail")
        assert main(_argv("coordinate", inputs, out, "--alpha", "0.25")) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {out}") and "disk full" in line and "nothing written" in line
        assert _which_set(out, reference) == "old" and _debris(tmp_path) == []
    monkeypatch.setenv(files.HOOK_ENV, "staged:fail")
    fresh = tmp_path / "new" / "deeper"
    assert main(_argv("coordinate", inputs, fresh)) == 2
    assert not (tmp_path / "new").exists()  # the folders it created for the write are gone too


def test_a_failed_run_writes_no_data_folder(tmp_path, monkeypatch):
    """The data folders are written with the results, at the end: a run that fails writes none of them."""

    def boom(*args, **kwargs):
        raise InputError("history too short", file="prices.csv")

    monkeypatch.setattr("jaxvpp.pipeline.run_forecast", boom)
    with pytest.raises(InputError):
        run(DEFAULT, tmp_path / "results", log=None, data_dir=tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------
# 4. SIGKILL during the write: the old or the new complete set, and the next run removes the debris
# ----------------------------------------------------------------------------------------------------


def _start(argv: list[str], hook: str | None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(files.HOOK_ENV, None)
    if hook:
        env[files.HOOK_ENV] = hook
    kwargs.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _default_sigint() -> None:
    """Give the child the default SIGINT disposition: a test run started in the background of a
    non-interactive shell inherits SIGINT ignored, and its children would then never see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_hook(proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Read the child's stderr until the test hook says it has stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "jaxvpp test hook" in line:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the child never reached the hook: {proc.stdout.read()} {proc.stderr.read()}")


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout)``; a child that does not finish in time is killed (not left paused)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


@pytest.mark.slow
@pytest.mark.parametrize("point, expected", [("staged", "old"), ("swapped", "new")])
def test_sigkill_during_the_write_leaves_a_complete_set(point, expected, inputs, reference, tmp_path):
    out = tmp_path / "out"
    assert main(_argv("coordinate", inputs, out, "--alpha", "0.05")) == 0
    child = _start(
        [sys.executable, "-m", "jaxvpp", *_argv("coordinate", inputs, out, "--alpha", "0.25")], f"{point}:pause"
    )
    _wait_for_hook(child)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert _which_set(out, reference) == expected
    assert len(_debris(tmp_path)) == 1  # the dead writer's temporary folder
    assert main(_argv("coordinate", inputs, out, "--alpha", "0.25")) == 0  # the next run
    assert _which_set(out, reference) == "new" and _debris(tmp_path) == []


def test_sigkill_between_the_two_renames_of_the_fallback_swap(tmp_path):
    """Where the atomic exchange is unavailable the old folder is moved aside first; a crash then leaves no
    folder, and the next write puts the old one back before it writes."""
    out = tmp_path / "out"
    files.write_folder(out, {"a.csv": "old\n", "b.csv": "old\n"})
    code = textwrap.dedent(
        f"""
        from jaxvpp import files
        files._renameat2 = None  # as on a system without renameat2
        files.write_folder({str(out)!r}, {{"a.csv": "new\\n", "b.csv": "new\\n"}})
        """
    )
    child = _start([sys.executable, "-c", code], "aside:pause")
    _wait_for_hook(child)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert not out.exists() and [n.split("-")[1] for n in _debris(tmp_path)] == ["new", "old"]
    files.clean_debris(out)
    assert (out / "a.csv").read_text() == "old\n" and (out / "b.csv").read_text() == "old\n"
    assert _debris(tmp_path) == []


def test_debris_of_a_live_writer_is_kept(tmp_path):
    """Only a dead writer's temporary entries are removed: this process is alive, its entry stays."""
    out = tmp_path / "out"
    mine = tmp_path / files._temp_name("out", "new")
    mine.mkdir()
    files.write_folder(out, {"a.csv": "x\n"})
    assert mine.exists()
    other_host = tmp_path / ".out.jaxvpp-new-00000000-1-1-0123abcd"  # another host: cannot be proven dead
    other_host.mkdir()
    files.write_folder(out, {"a.csv": "y\n"})
    assert mine.exists() and other_host.exists()


# ----------------------------------------------------------------------------------------------------
# 5. concurrent writers: one complete set; the second one waits for the first
# ----------------------------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from jaxvpp import files
    tag = sys.argv[2]
    files.write_folder(sys.argv[1], {f"f{i:02d}.csv": f"{tag}\\n" * 2000 for i in range(20)})
    print("done", tag, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True])
def test_a_second_writer_waits_and_the_set_is_complete(existing, tmp_path):
    out = tmp_path / "out"
    if existing:
        files.write_folder(
            out, {f"f{i:02d}.csv": "before\n" for i in range(25)}, owned=[f"f{i:02d}.csv" for i in range(25)]
        )
    first = _start([sys.executable, "-c", _WRITER, str(out), "first"], "staged:sleep=3")
    _wait_for_hook(first)  # it holds the lock, its files staged
    second = _start([sys.executable, "-c", _WRITER, str(out), "second"], None)
    _, err_first = _finish(first, 120)
    _, err_second = _finish(second, 120)
    assert first.returncode == 0 and second.returncode == 0, (err_first, err_second)
    names = sorted(p.name for p in out.iterdir())
    expected = [f"f{i:02d}.csv" for i in range(20)] + ([f"f{i:02d}.csv" for i in range(20, 25)] if existing else [])
    assert names == sorted(expected)
    tags = {(out / f"f{i:02d}.csv").read_text().splitlines()[0] for i in range(20)}
    assert tags == {"second"}  # the one that wrote last, whole: it waited for the first one
    assert _debris(tmp_path) == []


@pytest.mark.slow
def test_two_commands_at_once_leave_one_complete_set(inputs, reference, tmp_path):
    out = tmp_path / "out"
    procs = [
        _start([sys.executable, "-m", "jaxvpp", *_argv("coordinate", inputs, out, "--alpha", alpha)], None)
        for alpha in ("0.05", "0.25")
    ]
    for p in procs:
        _, err = _finish(p, 300)
        assert p.returncode == 0, err
    assert _which_set(out, reference) in ("old", "new") and _debris(tmp_path) == []


# ----------------------------------------------------------------------------------------------------
# 6. SIGINT, tolerances, stale files, naive timestamps, BOM, time zone, one forecast configuration
# ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigint_is_one_line_exit_130_and_nothing_written(inputs, tmp_path):
    out = tmp_path / "out"
    child = _start([sys.executable, "-m", "jaxvpp", *_argv("coordinate", inputs, out)], "staged:pause")
    _wait_for_hook(child)  # every file prepared, nothing committed
    child.send_signal(signal.SIGINT)
    stdout, stderr = _finish(child, 60)
    assert child.returncode == 130
    assert _one_error_line(stderr) == "interrupted: nothing written"
    assert not out.exists() and _debris(tmp_path) == []


@pytest.mark.slow
def test_sigint_during_the_commit_is_raised_after_it(inputs, reference, tmp_path):
    out = tmp_path / "out"
    child = _start(
        [sys.executable, "-m", "jaxvpp", *_argv("coordinate", inputs, out, "--alpha", "0.25")], "swapped:sleep=2"
    )
    _wait_for_hook(child)
    child.send_signal(signal.SIGINT)
    _, stderr = _finish(child, 60)
    assert child.returncode == 130
    assert _one_error_line(stderr) == f"interrupted after writing {out} (complete)"
    assert _which_set(out, reference) == "new" and _debris(tmp_path) == []


@pytest.mark.parametrize("tol", ["inf", "nan", "0", "-1e-8"])
@pytest.mark.parametrize("command", ["coordinate", "sensitivity", "sweep"])
def test_non_finite_or_non_positive_tolerance_is_rejected(command, tol, inputs, tmp_path, capsys, no_work):
    out = tmp_path / "out"
    assert main(_argv(command, inputs, out, f"--tol={tol}")) == 2
    assert "parameter --tol" in _one_error_line(capsys.readouterr().err)
    assert main(_argv(command, inputs, out, "--dt-hours", "inf")) == 2
    assert "parameter --dt-hours" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_run_removes_its_own_stale_files_and_keeps_the_others(inputs, tmp_path):
    out = tmp_path / "out"
    assert main(_argv("coordinate", inputs, out)) == 0
    assert (out / "convergence.csv").is_file()
    (out / "notes.txt").write_text("mine\n")
    argv = _argv("coordinate", inputs, out)
    i = argv.index("--target")
    assert main(argv[:i] + argv[i + 2 :]) == 0  # no target: no convergence history
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "schedules.csv", "summary.json"]
    assert (out / "notes.txt").read_text() == "mine\n"
    assert json.loads((out / "summary.json").read_text())["coordinated"] is False


def test_naive_timestamps_are_noted(tmp_path, capsys, monkeypatch):
    df = synthetic_prices(2, 60, seed=0)
    naive = tmp_path / "naive.csv"
    write_price_file(df, tmp_path / "aware.csv")
    naive.write_text((tmp_path / "aware.csv").read_text().replace("Z,", ","))
    notes: list[str] = []
    back = read_price_file(naive, notes=notes)
    assert len(notes) == 1 and "taken as UTC" in notes[0] and "naive.csv" in notes[0]
    pd.testing.assert_frame_equal(back, read_price_file(tmp_path / "aware.csv"))
    notes.clear()
    read_price_file(tmp_path / "aware.csv", notes=notes)
    assert notes == []

    def stop(*args, **kwargs):
        raise InputError("stopped after reading")

    monkeypatch.setattr("jaxvpp.cli.market.run_forecast", stop)
    assert main(["forecast", "--prices", str(naive), "--out", str(tmp_path / "fc")]) == 2
    err = capsys.readouterr().err
    assert "note: " in err and "taken as UTC" in err


def test_a_toml_file_with_a_byte_order_mark_is_read(tmp_path):
    p = tmp_path / "bom.toml"
    p.write_bytes(b"\xef\xbb\xbf[fleet]\nbatteries = 7\n")
    assert load_config(p).fleet.batteries == 7


def test_the_market_time_zone_comes_from_the_config(tmp_path, monkeypatch):
    seen = {}

    def capture(*args, tz, **kwargs):
        seen["tz"] = tz
        raise InputError("stop")

    monkeypatch.setattr("jaxvpp.pipeline.synthetic_prices", capture)
    cfg = DEFAULT.override({"market.time_zone": "Europe/Lisbon"})
    with pytest.raises(InputError, match="stop"):
        run(cfg, tmp_path / "r", log=None, data_dir=tmp_path / "d")
    assert seen["tz"] == "Europe/Lisbon"
    with pytest.raises(InputError, match="unknown time zone"):
        DEFAULT.override({"market.time_zone": "Mars/Olympus"})
    bad = tmp_path / "bad.toml"
    bad.write_text('[market]\ntime_zone = "CEST+1"\n')
    with pytest.raises(InputError, match="line 2, key market.time_zone"):
        load_config(bad)


def test_one_forecast_configuration():
    """The [forecast] keys are the forecaster's fields of the same names, with its defaults."""
    section, forecaster = DEFAULT.forecast, forecasting.ForecastConfig()
    for f in section.__dataclass_fields__:
        assert getattr(section, f) == getattr(forecaster, f), f
    changed = DEFAULT.override({"forecast.refit_every_days": 3, "forecast.boosting_iterations": 9}).forecast
    built = changed.forecaster("Europe/Lisbon")
    assert (built.refit_every_days, built.boosting_iterations, built.tz) == (3, 9, "Europe/Lisbon")


# ----------------------------------------------------------------------------------------------------
# The result does not depend on the order of the rows of any input file
# ----------------------------------------------------------------------------------------------------


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_row_order_of_every_input_file_does_not_change_the_result(data, inputs, reference, tmp_path_factory):
    d = tmp_path_factory.mktemp("shuffled")
    shuffled = {}
    for key, path in inputs.items():
        header, *rows = path.read_text().splitlines()
        order = data.draw(st.permutations(range(len(rows))), label=key)
        shuffled[key] = d / path.name
        shuffled[key].write_text("\n".join([header] + [rows[i] for i in order]) + "\n")
    out = d / "out"
    assert main(_argv("coordinate", shuffled, out, "--alpha", "0.05", target=shuffled["target"])) == 0
    pd.testing.assert_frame_equal(_schedule(out), _schedule(reference["old"]), atol=1e-6, rtol=0)
    a, b = (json.loads((p / "summary.json").read_text()) for p in (out, reference["old"]))
    assert a["objective_eur"] == pytest.approx(b["objective_eur"], rel=1e-7, abs=1e-7)
    np.testing.assert_allclose(a["coupling_price_eur_per_mwh"], b["coupling_price_eur_per_mwh"], atol=1e-5)
