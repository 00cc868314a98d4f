"""The data contract: every bad input gives one InputError naming file, row (line number) and column."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxvpp import io
from jaxvpp.errors import InfeasibleTargetError, InputError
from jaxvpp.problem import DEFAULTS, FLEET_COLUMNS, Market, make_fleet, random_fleet, synthetic_market

GOOD_FLEET = (
    "battery_id,capacity_mwh,power_mw,ramp_mw_per_h,soc_min,soc_max,soc_initial,eta_charge,eta_discharge,"
    "risk_weight,degradation_eur_per_mwh,quadratic_cost_eur_per_mw2h\n"
    "b1,2,1.8,1.8,0.1,0.9,0.5,0.85,0.9,0.5,1,0.01\n"
    "b2,3,1,,0.2,0.8,0.3,0.9,0.95,0,0,0\n"
    "b3,1,0.5,inf,0,1,1,1,1,2,3,0.1\n"
)
GOOD_SCEN = "scenario,probability,00:00,01:00,02:00\ns1,0.25,10,20,30\ns2,0.75,-5,40.5,1e2\n"
GOOD_TARGET = "step,target_mw\n00:00,1\n01:00,-0.5\n02:00,0\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _expect(exc: InputError, name: str, row: int | None, column: str | None) -> None:
    """The error and its message name the file, the row and the column."""
    msg = str(exc)
    assert exc.file is not None and Path(exc.file).name == name and name in msg, msg
    assert exc.row == row, (exc.row, msg)
    if row is not None:
        assert f"row {row}" in msg, msg
    assert exc.column == column, (exc.column, msg)
    if column is not None:
        assert f"column {column!r}" in msg, msg


# ------------------------------------------------------------------------------------------------ errors
def test_input_error_message_format():
    e = InputError("soc_min (0.95) must be below soc_max (0.9)", file="fleet.csv", row=4, column="soc_min")
    assert str(e) == "fleet.csv, row 4, column 'soc_min': soc_min (0.95) must be below soc_max (0.9)"
    assert isinstance(e, ValueError)
    assert str(InputError("bad", column="--alpha")) == "parameter --alpha: bad"
    assert str(InputError("bad")) == "bad"
    assert str(InputError("bad", file="x.csv")) == "x.csv: bad"


def test_infeasible_target_error():
    e = InfeasibleTargetError("cannot follow the target", [3, 5])
    assert e.steps == [3, 5] and isinstance(e, RuntimeError) and "3, 5" in str(e)


# ------------------------------------------------------------------------------------------------ good files
def test_read_good_files(tmp_path):
    ids, fleet = io.read_fleet(_write(tmp_path, "fleet.csv", GOOD_FLEET))
    assert ids == ["b1", "b2", "b3"]
    assert fleet.size == 3
    np.testing.assert_array_equal(np.asarray(fleet.ramp_mw_per_h), [1.8, np.inf, np.inf])
    np.testing.assert_array_equal(np.asarray(fleet.capacity_mwh), [2, 3, 1])
    assert np.asarray(fleet.capacity_mwh).dtype == np.float64
    steps, market = io.read_scenarios(_write(tmp_path, "scenarios.csv", GOOD_SCEN))
    assert steps == ["00:00", "01:00", "02:00"]
    np.testing.assert_array_equal(np.asarray(market.prices), [[10, 20, 30], [-5, 40.5, 100]])
    np.testing.assert_array_equal(np.asarray(market.probabilities), [0.25, 0.75])
    target = io.read_target(_write(tmp_path, "target.csv", GOOD_TARGET), len(steps), step_labels=steps)
    np.testing.assert_array_equal(target, [1, -0.5, 0])


def test_fleet_defaults_only_id_required(tmp_path):
    ids, fleet = io.read_fleet(_write(tmp_path, "fleet.csv", "battery_id\na\nb\n"))
    assert ids == ["a", "b"]
    for col in FLEET_COLUMNS:  # a missing ramp column takes the default ramp (not "no limit")
        np.testing.assert_array_equal(np.asarray(getattr(fleet, col)), [DEFAULTS[col]] * 2)


def test_fleet_empty_cells_take_defaults_ramp_empty_is_inf(tmp_path):
    text = "battery_id,capacity_mwh,ramp_mw_per_h,risk_weight\na,,,\nb,4, 2 ,0\n"
    ids, fleet = io.read_fleet(_write(tmp_path, "fleet.csv", text))
    np.testing.assert_array_equal(np.asarray(fleet.capacity_mwh), [2.0, 4.0])
    np.testing.assert_array_equal(np.asarray(fleet.ramp_mw_per_h), [np.inf, 2.0])
    np.testing.assert_array_equal(np.asarray(fleet.risk_weight), [0.5, 0.0])


def test_bom_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "fleet.csv"
    p.write_bytes("\ufeffbattery_id,power_mw\r\na,1\r\n\r\nb,x\r\n".encode("utf-8"))
    with pytest.raises(InputError) as ei:
        io.read_fleet(p)
    _expect(ei.value, "fleet.csv", 4, "power_mw")  # the blank line still counts


# ------------------------------------------------------------------------------------------------ bad fleets
HEADER = (
    "battery_id,capacity_mwh,power_mw,ramp_mw_per_h,soc_min,soc_max,soc_initial,eta_charge,eta_discharge,"
    "risk_weight,degradation_eur_per_mwh,quadratic_cost_eur_per_mw2h\n"
)
OK_ROW = "ok,2,1.8,1.8,0.1,0.9,0.5,0.85,0.9,0.5,1,0.01\n"


def _row(**over: str) -> str:
    vals = dict(zip(HEADER.strip().split(","), OK_ROW.strip().split(",")))
    vals["battery_id"] = "bad"
    vals.update(over)
    return ",".join(vals.values()) + "\n"


BAD_FLEET_ROWS = [
    (dict(power_mw="abc"), "power_mw", "not a number"),
    (dict(capacity_mwh="nan"), "capacity_mwh", "NaN"),
    (dict(capacity_mwh="inf"), "capacity_mwh", "finite"),
    (dict(risk_weight="-inf"), "risk_weight", "finite"),
    (dict(ramp_mw_per_h="nan"), "ramp_mw_per_h", "NaN"),
    (dict(soc_min="0.95"), "soc_min", "must be below soc_max"),
    (dict(soc_min="0.9"), "soc_min", "must be below soc_max"),
    (dict(soc_initial="0.05"), "soc_initial", "[soc_min, soc_max]"),
    (dict(soc_initial="0.95"), "soc_initial", "[soc_min, soc_max]"),
    (dict(soc_max="1.2"), "soc_max", "[0, 1]"),
    (dict(soc_min="-0.1"), "soc_min", "[0, 1]"),
    (dict(eta_charge="0"), "eta_charge", "(0, 1]"),
    (dict(eta_discharge="1.01"), "eta_discharge", "(0, 1]"),
    (dict(capacity_mwh="0"), "capacity_mwh", "positive"),
    (dict(capacity_mwh="-1"), "capacity_mwh", "positive"),
    (dict(power_mw="0"), "power_mw", "positive"),
    (dict(power_mw="-2"), "power_mw", "positive"),
    (dict(ramp_mw_per_h="-1"), "ramp_mw_per_h", ">= 0"),
    (dict(risk_weight="-0.1"), "risk_weight", ">= 0"),
    (dict(degradation_eur_per_mwh="-1"), "degradation_eur_per_mwh", ">= 0"),
    (dict(quadratic_cost_eur_per_mw2h="-0.01"), "quadratic_cost_eur_per_mw2h", ">= 0"),
    (dict(battery_id=""), "battery_id", "empty"),
    (dict(battery_id="ok"), "battery_id", "duplicate"),
    (dict(power_mw="1_0"), "power_mw", "not a number"),
]


@pytest.mark.parametrize(
    "over,column,words", BAD_FLEET_ROWS, ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(BAD_FLEET_ROWS)]
)
def test_bad_fleet_cell(tmp_path, over, column, words):
    text = HEADER + OK_ROW + OK_ROW.replace("ok", "ok2") + _row(**over)  # the bad battery is on line 4
    with pytest.raises(InputError) as ei:
        io.read_fleet(_write(tmp_path, "fleet.csv", text))
    _expect(ei.value, "fleet.csv", 4, column)
    assert words in str(ei.value)


def test_fleet_missing_file(tmp_path):
    with pytest.raises(InputError) as ei:
        io.read_fleet(tmp_path / "fleet.csv")
    _expect(ei.value, "fleet.csv", None, None)
    assert "not found" in str(ei.value)


def test_fleet_missing_required_column(tmp_path):
    with pytest.raises(InputError) as ei:
        io.read_fleet(_write(tmp_path, "fleet.csv", "capacity_mwh\n2\n"))
    _expect(ei.value, "fleet.csv", 1, "battery_id")


def test_fleet_unknown_column(tmp_path):
    with pytest.raises(InputError) as ei:
        io.read_fleet(_write(tmp_path, "fleet.csv", "battery_id,capacity_mhw\na,2\n"))
    _expect(ei.value, "fleet.csv", 1, "capacity_mhw")
    assert "typo" in str(ei.value)


def test_fleet_duplicate_header(tmp_path):
    with pytest.raises(InputError) as ei:
        io.read_fleet(_write(tmp_path, "fleet.csv", "battery_id,power_mw,power_mw\na,1,1\n"))
    _expect(ei.value, "fleet.csv", 1, "power_mw")


@pytest.mark.parametrize("text,row", [("", None), ("\n\n", None), ("battery_id\n", 2)])
def test_fleet_empty(tmp_path, text, row):
    with pytest.raises(InputError) as ei:
        io.read_fleet(_write(tmp_path, "fleet.csv", text))
    _expect(ei.value, "fleet.csv", row, None)


def test_fleet_ragged_row(tmp_path):
    with pytest.raises(InputError) as ei:
        io.read_fleet(_write(tmp_path, "fleet.csv", "battery_id,power_mw\na,1\nb,1,2\n"))
    _expect(ei.value, "fleet.csv", 3, None)


def test_duplicate_id_names_first_row(tmp_path):
    with pytest.raises(InputError) as ei:
        io.read_fleet(_write(tmp_path, "fleet.csv", "battery_id\na\nb\na\n"))
    _expect(ei.value, "fleet.csv", 4, "battery_id")
    assert "first on row 2" in str(ei.value)


# ------------------------------------------------------------------------------------------------ bad scenarios
BAD_SCENARIOS = [
    ("scenario,00:00\ns1,1\n", 1, "probability", "missing"),
    ("probability,00:00\n1,1\n", 1, "scenario", "missing"),
    ("scenario,probability,00:00,01:00\ns1,0.5,1,2\ns2,0.5,x,2\n", 3, "00:00", "not a number"),
    ("scenario,probability,00:00,01:00\ns1,0.5,1,nan\ns2,0.5,1,2\n", 2, "01:00", "NaN"),
    ("scenario,probability,00:00,01:00\ns1,0.5,1,2\ns2,0.5,inf,2\n", 3, "00:00", "finite"),
    ("scenario,probability,00:00\ns1,1.5,1\ns2,-0.5,1\n", 3, "probability", ">= 0"),
    ("scenario,probability,00:00\ns1,0.5,1\ns2,0.4,1\n", None, "probability", "sum to 0.9"),
    ("scenario,probability,00:00\ns1,abc,1\n", 2, "probability", "not a number"),
    ("scenario,probability,00:00\ns1,0.5,1\ns1,0.5,1\n", 3, "scenario", "duplicate"),
    ("scenario,probability\ns1,1\n", 1, None, "no price columns"),
    ("scenario,probability,00:00\n", 2, None, "no scenarios"),
    ("scenario,probability,00:00,00:00\ns1,1,1,1\n", 1, "00:00", "duplicate"),
]


@pytest.mark.parametrize("text,row,column,words", BAD_SCENARIOS, ids=[w for *_, w in BAD_SCENARIOS])
def test_bad_scenarios(tmp_path, text, row, column, words):
    with pytest.raises(InputError) as ei:
        io.read_scenarios(_write(tmp_path, "scenarios.csv", text))
    _expect(ei.value, "scenarios.csv", row, column)
    assert words in str(ei.value)


def test_scenarios_empty_and_missing(tmp_path):
    with pytest.raises(InputError) as ei:
        io.read_scenarios(_write(tmp_path, "scenarios.csv", ""))
    _expect(ei.value, "scenarios.csv", None, None)
    with pytest.raises(InputError) as ei:
        io.read_scenarios(tmp_path / "nope.csv")
    _expect(ei.value, "nope.csv", None, None)


def test_probabilities_within_tolerance_are_normalised(tmp_path):
    _, market = io.read_scenarios(
        _write(tmp_path, "scenarios.csv", "scenario,probability,a\ns1,0.5000004,1\ns2,0.5,2\n")
    )
    assert abs(float(np.sum(np.asarray(market.probabilities))) - 1.0) < 1e-15


# ------------------------------------------------------------------------------------------------ bad targets
@pytest.mark.parametrize(
    "text,row,column,words",
    [
        ("step,target_mw\n00:00,1\n01:00,2\n", None, "step", "2 steps, but the price scenarios have 3"),
        ("step,target_mw\n00:00,1\n01:00,2\n02:00,3\n03:00,4\n", 5, "step", "4 steps"),
        ("step,target_mw\n00:00,1\n01:00,x\n02:00,3\n", 3, "target_mw", "not a number"),
        ("step,target_mw\n00:00,1\n01:00,nan\n02:00,3\n", 3, "target_mw", "NaN"),
        ("step\n00:00\n", 1, "target_mw", "missing"),
        ("step,target_mw,extra\n00:00,1,1\n", 1, "extra", "unknown"),
        ("step,target_mw\n", 2, None, "no steps"),
        ("step,target_mw\n00:00,1\n02:30,2\n01:00,3\n", 3, "step", "does not match"),
        ("step,target_mw\n00:00,1\n01:00,2\n00:00,3\n", 4, "step", "duplicate step '00:00'"),
        ("step,target_mw\nstep0,1\nstep1,2\nstep2,3\n", 2, "step", "does not match"),
        ("step,target_mw\n00:00,1\n02:00,2\n", None, "step", "missing '01:00'"),
    ],
)
def test_bad_target(tmp_path, text, row, column, words):
    with pytest.raises(InputError) as ei:
        io.read_target(_write(tmp_path, "target.csv", text), 3, step_labels=["00:00", "01:00", "02:00"])
    _expect(ei.value, "target.csv", row, column)
    assert words in str(ei.value)


def test_target_rows_are_matched_to_the_steps_by_label(tmp_path):
    steps = ["00:00", "01:00", "02:00"]
    shuffled = "step,target_mw\n02:00,3\n00:00,1\n01:00,-2\n"
    target = io.read_target(_write(tmp_path, "target.csv", shuffled), 3, step_labels=steps)
    np.testing.assert_array_equal(target, [1, -2, 3])
    # timestamps with offsets match the instant, whatever the notation
    utc = ["2025-01-01T23:00:00Z", "2025-01-02T00:00:00Z"]
    local = "step,target_mw\n2025-01-02T01:00:00+01:00,5\n2025-01-02T00:00:00+01:00,4\n"
    np.testing.assert_array_equal(io.read_target(_write(tmp_path, "t.csv", local), 2, step_labels=utc), [4, 5])
    with pytest.raises(InputError) as ei:  # a naive timestamp names no instant
        io.read_target(_write(tmp_path, "t.csv", "step,target_mw\n2025-01-01T23:00:00,1\n"), 2, step_labels=utc)
    _expect(ei.value, "t.csv", 2, "step")


def test_check_steps():
    io.check_steps(3, 3, file="target.csv")
    with pytest.raises(InputError) as ei:
        io.check_steps(2, 3, file="target.csv", column="step")
    assert "target.csv" in str(ei.value) and "2 steps" in str(ei.value)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, math.nan, math.inf])
def test_validate_alpha_rejects(alpha):
    with pytest.raises(InputError) as ei:
        io.validate_alpha(alpha)
    assert ei.value.column == "--alpha" and str(ei.value).startswith("parameter --alpha: alpha must lie in (0, 1)")


def test_validate_alpha_accepts():
    assert io.validate_alpha(0.05) == 0.05


# ------------------------------------------------------------------------------------------------ writing
def test_write_outputs_creates_and_replaces(tmp_path):
    out = tmp_path / "a" / "results"
    io.write_outputs(out, {"x.txt": "one\n", "y.bin": b"\x00\x01"})
    assert (out / "x.txt").read_text() == "one\n" and (out / "y.bin").read_bytes() == b"\x00\x01"
    io.write_outputs(out, {"x.txt": "two\n"})
    assert (out / "x.txt").read_text() == "two\n" and (out / "y.bin").exists()
    assert sorted(os.listdir(out.parent)) == ["results"]  # no temporary directory left behind


def test_write_outputs_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "results"
    io.write_outputs(out, {"a.csv": "old a\n"})
    # the test hook fails the write after the new folder has taken the old one's place: it is swapped back
    monkeypatch.setenv("JAXVPP_TEST_HOOK", "swapped:fail")
    with pytest.raises(OSError, match="disk full"):
        io.write_outputs(out, {"a.csv": "new a\n", "b.csv": "new b\n"})
    monkeypatch.delenv("JAXVPP_TEST_HOOK")
    assert sorted(os.listdir(out)) == ["a.csv"] and (out / "a.csv").read_text() == "old a\n"
    assert sorted(os.listdir(tmp_path)) == ["results"]


def test_write_outputs_failure_leaves_no_new_directory(tmp_path):
    out = tmp_path / "fresh"

    class Boom:
        def __bytes__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        io.write_outputs(out, {"a.csv": "fine\n", "b.csv": Boom()})  # type: ignore[dict-item]
    assert not out.exists() and os.listdir(tmp_path) == []
    with pytest.raises(ValueError):
        io.write_outputs(out, {"../evil": "x"})


def test_schedules_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    c, d, e = rng.random((3, 4)), rng.random((3, 4)), rng.random((3, 4)) * 2
    ids, steps = ["b1", "b 2", "0003"], ["00:00", "00:15", "00:30", "00:45"]
    frame = io.schedules_frame(ids, c, d, e, steps)
    assert list(frame.columns) == list(io.SCHEDULE_COLUMNS) and len(frame) == 12
    np.testing.assert_array_equal(frame["net_mw"].to_numpy().reshape(3, 4), d - c)
    io.write_outputs(tmp_path, {"schedules.csv": frame.to_csv(index=False)})
    back = io.read_schedules(tmp_path / "schedules.csv")
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    ids2, steps2, c2, d2, e2 = io.schedules_arrays(back)
    assert ids2 == ids and steps2 == steps
    np.testing.assert_array_equal(c2, c)
    np.testing.assert_array_equal(d2, d)
    np.testing.assert_array_equal(e2, e)
    with pytest.raises(ValueError):
        io.schedules_frame(ids, c[:2], d, e, steps)


def test_read_schedules_bad_cell(tmp_path):
    p = _write(tmp_path, "schedules.csv", "battery_id,step,charge_mw,discharge_mw,net_mw,soc_mwh\na,0,1,2,1,x\n")
    with pytest.raises(InputError) as ei:
        io.read_schedules(p)
    _expect(ei.value, "schedules.csv", 2, "soc_mwh")


# ------------------------------------------------------------------------------------------------ properties
def test_random_fleet_round_trip(tmp_path):
    fleet = random_fleet(50, seed=3)
    ids = [f"bess_{i:03d}" for i in range(50)]
    ids2, back = io.read_fleet(_write(tmp_path, "fleet.csv", io.fleet_csv(ids, fleet)))
    assert ids2 == ids
    for a, b in zip(fleet, back):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


_ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=8
)


@st.composite
def _fleets(draw):
    n = draw(st.integers(1, 6))
    ids = draw(st.lists(_ids, min_size=n, max_size=n, unique=True))
    fl = st.floats(allow_nan=False, allow_infinity=False, width=64)
    cols = {}
    cols["capacity_mwh"] = [draw(fl.filter(lambda x: x > 0)) for _ in range(n)]
    cols["power_mw"] = [draw(st.floats(1e-6, 1e6)) for _ in range(n)]
    cols["ramp_mw_per_h"] = [draw(st.one_of(st.just(math.inf), st.floats(0, 1e6))) for _ in range(n)]
    lo = [draw(st.floats(0, 0.99)) for _ in range(n)]
    hi = [draw(st.floats(min_value=lo[i], max_value=1.0, exclude_min=True)) for i in range(n)]
    cols["soc_min"], cols["soc_max"] = lo, hi
    cols["soc_initial"] = [draw(st.floats(lo[i], hi[i])) for i in range(n)]
    cols["eta_charge"] = [draw(st.floats(0, 1, exclude_min=True)) for _ in range(n)]
    cols["eta_discharge"] = [draw(st.floats(0, 1, exclude_min=True)) for _ in range(n)]
    for c in ("risk_weight", "degradation_eur_per_mwh", "quadratic_cost_eur_per_mw2h"):
        cols[c] = [draw(st.floats(0, 1e9)) for _ in range(n)]
    return ids, make_fleet(n, **{k: np.asarray(v) for k, v in cols.items()})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_fleets())
def test_property_fleet_round_trip(tmp_path, data):
    ids, fleet = data
    ids2, back = io.read_fleet(_write(tmp_path, "fleet.csv", io.fleet_csv(ids, fleet)))
    assert ids2 == ids
    for a, b in zip(fleet, back):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 5), st.integers(1, 7), st.integers(0, 2**31 - 1))
def test_property_scenarios_and_target_round_trip(tmp_path, k, t, seed):
    rng = np.random.default_rng(seed)
    w = rng.random(k) + 1e-3
    w = w / w.sum()
    market = Market(prices=rng.normal(50, 100, size=(k, t)), probabilities=w)
    steps = [f"t{j}" for j in range(t)]
    steps2, back = io.read_scenarios(_write(tmp_path, "scenarios.csv", io.scenarios_csv(steps, market)))
    assert steps2 == steps
    np.testing.assert_array_equal(np.asarray(back.prices), market.prices)
    np.testing.assert_allclose(np.asarray(back.probabilities), w, rtol=1e-15, atol=1e-16)
    target = rng.normal(0, 3, size=t)
    back_t = io.read_target(_write(tmp_path, "target.csv", io.target_csv(steps, target)), t, step_labels=steps)
    np.testing.assert_array_equal(back_t, target)


def test_synthetic_market_round_trip(tmp_path):
    market = synthetic_market(5, 24, seed=1)
    steps = [f"{h:02d}:00" for h in range(24)]
    steps2, back = io.read_scenarios(_write(tmp_path, "scenarios.csv", io.scenarios_csv(steps, market)))
    assert steps2 == steps
    np.testing.assert_array_equal(np.asarray(back.prices), np.asarray(market.prices))
