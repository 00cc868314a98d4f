"""The ``jaxvpp coordinate`` command: outputs, agreement with the centralized solve, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxvpp import io
from jaxvpp.cli import main
from jaxvpp.problem import random_fleet, synthetic_market


@pytest.fixture()
def small_inputs(tmp_path: Path) -> tuple[Path, Path]:
    fleet = random_fleet(4, seed=3)
    market = synthetic_market(6, 24, seed=3)
    ids = [f"b{i}" for i in range(4)]
    steps = [f"2026-01-01T{t:02d}:00:00Z" for t in range(24)]
    fp, sp = tmp_path / "fleet.csv", tmp_path / "scenarios.csv"
    fp.write_text(io.fleet_csv(ids, fleet))
    sp.write_text(io.scenarios_csv(steps, market))
    return fp, sp


def test_coordinate_writes_outputs_matching_centralized(small_inputs, tmp_path):
    fp, sp = small_inputs
    out_a, out_c = tmp_path / "a", tmp_path / "c"
    assert main(["coordinate", "--fleet", str(fp), "--scenarios", str(sp), "--out", str(out_a)]) == 0
    assert (
        main(["coordinate", "--fleet", str(fp), "--scenarios", str(sp), "--method", "centralized", "--out", str(out_c)])
        == 0
    )
    sa, sc = (json.loads((d / "summary.json").read_text()) for d in (out_a, out_c))
    assert sa["converged"] and sc["converged"]
    assert abs(sa["objective_eur"] - sc["objective_eur"]) <= 1e-6 * max(1.0, abs(sc["objective_eur"]))
    for key in ("expected_revenue_eur", "cvar_eur", "iterations", "wall_time_s", "method"):
        assert key in sa
    assert sa["devices"] == 1 and sa["processes"] == 1
    sched = pd.read_csv(out_a / "schedules.csv")
    assert list(sched.columns) == ["battery_id", "step", "charge_mw", "discharge_mw", "net_mw", "soc_mwh"]
    assert len(sched) == 4 * 24
    np.testing.assert_allclose(sched.net_mw, sched.discharge_mw - sched.charge_mw, atol=1e-12)


def test_bad_input_exits_2_and_writes_nothing(small_inputs, tmp_path, capsys):
    fp, sp = small_inputs
    bad = tmp_path / "bad_fleet.csv"
    text = fp.read_text().splitlines()
    header = text[0].split(",")
    row = text[2].split(",")
    row[header.index("soc_min")] = "0.95"  # above soc_max
    bad.write_text("\n".join([text[0], text[1], ",".join(row), *text[3:]]) + "\n")
    out = tmp_path / "out"
    assert main(["coordinate", "--fleet", str(bad), "--scenarios", str(sp), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad_fleet.csv" in err and "row 3" in err and "soc_min" in err
    assert not out.exists()
    assert main(["coordinate", "--fleet", str(fp), "--scenarios", str(sp), "--alpha", "1.5", "--out", str(out)]) == 2
    assert "--alpha" in capsys.readouterr().err
    assert not out.exists()


def test_infeasible_target_exits_3_and_writes_nothing(small_inputs, tmp_path, capsys):
    fp, sp = small_inputs
    steps = [f"2026-01-01T{t:02d}:00:00Z" for t in range(24)]
    target = np.zeros(24)
    target[4] = 100.0  # four small batteries cannot inject 100 MW
    tp = tmp_path / "target.csv"
    tp.write_text(io.target_csv(steps, target))
    out = tmp_path / "out"
    rc = main(["coordinate", "--fleet", str(fp), "--scenarios", str(sp), "--target", str(tp), "--out", str(out)])
    assert rc == 3
    assert "step" in capsys.readouterr().err
    assert not out.exists()


def test_console_script_and_module_entry_point(tmp_path):
    """``python -m jaxvpp`` runs the built-in example end to end."""
    out = tmp_path / "example"
    proc = subprocess.run(
        [sys.executable, "-m", "jaxvpp", "coordinate", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] and summary["num_batteries"] == 100
