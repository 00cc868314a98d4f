"""``jaxvpp run`` end to end on a small instance: files, convergence, target, frontier, atomicity."""

from __future__ import annotations

import contextlib
import io as _io
import json

import numpy as np
import pandas as pd
import pytest

from jaxvpp import io
from jaxvpp.cli import build_parser
from jaxvpp.cli.run import run_config
from jaxvpp.config import load_config
from jaxvpp.pipeline import run

SMALL = """\
[market]
history_days = 60
[forecast]
backtest_days = 7
calibration_days = 7
boosting_iterations = 30
[scenarios]
samples = 200
count = 6
[fleet]
batteries = 5
seed = 1
[coordination]
admm = true
admm_max_iter = 20
[frontier]
risk_weights = [2.0, 0.0, 0.5]
[output]
dpi = 40
"""
N = 8  # the command line's --batteries overrides the file's 5

RESULTS = (
    "schedules.csv",
    "schedules_uncoordinated.csv",
    "summary.json",
    "convergence.csv",
    "convergence_admm.csv",
    "frontier.csv",
    "fleet.csv",
    "target.csv",
    "scenarios.csv",
    "quantiles.csv",
    "forecast_metrics.json",
    "config.toml",
    "risk_bands.png",
    "scenarios.png",
    "schedule.png",
    "soc.png",
    "convergence.png",
    "frontier.png",
)
PROCESSED = (
    "quantiles.csv",
    "backtest.csv",
    "baseline_backtest.csv",
    "forecast_metrics.json",
    "scenarios.csv",
    "scenario_samples.csv",
    "scenario_metrics.json",
    "scenarios_tail.csv",
    "scenarios_kmeans.csv",
    "scenarios_medoids.csv",
)


def _cli(argv: list[str]) -> tuple[int, str, str]:
    """Run a subcommand in this process (keeping the tests' compilation cache) and capture its output."""
    args = build_parser().parse_args(argv)
    out, err = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = args.func(args)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    cfg = base / "small.toml"
    cfg.write_text(SMALL)
    out, data = base / "results", base / "data"
    rc, stdout, stderr = _cli(
        ["run", "--config", str(cfg), "--batteries", str(N), "--out", str(out), "--data-dir", str(data)]
    )
    assert rc == 0, stderr
    return base, out, data, stdout


def test_every_output_file_is_written(small_run):
    _, out, data, _ = small_run
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULTS)
    assert sorted(p.name for p in (data / "processed").iterdir()) == sorted(PROCESSED)
    assert sorted(p.name for p in (data / "raw").iterdir()) == ["prices.csv", "realised.csv"]
    for name in RESULTS:
        if name.endswith(".png"):
            blob = (out / name).read_bytes()
            assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000, name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_progress_display_and_live_aladin_log(small_run):
    *_, stdout = small_run
    lines = stdout.splitlines()
    for k, phase in enumerate(
        (
            "market",
            "forecast",
            "scenarios",
            "fleet",
            "uncoordinated",
            "target",
            "ALADIN",
            "ADMM",
            "frontier",
            "outputs",
        ),
        start=1,
    ):
        done = [ln for ln in lines if ln.startswith(f"[{k:>2}/10] {phase} ") and ln.endswith(" s)")]
        assert len(done) == 1, (phase, lines)
    summary = json.loads((small_run[1] / "summary.json").read_text())
    it_lines = [ln for ln in lines if ln.startswith("  it ")]
    # every ALADIN iteration is logged live, plus a few ADMM lines
    assert len(it_lines) >= summary["iterations"]
    first_aladin = lines.index(next(ln for ln in lines if ln.startswith("[ 7/10] ALADIN:")))
    assert lines[first_aladin + 1].startswith("  it   1 ")


def test_summary_converged_and_target_met(small_run):
    _, out, _, _ = small_run
    s = json.loads((out / "summary.json").read_text())
    assert s["converged"] is True and s["status"] == "converged" and s["num_batteries"] == N
    assert s["devices"] == 1 and s["config"]["coordination"]["devices"] == 1
    for key in (
        "iterations",
        "objective_eur",
        "expected_revenue_eur",
        "cvar_eur",
        "coupling_residual_mw",
        "coupling_price_eur_per_mwh",
        "phase_wall_time_s",
        "wall_time_s",
    ):
        assert key in s, key
    for side in ("coordinated", "uncoordinated"):
        assert {"objective_eur", "expected_revenue_eur", "cvar_eur", "realised_revenue_eur"} <= set(s[side])
    assert set(s["phase_wall_time_s"]) == {
        "market",
        "forecast",
        "scenarios",
        "fleet",
        "uncoordinated",
        "target",
        "ALADIN",
        "ADMM",
        "frontier",
        "outputs",
    }
    ids, _, c, d, e = io.schedules_arrays(io.read_schedules(out / "schedules.csv"))
    assert len(ids) == N
    target = pd.read_csv(out / "target.csv")["target_mw"].to_numpy()
    assert np.max(np.abs((d - c).sum(axis=0) - target)) <= 1e-6 * N
    assert np.allclose(target, s["target"]["target_mw"])
    # the schedules respect every battery's energy window
    _, fleet = io.read_fleet(out / "fleet.csv")
    E = np.asarray(fleet.capacity_mwh)[:, None]
    assert np.all(e >= np.asarray(fleet.soc_min)[:, None] * E - 1e-6)
    assert np.all(e <= np.asarray(fleet.soc_max)[:, None] * E + 1e-6)
    # coordination matters: alone, the fleet misses the target
    *_, cu, du, _ = io.schedules_arrays(io.read_schedules(out / "schedules_uncoordinated.csv"))
    miss = np.abs((du - cu).sum(axis=0) - target).sum()
    assert miss > 0.5 and abs(miss - s["uncoordinated"]["target_deviation_mwh"]) < 1e-6
    conv = pd.read_csv(out / "convergence.csv")
    assert len(conv) == s["iterations"] and conv["coupling_residual_mw"].iloc[-1] <= 1e-6 * N


def test_coordination_costs_the_fleet_something(small_run):
    """The coordinated problem is the uncoordinated one plus the coupling constraint."""
    s = json.loads((small_run[1] / "summary.json").read_text())
    unc, coord = s["uncoordinated"]["objective_eur"], s["coordinated"]["objective_eur"]
    assert unc <= coord + 1e-6 * max(1.0, abs(unc))
    assert s["cost_of_meeting_target_eur"] == pytest.approx(coord - unc)
    assert s["objective_eur"] == coord


def test_frontier_is_monotone_in_the_risk_weight(small_run):
    """A larger risk weight never raises the CVaR and never raises the expected profit."""
    f = pd.read_csv(small_run[1] / "frontier.csv")
    assert list(f["risk_weight"]) == [0.0, 0.5, 2.0]  # sorted, whatever the config's order
    assert f["converged"].all()
    tol = 1e-6 * max(1.0, f["expected_profit_eur"].abs().max())
    assert np.all(np.diff(f["cvar_eur"]) <= tol)
    assert np.all(np.diff(f["expected_profit_eur"]) <= tol)
    assert f["cvar_eur"].iloc[0] - f["cvar_eur"].iloc[-1] > 1.0  # and risk aversion does something here
    np.testing.assert_allclose(f["expected_profit_eur"], f["expected_revenue_eur"] - f["degradation_eur"])


def test_files_agree_with_each_other(small_run):
    base, out, data, _ = small_run
    assert (out / "scenarios.csv").read_text() == (data / "processed" / "scenarios.csv").read_text()
    steps, market = io.read_scenarios(out / "scenarios.csv")
    assert market.num_scenarios == 6 and len(steps) == 24
    q = pd.read_csv(out / "quantiles.csv")
    assert list(q["timestamp"]) == steps
    prices = pd.read_csv(data / "raw" / "prices.csv", keep_default_na=False)
    assert list(prices["timestamp"].iloc[-24:]) == steps and (prices["price_eur_per_mwh"].iloc[-24:] == "").all()
    assert list(pd.read_csv(data / "raw" / "realised.csv")["timestamp"]) == steps
    expected = run_config(
        build_parser().parse_args(
            [
                "run",
                "--config",
                str(base / "small.toml"),
                "--batteries",
                str(N),
                "--out",
                str(out),
                "--data-dir",
                str(data),
            ]
        )
    )
    assert load_config(out / "config.toml") == expected  # the effective config, flags applied


@pytest.mark.slow
def test_failed_run_leaves_nothing_behind(small_run, tmp_path, monkeypatch):
    base = small_run[0]
    cfg = load_config(base / "small.toml").override({"fleet.batteries": N})  # compiled programs are reused
    out, data = tmp_path / "results", tmp_path / "data"

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr("jaxvpp.plots.frontier", broken)  # the last step before writing
    with pytest.raises(RuntimeError, match="plotting failed"):
        run(cfg, out, log=None, data_dir=data)
    assert not out.exists() and not data.exists()
    assert list(tmp_path.iterdir()) == []
    # an existing results folder keeps its files untouched
    out.mkdir()
    (out / "summary.json").write_text("old\n")
    with pytest.raises(RuntimeError):
        run(cfg, out, log=None, data_dir=data)
    assert [p.name for p in out.iterdir()] == ["summary.json"] and (out / "summary.json").read_text() == "old\n"


def test_infeasible_target_exits_3_and_writes_nothing(small_run, tmp_path):
    base = small_run[0]
    steps = pd.read_csv(small_run[1] / "target.csv")["step"]
    target = np.zeros(len(steps))
    target[3] = 1000.0  # far beyond the fleet's power
    tp = tmp_path / "target.csv"
    tp.write_text(io.target_csv(list(steps), target))
    out, data = tmp_path / "results", tmp_path / "data"
    rc, _, err = _cli(
        [
            "run",
            "--config",
            str(base / "small.toml"),
            "--batteries",
            str(N),
            "--target",
            str(tp),
            "--out",
            str(out),
            "--data-dir",
            str(data),
            "--no-admm",
            "--quiet",
        ]
    )
    assert rc == 3 and "infeasible target" in err and "exceeds the fleet's discharge power" in err
    assert not out.exists() and not data.exists()


def _local_labels(steps: list[str]) -> list[str]:
    """The same instants written in CET (+01:00) instead of UTC."""
    return [(pd.Timestamp(s) + pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00") for s in steps]


def test_target_file_rows_are_matched_by_label(small_run, tmp_path, monkeypatch):
    """A target.csv in another row order and another notation of the same instants gives the same run; the
    run that fails at the write (a full disk, by the test hook) writes no folder at all, data included."""
    base, ref, _, _ = small_run
    frame = pd.read_csv(ref / "target.csv")
    shuffled = pd.DataFrame({"step": _local_labels(list(frame["step"])), "target_mw": frame["target_mw"]})
    tp = tmp_path / "target.csv"
    tp.write_text(shuffled.iloc[::-1].to_csv(index=False))
    cfg = load_config(base / "small.toml").override(
        {
            "fleet.batteries": N,
            "target.file": str(tp),
            "coordination.admm": False,
            "frontier.risk_weights": [],
            "output.plots": False,
        }
    )
    out, data = tmp_path / "results", tmp_path / "data"
    out.mkdir()
    (out / "summary.json").write_text("old\n")
    monkeypatch.setenv("JAXVPP_TEST_HOOK", "swapped:fail")
    with pytest.raises(OSError, match="disk full"):
        run(cfg, out, log=None, data_dir=data)
    assert not data.exists() and [p.name for p in out.iterdir()] == ["summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "target.csv"]
    monkeypatch.delenv("JAXVPP_TEST_HOOK")
    run(cfg, out, log=None, data_dir=data)
    a = io.read_schedules(out / "schedules.csv").set_index(["battery_id", "step"]).sort_index()
    b = io.read_schedules(ref / "schedules.csv").set_index(["battery_id", "step"]).sort_index()
    pd.testing.assert_frame_equal(a, b, atol=1e-9, rtol=0)
    assert "old\n" != (out / "summary.json").read_text()


def test_target_file_with_foreign_labels_exits_2(small_run, tmp_path):
    base, ref, _, _ = small_run
    n = len(pd.read_csv(ref / "target.csv"))
    tp = tmp_path / "target.csv"
    tp.write_text("step,target_mw\n" + "".join(f"step{t},0\n" for t in range(n)))
    out, data = tmp_path / "results", tmp_path / "data"
    rc, _, err = _cli(
        ["run", "--config", str(base / "small.toml"), "--batteries", str(N), "--target", str(tp)]
        + ["--out", str(out), "--data-dir", str(data), "--no-admm", "--quiet"]
    )
    assert rc == 2 and "target.csv, row 2, column 'step'" in err and "'step0' does not match" in err
    assert not out.exists() and not data.exists()
