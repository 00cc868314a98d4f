"""Ingress: synthetic prices, delivery days across daylight saving, price files, ENTSO-E import and fetch."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

from jaxvpp.cli import main
from jaxvpp.errors import InputError
from jaxvpp.market.ingress import (
    MARKET_TZ,
    PRICE,
    TIMESTAMP,
    delivery_day_steps,
    fetch_entsoe,
    harmonise_resolution,
    local_day,
    read_entsoe_csv,
    read_price_file,
    synthetic_prices,
    to_resolution,
    write_price_file,
)


def _day_counts(df: pd.DataFrame) -> dict[str, int]:
    return {f"{d:%Y-%m-%d}": int(n) for d, n in pd.Series(local_day(df[TIMESTAMP])).value_counts().sort_index().items()}


# ----------------------------------------------------------------------------------------------------
# delivery days and the synthetic generator
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "day, minutes, count, first_utc",
    [
        ("2025-03-30", 60, 23, "2025-03-29T23:00Z"),  # spring forward: 02:00-03:00 CET does not exist
        ("2025-10-26", 60, 25, "2025-10-25T22:00Z"),  # fall back: 02:00-03:00 twice
        ("2025-03-30", 15, 92, "2025-03-29T23:00Z"),
        ("2025-10-26", 15, 100, "2025-10-25T22:00Z"),
        ("2025-10-01", 15, 96, "2025-09-30T22:00Z"),  # first day of 15-minute products
        ("2025-01-15", 60, 24, "2025-01-14T23:00Z"),
    ],
)
def test_delivery_day_steps_across_dst(day: str, minutes: int, count: int, first_utc: str) -> None:
    steps = delivery_day_steps(day, minutes)
    assert len(steps) == count
    assert steps[0] == pd.Timestamp(first_utc)
    assert str(steps.tz) == "UTC"
    assert np.all(np.diff(steps.asi8) == minutes * 60 * 10**9)  # uniform in absolute time
    nxt = delivery_day_steps(pd.Timestamp(day) + pd.Timedelta(days=1), minutes)
    assert steps[-1] + pd.Timedelta(minutes=minutes) == nxt[0]  # days tile the time axis


def test_synthetic_dst_days_and_resolution() -> None:
    h = synthetic_prices(3, 60, seed=1, start="2024-03-30")
    assert list(_day_counts(h).values()) == [24, 23, 24]
    q = synthetic_prices(3, 15, seed=1, start="2024-10-26")
    assert list(_day_counts(q).values()) == [96, 100, 96]
    assert pd.DatetimeIndex(q[TIMESTAMP]).is_monotonic_increasing and q[TIMESTAMP].is_unique


def test_synthetic_reproducible_and_seeded() -> None:
    a = synthetic_prices(20, 60, seed=3)
    b = synthetic_prices(20, 60, seed=3)
    c = synthetic_prices(20, 60, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a[PRICE], c[PRICE])
    assert list(a.columns) == [TIMESTAMP, PRICE, "renewable_share"]


def test_synthetic_has_the_stylised_facts() -> None:
    df = synthetic_prices(365, 60, seed=11)
    p = df[PRICE].to_numpy()
    loc = pd.DatetimeIndex(df[TIMESTAMP]).tz_convert(MARKET_TZ)
    assert 0.005 < np.mean(p < 0) < 0.2  # negative prices occur, but rarely
    assert pd.Series(p).kurt() > 2.0  # heavy tails (normal: 0)
    assert p.max() > np.median(p) + 6 * np.subtract(*np.percentile(p, [75, 25]))  # spikes
    hourly = pd.Series(p).groupby(loc.hour).mean()
    assert hourly.loc[18:20].mean() > hourly.loc[2:4].mean() + 20  # evening peak above the night
    daily = pd.Series(p).groupby(loc.day_of_week).mean()
    assert daily.loc[6] < daily.loc[0:4].mean() - 5  # Sundays are cheaper
    assert np.corrcoef(df["renewable_share"], p)[0, 1] < -0.4  # the renewable driver lowers prices
    assert 0 <= df["renewable_share"].min() and df["renewable_share"].max() <= 0.95
    monthly = pd.Series(p).groupby(loc.month).mean()
    assert monthly.max() - monthly.min() > 10  # seasonal / fuel-level drift


# ----------------------------------------------------------------------------------------------------
# price files
# ----------------------------------------------------------------------------------------------------


def test_price_file_round_trip_and_offsets(tmp_path) -> None:
    df = synthetic_prices(4, 15, seed=0, start="2025-10-24")
    path = tmp_path / "p.csv"
    write_price_file(df, path)
    back = read_price_file(path)
    assert list(back.columns) == list(df.columns)
    assert (back[TIMESTAMP] == df[TIMESTAMP]).all()
    np.testing.assert_allclose(back[PRICE], df[PRICE], atol=1e-9)
    # an explicit offset is converted to UTC; naive times are taken as UTC
    (tmp_path / "o.csv").write_text("timestamp,price_eur_per_mwh\n2025-03-30T01:00:00+01:00,10\n2025-03-30 01:00,11\n")
    o = read_price_file(tmp_path / "o.csv")
    assert list(o[TIMESTAMP]) == [pd.Timestamp("2025-03-30T00:00Z"), pd.Timestamp("2025-03-30T01:00Z")]


GOOD = "timestamp,price_eur_per_mwh,wind\n2025-01-01T00:00:00Z,10.5,0.1\n2025-01-01T01:00:00Z,12,0.2\n"


@pytest.mark.parametrize(
    "text, row, column, words",
    [
        ("time,price_eur_per_mwh\n2025-01-01T00:00Z,1\n", None, "timestamp", "missing column"),
        ("timestamp,price\n2025-01-01T00:00Z,1\n", None, "price_eur_per_mwh", "missing column"),
        (GOOD.replace("12,", "twelve,"), 3, "price_eur_per_mwh", "not a number"),
        (GOOD.replace("12,", ","), 3, "price_eur_per_mwh", "missing"),
        (GOOD.replace("12,", "NaN,"), 3, "price_eur_per_mwh", "NaN"),
        (GOOD.replace("12,", "inf,"), 3, "price_eur_per_mwh", "finite"),
        (GOOD.replace(",0.2", ",x"), 3, "wind", "not a number"),
        (GOOD.replace("01:00:00Z", "00:00:00Z"), 3, "timestamp", "duplicate"),
        (GOOD + "2024-12-31T23:00:00Z,3,0.3\n", 4, "timestamp", "not increasing"),
        (GOOD.replace("2025-01-01T01:00:00Z", "yesterday"), 3, "timestamp", "cannot parse"),
        (GOOD.replace("01:00:00Z", "01:07:00Z"), 3, "timestamp", "15-minute"),
        ("timestamp,price_eur_per_mwh\n", None, None, "no data rows"),
    ],
)
def test_bad_price_files_are_rejected_with_location(tmp_path, text, row, column, words) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_price_file(path)
    assert err.value.row == row
    assert err.value.column == column
    assert words in str(err.value)
    assert "bad.csv" in str(err.value)


def test_missing_file_and_future_rows(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_price_file(tmp_path / "nope.csv")
    path = tmp_path / "f.csv"
    path.write_text(GOOD + "2025-01-01T02:00:00Z,,0.3\n2025-01-01T03:00:00Z,,0.4\n")
    with pytest.raises(InputError, match="missing value"):
        read_price_file(path)  # empty prices only allowed as trailing forecast rows
    df = read_price_file(path, allow_future=True)
    assert df[PRICE].isna().sum() == 2 and df["wind"].notna().all()
    path.write_text(GOOD.replace("10.5,", ",") + "2025-01-01T02:00:00Z,,0.3\n")
    with pytest.raises(InputError) as err:  # a hole before the last price is still an error
        read_price_file(path, allow_future=True)
    assert err.value.row == 2


def test_switch_from_hourly_to_quarter_hour_products() -> None:
    hourly = synthetic_prices(3, 60, seed=2, start="2025-09-28")
    quarter = synthetic_prices(27, 15, seed=2, start="2025-10-01")
    df = pd.concat([hourly, quarter], ignore_index=True)
    out, res = harmonise_resolution(df)
    assert res == 15
    counts = _day_counts(out)
    assert counts["2025-09-28"] == counts["2025-09-30"] == counts["2025-10-01"] == 96
    assert counts["2025-10-26"] == 100  # the autumn DST day in quarter hours
    # each hourly price holds in its four quarters
    first_hour = out[PRICE].iloc[:4].to_numpy()
    assert np.all(first_hour == hourly[PRICE].iloc[0])
    assert np.all(np.diff(pd.DatetimeIndex(out[TIMESTAMP]).asi8) == 15 * 60 * 10**9)
    # back to hours: the mean of the quarters; a pure hourly stretch comes back unchanged
    back = to_resolution(out, 60)
    np.testing.assert_allclose(back[PRICE].iloc[:72], hourly[PRICE].to_numpy())
    q = quarter[PRICE].iloc[:4].mean()
    assert back.loc[back[TIMESTAMP] == quarter[TIMESTAMP].iloc[0], PRICE].item() == pytest.approx(q)


# ----------------------------------------------------------------------------------------------------
# ENTSO-E
# ----------------------------------------------------------------------------------------------------


def _legacy_export(path, day: str, values: list[float], repeat_02: bool) -> None:
    """A legacy Transparency export of one hourly day in local time (the repeated hour written twice)."""
    hours = list(range(24))
    if repeat_02:
        hours = hours[:3] + [2] + hours[3:]
    d = pd.Timestamp(day)
    lines = ['"MTU (CET/CEST)","Day-ahead Price [EUR/MWh]","Currency","BZN|DE-LU"']
    for h, v in zip(hours, values):
        a = d + pd.Timedelta(hours=h)
        b = a + pd.Timedelta(hours=1)
        lines.append(f'"{a:%d.%m.%Y %H:%M} - {b:%d.%m.%Y %H:%M}","{v}","EUR",""')
    path.write_text("\n".join(lines) + "\n")


def test_entsoe_legacy_csv_autumn_dst(tmp_path) -> None:
    path = tmp_path / "dap.csv"
    vals = [float(i) for i in range(25)]
    _legacy_export(path, "2024-10-27", vals, repeat_02=True)
    df = read_entsoe_csv(path)
    assert len(df) == 25
    assert df[TIMESTAMP].iloc[0] == pd.Timestamp("2024-10-26T22:00Z")
    assert df[TIMESTAMP].iloc[-1] == pd.Timestamp("2024-10-27T22:00Z")
    assert np.all(np.diff(pd.DatetimeIndex(df[TIMESTAMP]).asi8) == 3600 * 10**9)
    # the first 02:00 (CEST) is 00:00 UTC, the second (CET) 01:00 UTC
    assert df.loc[df[TIMESTAMP] == pd.Timestamp("2024-10-27T00:00Z"), PRICE].item() == 2.0
    assert df.loc[df[TIMESTAMP] == pd.Timestamp("2024-10-27T01:00Z"), PRICE].item() == 3.0


def test_entsoe_new_csv_quarter_hours_marks_and_gaps(tmp_path) -> None:
    local = pd.date_range("2025-10-26", "2025-10-27", freq="15min", inclusive="left", tz=MARKET_TZ)
    assert len(local) == 100
    rows = ['"MTU (CET/CEST)","Area","Sequence","Time Resolution","Day-ahead Price (EUR/MWh)"']
    for i, ts in enumerate(local):
        mark = f" ({ts.tzname()})"
        end = ts + pd.Timedelta(minutes=15)
        price = "n/e" if i == 50 else f"{50 + i / 10:.2f}"
        rows.append(
            f'"{ts:%d/%m/%Y %H:%M:%S}{mark} - {end:%d/%m/%Y %H:%M:%S}{mark}","BZN|DE-LU","Sequence 1","PT15M","{price}"'
        )
    path = tmp_path / "dap15.csv"
    path.write_text("\n".join(rows) + "\n")
    df = read_entsoe_csv(path)
    assert len(df) == 99  # the n/e step is dropped
    expect = local.tz_convert("UTC").delete(50)
    assert (pd.DatetimeIndex(df[TIMESTAMP]) == expect).all()


def test_entsoe_spring_day_and_bad_rows(tmp_path) -> None:
    d = pd.Timestamp("2025-03-30")
    lines = ["MTU (CET/CEST),Day-ahead Price [EUR/MWh]"]
    for h in [0, 1] + list(range(3, 24)):
        a = d + pd.Timedelta(hours=h)
        lines.append(f"{a:%d.%m.%Y %H:%M} - {a + pd.Timedelta(hours=1):%d.%m.%Y %H:%M},{h}")
    path = tmp_path / "spring.csv"
    path.write_text("\n".join(lines) + "\n")
    df = read_entsoe_csv(path)
    assert len(df) == 23 and df[TIMESTAMP].iloc[2] == pd.Timestamp("2025-03-30T01:00Z")
    lines[5] = "someday - otherday,3"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        read_entsoe_csv(path)
    assert err.value.row == 6 and "cannot parse" in str(err.value)
    path.write_text("timestamp,price\n1,2\n")
    with pytest.raises(InputError, match="MTU"):
        read_entsoe_csv(path)


def test_fetch_requires_key_and_package(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ENTSOE_API_KEY", raising=False)
    with pytest.raises(InputError, match="ENTSOE_API_KEY"):
        fetch_entsoe("DE_LU", "2025-01-01", "2025-01-02", cache_dir=tmp_path)
    monkeypatch.setenv("ENTSOE_API_KEY", "token")
    monkeypatch.setitem(sys.modules, "entsoe", None)  # import entsoe -> ImportError
    with pytest.raises(InputError, match="entsoe-py"):
        fetch_entsoe("DE_LU", "2025-01-01", "2025-01-02", cache_dir=tmp_path)


def test_fetch_with_fake_client_converts_to_utc_and_caches(tmp_path, monkeypatch) -> None:
    calls = []

    class FakeClient:
        def __init__(self, api_key: str) -> None:
            assert api_key == "token"

        def query_day_ahead_prices(self, zone, start, end):
            calls.append((zone, start, end))
            idx = pd.date_range(start, end, freq="15min", inclusive="left")  # local, tz-aware
            return pd.Series(np.arange(len(idx), dtype=float), index=idx)

    fake = types.ModuleType("entsoe")
    fake.EntsoePandasClient = FakeClient
    monkeypatch.setitem(sys.modules, "entsoe", fake)
    monkeypatch.setenv("ENTSOE_API_KEY", "token")
    df, cache = fetch_entsoe("DE_LU", "2025-10-26", "2025-10-27", cache_dir=tmp_path)
    assert calls[0][0] == "DE_LU" and str(calls[0][1].tz) == MARKET_TZ
    assert len(df) == 100 and str(pd.DatetimeIndex(df[TIMESTAMP]).tz) == "UTC"
    assert df[TIMESTAMP].iloc[0] == pd.Timestamp("2025-10-25T22:00Z")
    assert cache.is_file() and cache.parent == tmp_path
    df2, _ = fetch_entsoe("DE_LU", "2025-10-26", "2025-10-27", cache_dir=tmp_path)
    assert len(calls) == 1  # served from the cache
    pd.testing.assert_frame_equal(df, df2)


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------


def test_cli_synthetic_and_fetch_import(tmp_path, capsys) -> None:
    out = tmp_path / "raw" / "prices.csv"
    assert (
        main(
            [
                "synthetic",
                "--days",
                "3",
                "--resolution",
                "15",
                "--seed",
                "5",
                "--start",
                "2025-10-25",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    df = read_price_file(out)
    assert list(_day_counts(df).values()) == [96, 100, 96]
    exp = tmp_path / "dap.csv"
    _legacy_export(exp, "2024-10-27", [float(i) for i in range(25)], repeat_02=True)
    assert main(["fetch", "--import-csv", str(exp), "--out", str(tmp_path / "de.csv")]) == 0
    assert len(read_price_file(tmp_path / "de.csv")) == 25
    bad = tmp_path / "bad.csv"
    bad.write_text("MTU (CET/CEST),Day-ahead Price [EUR/MWh]\nxx - yy,1\n")
    assert main(["fetch", "--import-csv", str(bad), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.csv" in err and "row 2" in err
    assert not (tmp_path / "x.csv").exists()
    assert main(["synthetic", "--days", "0", "--out", str(tmp_path / "z.csv")]) == 2
    assert not (tmp_path / "z.csv").exists()
