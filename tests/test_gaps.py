"""Gaps in price files: missing cells and missing rows, filled by linear interpolation or refused by name."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxvpp.cli import main
from jaxvpp.errors import InputError
from jaxvpp.market.ingress import (
    PRICE,
    TIMESTAMP,
    Gap,
    fill_gaps,
    find_gaps,
    format_timestamps,
    gap_lines,
    harmonise_resolution,
    price_file_text,
    read_price_file,
    synthetic_prices,
    validate_prices,
)

#: First UTC step of the 15-minute day-ahead products (1 October 2025, 00:00 CEST).
SWITCH = pd.Timestamp("2025-09-30T22:00Z")


def _grid(kind: str, n: int, start: str = "2025-03-04T00:00Z") -> pd.DatetimeIndex:
    """``n`` UTC step starts: hourly (``"60"``), quarter-hourly (``"15"``) or hourly switching to 15 min."""
    if kind == "switch":
        hourly = pd.date_range(end=SWITCH - pd.Timedelta(hours=1), periods=n // 2, freq="60min")
        return hourly.append(pd.date_range(SWITCH, periods=n - n // 2, freq="15min")).as_unit("ns")
    return pd.date_range(start, periods=n, freq=f"{kind}min", tz="UTC").as_unit("ns")


def _truth(ts: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {TIMESTAMP: ts, PRICE: rng.normal(60.0, 25.0, len(ts)).round(2), "wind": rng.uniform(0, 1, len(ts)).round(4)}
    )


def _minutes(ts) -> np.ndarray:
    return pd.DatetimeIndex(ts).as_unit("ns").asi8 / 60e9


def _write(df: pd.DataFrame, path) -> None:
    """A price file with gaps (the package writes complete files only)."""
    path.write_text(price_file_text(df))


def _punch(truth: pd.DataFrame, cells: dict[int, list[str]], rows: list[int]) -> pd.DataFrame:
    """``truth`` with the given cells emptied (row -> columns) and rows dropped."""
    df = truth.copy()
    for i, cols in cells.items():
        df.loc[i, cols] = np.nan
    return df.drop(index=rows).reset_index(drop=True)


def _interp_reference(truth: pd.DataFrame, cells: dict[int, list[str]], rows: list[int]) -> pd.DataFrame:
    """What linear interpolation in time gives, column by column, from the values left (numpy)."""
    out = truth.copy()
    t = _minutes(truth[TIMESTAMP])
    for c in (PRICE, "wind"):
        gone = np.zeros(len(truth), bool)
        gone[rows] = True
        for i, cols in cells.items():
            gone[i] |= c in cols
        out.loc[gone, c] = np.interp(t[gone], t[~gone], truth[c].to_numpy()[~gone])
    return out


# ----------------------------------------------------------------------------------------------------
# interpolation against numpy
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["60", "15"])
def test_cells_and_rows_are_interpolated_like_np_interp(kind) -> None:
    truth = _truth(_grid(kind, 40), seed=1)
    cells = {5: [PRICE], 6: [PRICE, "wind"], 20: ["wind"], 31: [PRICE]}
    rows = [12, 13, 14, 32]  # 31 (cell) and 32 (row) make one run of two steps
    df = _punch(truth, cells, rows)
    out, gaps = fill_gaps(df, 3)
    ref = _interp_reference(truth, cells, rows)
    assert (pd.DatetimeIndex(out[TIMESTAMP]) == pd.DatetimeIndex(truth[TIMESTAMP])).all()
    np.testing.assert_allclose(out[PRICE], ref[PRICE], rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["wind"], ref["wind"], rtol=0, atol=1e-9)
    ts = pd.DatetimeIndex(truth[TIMESTAMP])
    assert gaps == [
        Gap(ts[5], ts[6], 2, "cells"),
        Gap(ts[12], ts[14], 3, "rows"),
        Gap(ts[20], ts[20], 1, "cells"),
        Gap(ts[31], ts[32], 2, "cells and rows"),
    ]
    assert find_gaps(df) == gaps
    validate_prices(out)  # a whole, valid price frame


def test_no_gaps_leaves_the_frame_as_it_is() -> None:
    df = _truth(_grid("15", 30))
    out, gaps = fill_gaps(df, 0)
    assert gaps == []
    pd.testing.assert_frame_equal(out, df)


def test_switch_from_hourly_to_quarter_hours_is_no_gap() -> None:
    truth = _truth(_grid("switch", 40), seed=2)
    out, gaps = fill_gaps(truth, 0)
    assert gaps == [] and len(out) == len(truth)
    # holes on either side of the switch are filled on their own side's grid
    cells, rows = {3: [PRICE]}, [8, 9, 30]  # 8, 9: hourly (the switch is at row 20); 30: a quarter-hour
    out, gaps = fill_gaps(_punch(truth, cells, rows), 2)
    ref = _interp_reference(truth, cells, rows)
    assert (pd.DatetimeIndex(out[TIMESTAMP]) == pd.DatetimeIndex(truth[TIMESTAMP])).all()
    np.testing.assert_allclose(out[PRICE], ref[PRICE], rtol=0, atol=1e-9)
    assert [g.steps for g in gaps] == [1, 2, 1]


def test_holes_at_the_switch_keep_each_side_s_step_length() -> None:
    truth = _truth(_grid("switch", 40), seed=3)  # rows 0..19 hourly, 20.. quarter-hours from SWITCH
    hour, quarter = pd.Timedelta(hours=1), pd.Timedelta(minutes=15)
    for rows, gap in (
        ([19], Gap(SWITCH - hour, SWITCH - hour, 1, "rows")),  # the last hourly row
        ([20], Gap(SWITCH, SWITCH, 1, "rows")),  # the first quarter-hour
        ([18, 19, 20, 21], Gap(SWITCH - 2 * hour, SWITCH + quarter, 4, "rows")),  # across the switch
    ):
        df = _punch(truth, {}, rows)
        out, gaps = fill_gaps(df, 4)
        assert gaps == [gap]
        assert (pd.DatetimeIndex(out[TIMESTAMP]) == pd.DatetimeIndex(truth[TIMESTAMP])).all()
        t, tk = _minutes(out[TIMESTAMP]), _minutes(df[TIMESTAMP])
        np.testing.assert_allclose(out[PRICE], np.interp(t, tk, df[PRICE]), rtol=0, atol=1e-9)
    # the first hour of quarter-hours missing reads as one more hourly step: the same grid at 15 minutes
    df = _punch(truth, {}, [20, 21, 22, 23])
    out, gaps = fill_gaps(df, 4)
    assert gaps == [Gap(SWITCH, SWITCH, 1, "rows")]
    assert (harmonise_resolution(out)[0][TIMESTAMP] == harmonise_resolution(truth)[0][TIMESTAMP]).all()


def test_daylight_saving_days_have_no_gaps() -> None:
    # a local day of 23 and one of 25 hours is a plain UTC series
    df = synthetic_prices(2, 60, seed=4, start="2025-03-30")
    assert len(df) == 23 + 24 and fill_gaps(df, 0)[1] == []
    df = synthetic_prices(2, 15, seed=4, start="2025-10-26")
    assert len(df) == 100 + 96 and fill_gaps(df, 0)[1] == []


# ----------------------------------------------------------------------------------------------------
# refused gaps
# ----------------------------------------------------------------------------------------------------


def test_a_run_longer_than_the_limit_names_its_first_timestamp_and_the_option(tmp_path) -> None:
    truth = _truth(_grid("60", 30, start="2025-03-04T00:00Z"))
    df = _punch(truth, {}, list(range(5, 12)))  # 05:00 to 11:00 missing: 7 steps
    with pytest.raises(InputError) as err:
        fill_gaps(df, 4, file="p.csv")
    msg = str(err.value)
    assert "p.csv" in msg and "2025-03-04T05:00:00Z" in msg and "7 steps" in msg and "--fill-gaps 4" in msg
    assert fill_gaps(df, 7)[1] == [Gap(pd.Timestamp("2025-03-04T05:00Z"), pd.Timestamp("2025-03-04T11:00Z"), 7, "rows")]
    # through a file: missing cells name their row and column too; 0 (the default) fills nothing
    path = tmp_path / "gappy.csv"
    _write(_punch(truth, {8: [PRICE], 9: [PRICE]}, []), path)
    for kwargs in ({}, {"fill_gaps": 1}):
        with pytest.raises(InputError) as err:
            read_price_file(path, **kwargs)
        assert err.value.file == str(path) and err.value.row == 8 + 2 and err.value.column == PRICE
        assert "2025-03-04T08:00:00Z" in str(err.value) and "2 steps" in str(err.value)
        assert "--fill-gaps" in str(err.value)
    gaps: list[Gap] = []
    out = read_price_file(path, fill_gaps=2, gaps=gaps)
    assert gaps == [Gap(pd.Timestamp("2025-03-04T08:00Z"), pd.Timestamp("2025-03-04T09:00Z"), 2, "cells")]
    p = truth[PRICE].to_numpy()
    np.testing.assert_allclose(out[PRICE].iloc[8:10], p[7] + (p[10] - p[7]) * np.array([1, 2]) / 3, atol=1e-6)


@pytest.mark.parametrize("where", ["start", "end"])
def test_leading_and_trailing_gaps_are_refused(where) -> None:
    truth = _truth(_grid("15", 20))
    i = [0, 1] if where == "start" else [18, 19]
    for cells in ({i[0]: [PRICE], i[1]: ["wind"]}, {i[0]: ["wind"], i[1]: [PRICE, "wind"]}):
        with pytest.raises(InputError) as err:
            fill_gaps(_punch(truth, cells, []), 10, file="p.csv")
        ts = truth[TIMESTAMP].iloc[i[0]]
        assert f"at the {where} of the series" in str(err.value) and "--fill-gaps" in str(err.value)
        assert format_timestamps([ts])[0] in str(err.value) and "2 steps" in str(err.value)
        assert err.value.row == i[0] + 2 and err.value.file == "p.csv"
    # dropped first or last rows leave no hole: the series just starts later or ends earlier
    out, gaps = fill_gaps(_punch(truth, {}, i), 0)
    assert gaps == [] and len(out) == 18


def test_trailing_rows_with_exogenous_forecasts_are_no_gaps(tmp_path) -> None:
    truth = _truth(_grid("60", 30))
    df = truth.copy()
    df.loc[24:, PRICE] = np.nan  # the day to forecast: only its exogenous forecast is known
    df.loc[27, "wind"] = np.nan  # ... and one of those is missing
    df = df.drop(index=[26]).reset_index(drop=True)  # ... and one row
    path = tmp_path / "future.csv"
    _write(df, path)
    gaps: list[Gap] = []
    out = read_price_file(path, allow_future=True, fill_gaps=2, gaps=gaps)
    ts = pd.DatetimeIndex(truth[TIMESTAMP])
    assert gaps == [Gap(ts[26], ts[27], 2, "cells and rows")]
    assert out[PRICE].isna().sum() == 6 and out[PRICE].iloc[:24].notna().all()
    t = _minutes(ts)
    keep = np.r_[0:26, 28:30]
    np.testing.assert_allclose(out["wind"], np.interp(t, t[keep], truth["wind"].to_numpy()[keep]), atol=1e-9)
    with pytest.raises(InputError, match="at the end of the series"):
        read_price_file(path, fill_gaps=10)  # not a forecast: empty prices at the end are a gap


# ----------------------------------------------------------------------------------------------------
# property: random gap patterns
# ----------------------------------------------------------------------------------------------------


@st.composite
def gappy(draw):
    """A complete series, its gap pattern (runs of <= k steps between known runs of >= 2 rows) and k."""
    k = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["60", "15", "switch"]))
    missing: list[tuple[int, str]] = []  # (row, "price" | "wind" | "both" | "row")
    i = draw(st.integers(2, 4))
    while True:
        run = draw(st.integers(1, k))
        known = draw(st.integers(2, 6))
        if i + run + known > 80:
            break
        for j in range(i, i + run):
            missing.append((j, draw(st.sampled_from(["price", "wind", "both", "row"]))))
        i += run + known
    truth = _truth(_grid(kind, i), seed=draw(st.integers(0, 2**16)))
    return truth, missing, k, kind


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gappy())
def test_random_gap_patterns_are_filled_between_their_neighbours(case) -> None:
    truth, missing, k, kind = case
    cells = {j: {"price": [PRICE], "wind": ["wind"], "both": [PRICE, "wind"]}[w] for j, w in missing if w != "row"}
    rows = [j for j, w in missing if w == "row"]
    df = _punch(truth, cells, rows)
    out, gaps = fill_gaps(df, k)
    validate_prices(out)  # complete, increasing, on the 15-minute grid
    assert all(1 <= g.steps <= k for g in gaps)
    t_out = _minutes(out[TIMESTAMP])
    t_in = _minutes(df[TIMESTAMP])
    pos = np.searchsorted(t_out, t_in)
    assert np.all(t_out[pos] == t_in)  # every row of the file is kept
    for c in (PRICE, "wind"):
        given_ = df[c].notna().to_numpy()
        np.testing.assert_array_equal(out[c].to_numpy()[pos[given_]], df[c].to_numpy()[given_])  # unchanged
        tk, vk = t_in[given_], df[c].to_numpy()[given_]
        filled = np.ones(len(out), bool)
        filled[pos[given_]] = False
        j = np.searchsorted(tk, t_out[filled])  # the known neighbours on each side
        lo, hi = np.minimum(vk[j - 1], vk[j]), np.maximum(vk[j - 1], vk[j])
        v = out[c].to_numpy()[filled]
        assert np.all((v >= lo - 1e-9) & (v <= hi + 1e-9))
    if kind == "switch":  # the grid once brought to 15 minutes is that of the complete series
        a, b = harmonise_resolution(out)[0][TIMESTAMP], harmonise_resolution(truth)[0][TIMESTAMP]
        assert len(a) == len(b) and (a.to_numpy() == b.to_numpy()).all()
    else:  # the grid of the complete series, the values of numpy's interpolation
        assert (pd.DatetimeIndex(out[TIMESTAMP]) == pd.DatetimeIndex(truth[TIMESTAMP])).all()
        ref = _interp_reference(truth, cells, rows)
        np.testing.assert_allclose(out[[PRICE, "wind"]], ref[[PRICE, "wind"]], rtol=0, atol=1e-9)
        assert sum(g.steps for g in gaps) == len({j for j, _ in missing})


def test_console_lines_stop_after_ten() -> None:
    t = pd.date_range("2025-01-01", periods=13, freq="2h", tz="UTC")
    gaps = [Gap(x, x, 1, "rows") for x in t]
    lines = gap_lines(gaps, file="p.csv")
    assert len(lines) == 11 and lines[-1] == "... and 3 more filled gaps (3 steps)"
    assert lines[0].startswith("p.csv: filled 1 missing step (rows) at " + format_timestamps(t[:1])[0])


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------

FAST_FORECAST = ["--backtest-days", "3", "--calibration-days", "5", "--max-iter", "15"]


def _gappy_file(tmp_path, days: int = 24):
    df = synthetic_prices(days, 60, seed=12)
    drop = [100, 101, 300]  # two runs of missing rows
    df.loc[[200, 201, 202], PRICE] = np.nan  # and a run of missing prices
    df = df.drop(index=drop).reset_index(drop=True)
    path = tmp_path / "gappy.csv"
    _write(df, path)
    return path, synthetic_prices(days, 60, seed=12)[TIMESTAMP]


def test_cli_forecast_refuses_gaps_and_writes_nothing(tmp_path, capsys) -> None:
    path, ts = _gappy_file(tmp_path)
    out = tmp_path / "fc"
    assert main(["forecast", "--prices", str(path), "--out", str(out), *FAST_FORECAST]) == 2
    err = capsys.readouterr().err
    assert "gappy.csv" in err and format_timestamps(ts[100:101])[0] in err and "--fill-gaps" in err
    assert not out.exists()
    assert main(["forecast", "--prices", str(path), "--out", str(out), "--fill-gaps", "2", *FAST_FORECAST]) == 2
    assert "for 3 steps" in capsys.readouterr().err and not out.exists()  # the run of 3 prices is too long
    with pytest.raises(SystemExit) as exc:  # argparse: usage and exit code 2
        main(["forecast", "--prices", str(path), "--out", str(out), "--fill-gaps", "-1"])
    assert exc.value.code == 2 and "--fill-gaps" in capsys.readouterr().err and not out.exists()


def test_cli_forecast_fills_gaps_and_reports_each_run(tmp_path, capsys) -> None:
    path, ts = _gappy_file(tmp_path)
    out = tmp_path / "fc"
    assert main(["forecast", "--prices", str(path), "--out", str(out), "--fill-gaps", "3", *FAST_FORECAST]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "missing step" in x]
    assert len(lines) == 3
    for first in (100, 200, 300):
        assert sum(format_timestamps(ts[first : first + 1])[0] in x for x in lines) == 1
    m = json.loads((out / "forecast_metrics.json").read_text())
    assert m["filled_gaps"] == {"runs": 3, "steps": 2 + 3 + 1}


def test_cli_fetch_import_fills_the_step_the_export_leaves_empty(tmp_path, capsys) -> None:
    local = pd.date_range("2025-10-26", "2025-10-27", freq="15min", inclusive="left", tz="Europe/Berlin")
    rows = ['"MTU (CET/CEST)","Area","Sequence","Time Resolution","Day-ahead Price (EUR/MWh)"']
    for i, t in enumerate(local):
        mark, end = f" ({t.tzname()})", t + pd.Timedelta(minutes=15)
        price = "n/e" if i == 50 else f"{50 + i / 10:.2f}"
        rows.append(
            f'"{t:%d/%m/%Y %H:%M:%S}{mark} - {end:%d/%m/%Y %H:%M:%S}{mark}","BZN|DE-LU","Sequence 1","PT15M","{price}"'
        )
    export = tmp_path / "dap.csv"
    export.write_text("\n".join(rows) + "\n")
    raw, filled = tmp_path / "raw.csv", tmp_path / "filled.csv"
    assert main(["fetch", "--import-csv", str(export), "--out", str(raw)]) == 0
    assert "1 gap (1 missing step)" in capsys.readouterr().err
    assert len(pd.read_csv(raw)) == 99  # as delivered
    assert main(["fetch", "--import-csv", str(export), "--out", str(filled), "--fill-gaps", "1"]) == 0
    assert "filled 1 missing step (rows) at " + format_timestamps(local[50:51])[0] in capsys.readouterr().err
    df = read_price_file(filled)
    assert len(df) == 100 and df[PRICE].iloc[50] == pytest.approx((54.9 + 55.1) / 2)


def test_run_config_key_and_flag() -> None:
    from jaxvpp.cli import build_parser
    from jaxvpp.cli.run import run_config
    from jaxvpp.config import DEFAULT

    assert DEFAULT.market.fill_gaps == 0
    args = build_parser().parse_args(["run", "--fill-gaps", "4"])
    assert run_config(args).market.fill_gaps == 4
    with pytest.raises(InputError, match="--fill-gaps"):
        run_config(build_parser().parse_args(["run", "--fill-gaps", "-2"]))


RUN = """\
[market]
prices_file = "{prices}"
[forecast]
backtest_days = 3
calibration_days = 5
boosting_iterations = 15
[scenarios]
samples = 100
count = 4
[fleet]
batteries = 3
[frontier]
risk_weights = []
[output]
plots = false
"""


def test_run_records_the_filled_gaps_in_the_summary(tmp_path, capsys) -> None:
    path, ts = _gappy_file(tmp_path)
    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN.format(prices=path.as_posix()))
    out, data = tmp_path / "results", tmp_path / "data"
    argv = ["run", "--config", str(cfg), "--out", str(out), "--data-dir", str(data)]
    assert main(argv) == 2  # the default fills nothing
    assert "--fill-gaps" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--fill-gaps", "3"]) == 0
    printed = capsys.readouterr().out
    assert sum(format_timestamps(ts[i : i + 1])[0] in printed for i in (100, 200, 300)) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["filled_gaps"] == {"runs": 3, "steps": 6}
    assert summary["config"]["market"]["fill_gaps"] == 3
