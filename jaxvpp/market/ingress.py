"""Market-data ingress: synthetic day-ahead prices, ENTSO-E fetch and CSV import, price files.

A *price file* is a CSV with ``timestamp`` (ISO 8601 with an explicit offset; one without is taken as
UTC, and :func:`read_price_file` notes that) and ``price_eur_per_mwh`` (EUR/MWh), plus optional numeric
exogenous columns (e.g. ``renewable_share``, a day-ahead forecast known before gate closure). Inside the
package every timestamp is a timezone-aware UTC ``pd.Timestamp`` marking the *start* of its delivery step.

Delivery days are local days of the market (:data:`MARKET_TZ`, ``Europe/Berlin``: CET/CEST, unless a
``tz`` argument says otherwise), so a day has 23, 24 or 25 hourly steps, or 92, 96 or 100 quarter-hour
steps (the European day-ahead market trades 15-minute products since 1 October 2025). ``harmonise_resolution`` turns a file that switches from 60- to
15-minute steps into one 15-minute series (an hourly price holds for each of its four quarters).

Real price files have gaps: empty or NaN cells, or rows missing from the time grid. :func:`fill_gaps` finds
them and fills short runs by linear interpolation in time (``--fill-gaps STEPS`` on the command line); a
longer run, or one at either end of the series, is refused with an :class:`~jaxvpp.errors.InputError`.
"""

from __future__ import annotations

import math
import os
import re
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jaxvpp.errors import InputError
from jaxvpp.files import check_file, write_file

TIMESTAMP = "timestamp"
PRICE = "price_eur_per_mwh"
#: Market time zone of the delivery day (CET/CEST, as used by the European day-ahead auction): the default
#: of every ``tz`` argument and of the ``[market] time_zone`` key of ``jaxvpp run``.
MARKET_TZ = "Europe/Berlin"
#: A time of day followed by its offset from UTC (``...T00:00Z``, ``... 00:00:00+01:00``, ``...T00:00-0500``).
_OFFSET = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)


def names_utc_offset(text: str) -> bool:
    """Whether an ISO 8601 timestamp names its offset from UTC (``Z``, ``+01:00``) after its time of day."""
    return bool(_OFFSET.search(text.strip()))


#: Step lengths (minutes) the package accepts.
RESOLUTIONS = (15, 30, 60)


# ----------------------------------------------------------------------------------------------------
# Delivery days and resolution
# ----------------------------------------------------------------------------------------------------


def delivery_day_steps(day: str | pd.Timestamp, resolution_minutes: int = 60, tz: str = MARKET_TZ) -> pd.DatetimeIndex:
    """UTC start times of every step of the local delivery ``day`` (23/24/25 hourly or 92/96/100 quarter-hour steps)."""
    _check_resolution(resolution_minutes)
    d = pd.Timestamp(day)
    d = d.tz_convert(tz) if d.tzinfo is not None else d.tz_localize(tz)
    start = d.normalize()
    end = (start.tz_localize(None) + pd.Timedelta(days=1)).tz_localize(tz)
    idx = pd.date_range(start, end, freq=f"{resolution_minutes}min", inclusive="left")
    return idx.tz_convert("UTC").as_unit("ns")


def local_day(ts: pd.DatetimeIndex | pd.Series, tz: str = MARKET_TZ) -> pd.DatetimeIndex:
    """The local delivery day (naive midnight) of each UTC timestamp."""
    idx = pd.DatetimeIndex(ts)
    return idx.tz_convert(tz).tz_localize(None).normalize()


def local_slot(ts: pd.DatetimeIndex | pd.Series, tz: str = MARKET_TZ) -> np.ndarray:
    """Wall-clock minutes since local midnight (the repeated autumn hour shares its slots; the spring gap has none)."""
    loc = pd.DatetimeIndex(ts).tz_convert(tz)
    return np.asarray(loc.hour * 60 + loc.minute, dtype=np.int64)


def check_time_zone(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone (e.g. ``Europe/Berlin``), or None when it is one."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return f"unknown time zone {name!r} (an IANA name such as {MARKET_TZ!r})"
    return None


def _check_resolution(minutes: int) -> None:
    if minutes not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {RESOLUTIONS} minutes, got {minutes}", column="resolution")


def step_minutes(ts: pd.DatetimeIndex) -> np.ndarray:
    """Length (minutes) of each step: the gap to the next timestamp, or to the previous one across a gap or at the end."""
    t = pd.DatetimeIndex(ts).as_unit("ns").asi8 // 60_000_000_000  # integer minutes
    n = len(t)
    if n < 2:
        return np.full(n, 60, dtype=np.int64)
    nxt = np.diff(t)
    dur = np.empty(n, dtype=np.int64)
    dur[:-1] = nxt
    dur[-1] = nxt[-1]
    for i in range(n):  # across a gap (missing data) or at the end: use the previous step's length
        if dur[i] > max(RESOLUTIONS):
            dur[i] = dur[i - 1] if i > 0 and dur[i - 1] <= max(RESOLUTIONS) else 60
    return dur


def harmonise_resolution(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Bring a price frame to one resolution, the finest it contains; returns the frame and that step (minutes).

    A coarser step (e.g. an hourly product before 1 October 2025) is repeated for each finer step it spans,
    with the same price and exogenous values: that is the price the hourly product paid in each quarter.
    """
    if len(df) == 0:
        return df, 60
    dur = step_minutes(pd.DatetimeIndex(df[TIMESTAMP]))
    finest = int(dur.min())
    if finest not in RESOLUTIONS or np.any(dur % finest):
        raise InputError(
            f"step lengths {sorted(set(dur.tolist()))} min are not whole multiples of one of {RESOLUTIONS} min",
            column=TIMESTAMP,
        )
    if np.all(dur == finest):
        return df.reset_index(drop=True), finest
    reps = dur // finest
    out = df.loc[df.index.repeat(reps)].reset_index(drop=True)
    offset = np.concatenate([np.arange(r) for r in reps]) * finest
    out[TIMESTAMP] = pd.DatetimeIndex(out[TIMESTAMP]) + pd.to_timedelta(offset, unit="min")
    return out, finest


def to_resolution(df: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Resample a single-resolution price frame to ``minutes``: finer by repeating, coarser by the mean (UTC-aligned)."""
    _check_resolution(minutes)
    df, res = harmonise_resolution(df)
    if minutes == res:
        return df
    if minutes < res:
        if res % minutes:
            raise InputError(f"cannot split {res}-minute steps into {minutes}-minute steps", column="resolution")
        reps = res // minutes
        out = df.loc[df.index.repeat(reps)].reset_index(drop=True)
        out[TIMESTAMP] = pd.DatetimeIndex(out[TIMESTAMP]) + pd.to_timedelta(
            np.tile(np.arange(reps) * minutes, len(df)), unit="min"
        )
        return out
    key = pd.DatetimeIndex(df[TIMESTAMP]).floor(f"{minutes}min")
    out = df.drop(columns=[TIMESTAMP]).groupby(key).mean()
    out.index.name = TIMESTAMP
    return out.reset_index()


# ----------------------------------------------------------------------------------------------------
# Price files
# ----------------------------------------------------------------------------------------------------


def _line(i: int) -> int:
    """File line number of data row ``i`` (0-based; the header is line 1)."""
    return int(i) + 2


def parse_timestamps(values: pd.Series, *, file: str | None = None, column: str = TIMESTAMP) -> pd.DatetimeIndex:
    """Parse ISO 8601 strings into UTC (naive strings are taken as UTC); a bad cell raises ``InputError``."""
    raw = values.astype("string")
    empty = raw.isna() | (raw.str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise InputError("missing timestamp", file=file, row=_line(i), column=column)
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"cannot parse timestamp {raw.iloc[i]!r} (expected ISO 8601, e.g. 2025-01-01T00:00:00Z)",
            file=file,
            row=_line(i),
            column=column,
        )
    return pd.DatetimeIndex(parsed).as_unit("ns")


def numeric_column(
    values: pd.Series,
    *,
    file: str | None,
    column: str,
    allow_missing: np.ndarray | None = None,
    lines: np.ndarray | None = None,
) -> np.ndarray:
    """Float values of a column of cells; an empty, NaN, non-numeric or infinite cell raises ``InputError``."""
    line = (lambda i: int(lines[i])) if lines is not None else _line
    raw = values.astype("string").str.strip()
    num = pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy()
    empty = (raw.isna() | (raw == "")).to_numpy()
    nan_text = raw.str.lower().isin(["nan", "-nan", "na", "n/a", "n/e", "-"]).fillna(False).to_numpy()
    allowed = np.zeros(len(num), bool) if allow_missing is None else allow_missing
    for mask, what in ((empty & ~allowed, "missing value"), (nan_text & ~allowed, "missing value (NaN)")):
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise InputError(what, file=file, row=line(i), column=column)
    bad = np.isnan(num) & ~empty & ~nan_text
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"not a number: {raw.iloc[i]!r}", file=file, row=line(i), column=column)
    inf = np.isinf(num)
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise InputError("value is not finite", file=file, row=line(i), column=column)
    return num


def check_timestamps(ts: pd.DatetimeIndex, *, file: str | None = None, lines: np.ndarray | None = None) -> None:
    """Timestamps must be strictly increasing, unique and on a 15-minute grid."""
    line = (lambda i: int(lines[i])) if lines is not None else _line
    ts = pd.DatetimeIndex(ts)
    t = ts.as_unit("ns").asi8
    d = np.diff(t)
    if np.any(d == 0):
        i = int(np.flatnonzero(d == 0)[0]) + 1
        raise InputError(f"duplicate timestamp {ts[i].isoformat()}", file=file, row=line(i), column=TIMESTAMP)
    if np.any(d < 0):
        i = int(np.flatnonzero(d < 0)[0]) + 1
        raise InputError(
            f"timestamps not increasing: {ts[i].isoformat()} after {ts[i - 1].isoformat()}",
            file=file,
            row=line(i),
            column=TIMESTAMP,
        )
    off = (t // 1_000_000_000) % (15 * 60)
    if np.any(off):
        i = int(np.flatnonzero(off)[0])
        raise InputError(
            f"timestamp {ts[i].isoformat()} is not on a 15-minute boundary", file=file, row=line(i), column=TIMESTAMP
        )


def validate_prices(
    df: pd.DataFrame, *, file: str | None = None, allow_future: bool = False, allow_missing: bool = False
) -> pd.DataFrame:
    """Check and normalise a price frame (raw cells or numbers) into UTC timestamps and float columns.

    With ``allow_future`` the price may be empty in a trailing block of rows whose exogenous columns are all
    given (exogenous forecasts for the day to forecast); anywhere else an empty cell is an error, unless
    ``allow_missing``: then empty and NaN cells (prices or exogenous values) become NaN, for :func:`fill_gaps`.
    """
    if TIMESTAMP not in df.columns:
        raise InputError(f"missing column {TIMESTAMP!r} (found {list(df.columns)})", file=file, column=TIMESTAMP)
    if PRICE not in df.columns:
        raise InputError(f"missing column {PRICE!r} (found {list(df.columns)})", file=file, column=PRICE)
    if len(df) == 0:
        raise InputError("no data rows", file=file)
    dup = [c for c in df.columns if list(df.columns).count(c) > 1]
    if dup:
        raise InputError(f"duplicate column {dup[0]!r}", file=file, column=str(dup[0]))
    df = df.reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(df[TIMESTAMP]):
        ts = pd.DatetimeIndex(df[TIMESTAMP])
        ts = (ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")).as_unit("ns")
    else:
        ts = parse_timestamps(df[TIMESTAMP], file=file)
    check_timestamps(ts, file=file)
    out = pd.DataFrame({TIMESTAMP: ts})
    exog = [c for c in df.columns if c not in (TIMESTAMP, PRICE)]
    allow = np.ones(len(df), bool) if allow_missing else None
    if allow_future and not allow_missing:
        p = df[PRICE].astype("string").str.strip()
        missing = (p.isna() | (p == "")).to_numpy()
        tail = np.zeros(len(df), bool)
        if missing.any():
            k = len(df)
            while k > 0 and missing[k - 1]:
                k -= 1
            tail[k:] = True
        allow = tail
    out[PRICE] = numeric_column(df[PRICE], file=file, column=PRICE, allow_missing=allow)
    for c in exog:
        out[str(c)] = numeric_column(df[c], file=file, column=str(c), allow_missing=allow if allow_missing else None)
    if np.isnan(out[PRICE]).all():
        raise InputError("no prices given", file=file, column=PRICE)
    return out


def _read_price_csv(path: Path, *, allow_future: bool, allow_missing: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw cells and the validated frame of the price file at ``path``."""
    if not path.is_file():
        raise InputError("price file not found", file=str(path))
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV file: {exc}", file=str(path)) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw, validate_prices(raw, file=str(path), allow_future=allow_future, allow_missing=allow_missing)


def read_price_file(
    path: str | Path,
    *,
    allow_future: bool = False,
    notes: list[str] | None = None,
    fill_gaps: int = 0,
    gaps: list[Gap] | None = None,
) -> pd.DataFrame:
    """Read and validate a price file (``timestamp, price_eur_per_mwh`` plus optional exogenous columns).

    Timestamps without an offset are taken as UTC; when there are such, a line saying so is appended to
    ``notes`` (for the console). Gaps (empty or NaN cells, rows missing from the time grid) are filled by
    linear interpolation in time when a run is at most ``fill_gaps`` steps long (:func:`fill_gaps`; 0 = none
    is filled), and each filled run is appended to ``gaps``; a longer run, or one at either end of the series,
    raises :class:`InputError` naming the first missing timestamp and ``--fill-gaps``. With ``allow_future``,
    the rows after the last price are exogenous forecasts for the day to forecast, not gaps.
    """
    path = Path(path)
    raw, df = _read_price_csv(path, allow_future=allow_future, allow_missing=True)
    df, found = _fill_gaps(df, fill_gaps, file=str(path), allow_future=allow_future)
    if gaps is not None:
        gaps.extend(found)
    if notes is not None:
        naive = ~np.asarray([names_utc_offset(str(v)) for v in raw[TIMESTAMP]], dtype=bool)
        if naive.any():
            what = "no timestamp names" if naive.all() else f"{int(naive.sum())} of {len(naive)} timestamps name no"
            notes.append(f"{path}: {what} its offset from UTC; they are taken as UTC")
    return df


# ----------------------------------------------------------------------------------------------------
# Gaps: missing prices and rows missing from the time grid
# ----------------------------------------------------------------------------------------------------

#: Steps each side of a step whose shortest length is the local step length (8 = two hours of quarter-hours).
_GAP_WINDOW = 8


@dataclass(frozen=True)
class Gap:
    """A filled run of consecutive missing steps of a price series (UTC step starts, both inclusive)."""

    first: pd.Timestamp  #: the first missing step (UTC)
    last: pd.Timestamp  #: the last missing step (UTC)
    steps: int  #: missing steps in the run
    kind: str  #: ``"cells"`` (empty or NaN values), ``"rows"`` (rows missing from the grid) or ``"cells and rows"``

    def describe(self) -> str:
        """One console line, e.g. ``filled 3 missing steps (rows) from 2025-03-04T05:00:00Z to ...T07:00:00Z``."""
        first, last = format_timestamps(pd.DatetimeIndex([self.first, self.last]))
        span = f"at {first}" if self.steps == 1 else f"from {first} to {last}"
        s = "" if self.steps == 1 else "s"
        return f"filled {self.steps} missing step{s} ({self.kind}) {span} by linear interpolation"


def gap_counts(gaps: list[Gap]) -> dict[str, int]:
    """How many runs were filled and how many steps they held: ``{"runs": ..., "steps": ...}``."""
    return {"runs": len(gaps), "steps": int(sum(g.steps for g in gaps))}


def gap_lines(gaps: list[Gap], *, file: str | Path | None = None, limit: int = 10) -> list[str]:
    """Console lines for filled gaps: one per run (after ``file``), at most ``limit``, then ``... and N more``."""
    pre = "" if file is None else f"{file}: "
    lines = [pre + g.describe() for g in gaps[:limit]]
    if len(gaps) > limit:
        rest = gaps[limit:]
        lines.append(f"... and {len(rest)} more filled gaps ({sum(g.steps for g in rest)} steps)")
    return lines


def _snap(minutes: np.ndarray) -> np.ndarray:
    """The longest accepted step length (:data:`RESOLUTIONS`) that divides each length in ``minutes`` (else 15)."""
    out = np.full(minutes.shape, min(RESOLUTIONS), dtype=np.int64)
    for r in sorted(RESOLUTIONS):
        out = np.where((minutes >= r) & (minutes % r == 0), r, out)
    return out


def _missing_steps(t: np.ndarray) -> list[np.ndarray]:
    """The step starts (integer minutes) missing from the grid of the sorted step starts ``t`` (minutes).

    The step length on each side of a step is the shortest step within :data:`_GAP_WINDOW` steps on that
    side (snapped to :data:`RESOLUTIONS`; the first and last steps take the other side's). A step is whole
    when it is not longer than both, or equals one of them (the last hourly step before a switch to
    quarter-hours is 60 minutes long, not a gap), or, first or last, equals its neighbour; otherwise rows
    after it are missing: the hole continues the left side's step length as far as it fits, and the rest
    takes the right side's (a hole across the switch to quarter-hours: hourly rows, then quarter-hours).
    """
    d = np.diff(t)
    if len(d) == 0:
        return []
    ser = pd.Series(d, dtype="float64")
    left = ser.rolling(_GAP_WINDOW, min_periods=1).min().shift(1).to_numpy()
    right = ser[::-1].rolling(_GAP_WINDOW, min_periods=1).min()[::-1].shift(-1).to_numpy()
    own = np.minimum(d, max(RESOLUTIONS))
    left = np.where(np.isnan(left), np.where(np.isnan(right), own, right), left)
    right = np.where(np.isnan(right), left, right)
    res_l, res_r = _snap(left.astype(np.int64)), _snap(right.astype(np.int64))
    whole = (d <= np.minimum(res_l, res_r)) | (d == res_l) | (d == res_r)
    if len(d) > 1:  # the first and last steps have one side only: as long as their neighbour, they are whole
        whole[0] |= d[0] == d[1]
        whole[-1] |= d[-1] == d[-2]
    out = []
    for i in np.flatnonzero(~whole):
        h, s_l, s_r = int(d[i]), int(res_l[i]), int(res_r[i])
        m = next((m for m in range(h // s_l, 0, -1) if (h - m * s_l) % s_r == 0), 0)  # steps at the left length
        if m == 0:  # no mix of the two lengths fits: the finest common grid
            s_l = s_r = math.gcd(math.gcd(s_l, s_r), h)
            m = h // s_l
        left = t[i] + s_l * np.arange(1, m, dtype=np.int64)
        right = t[i] + m * s_l + s_r * np.arange((h - m * s_l) // s_r, dtype=np.int64)
        out.append(np.concatenate([left, right]))
    return out


def fill_gaps(
    df: pd.DataFrame, max_steps: int, *, file: str | None = None, allow_future: bool = True
) -> tuple[pd.DataFrame, list[Gap]]:
    """Fill the gaps of a validated price frame: runs of at most ``max_steps`` missing steps, by linear interpolation.

    A step is missing when its price or an exogenous value is NaN, or when its row is absent from the time
    grid (a hole where the next timestamp is further than the local step length; the switch from hourly to
    15-minute products is no hole). Missing rows are inserted; the price and every exogenous column are
    interpolated linearly in time between the neighbouring known values of that column. With
    ``allow_future`` (the default) the rows after the last price are exogenous forecasts for the day to
    forecast: their prices stay empty (only their exogenous values are filled).

    Returns the frame (sorted, index 0..n-1) and the filled runs. A run longer than ``max_steps`` (any run
    when it is 0), or one at the start or end of the series, raises :class:`InputError` naming ``file``, the
    first missing timestamp (UTC), the run's length in steps and ``--fill-gaps``.
    """
    if max_steps < 0:
        raise InputError(f"--fill-gaps must be >= 0 steps, got {max_steps}", column="--fill-gaps")
    return _fill_gaps(df, int(max_steps), file=file, allow_future=allow_future)


@dataclass(frozen=True)
class _Grid:
    """A price frame on its full time grid: missing rows inserted, the missing values marked."""

    tt: np.ndarray  #: step starts (integer minutes since the epoch, UTC)
    src: np.ndarray  #: row of the frame of each step, -1 where the row was missing
    vals: dict[str, np.ndarray]  #: price and exogenous columns (NaN where missing)
    nan: dict[str, np.ndarray]  #: values to fill per column (a future row's price is not one)
    runs: list[tuple[int, int, str]]  #: (first, last, kind) of each run of missing steps, in time order


def _grid(df: pd.DataFrame, allow_future: bool) -> _Grid:
    cols = [PRICE] + [c for c in df.columns if c not in (TIMESTAMP, PRICE)]
    t = pd.DatetimeIndex(df[TIMESTAMP]).as_unit("ns").asi8 // 60_000_000_000  # integer minutes
    holes = _missing_steps(t)
    new = np.concatenate(holes) if holes else np.zeros(0, np.int64)
    order = np.argsort(np.concatenate([t, new]), kind="stable")
    tt = np.concatenate([t, new])[order]
    src = np.concatenate([np.arange(len(t)), np.full(len(new), -1)])[order]
    vals = {c: np.concatenate([df[c].to_numpy(dtype=float), np.full(len(new), np.nan)])[order] for c in cols}
    n = len(tt)
    known = np.flatnonzero(~np.isnan(vals[PRICE]))
    tail = np.arange(n) > known[-1] if allow_future and len(known) else np.zeros(n, bool)
    nan = {c: np.isnan(vals[c]) & (~tail if c == PRICE else True) for c in cols}
    missing = np.logical_or.reduce([nan[c] for c in cols]) | (src < 0)
    edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
    runs = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True):
        inserted = src[a : b + 1] < 0
        runs.append((int(a), int(b), "rows" if inserted.all() else "cells" if not inserted.any() else "cells and rows"))
    return _Grid(tt=tt, src=src, vals=vals, nan=nan, runs=runs)


def _gap(g: _Grid, a: int, b: int, kind: str) -> Gap:
    first, last = pd.to_datetime([g.tt[a], g.tt[b]], unit="m", utc=True)
    return Gap(first=first, last=last, steps=b - a + 1, kind=kind)


def find_gaps(df: pd.DataFrame, *, allow_future: bool = True) -> list[Gap]:
    """Every run of missing steps of a validated price frame (as :func:`fill_gaps` sees them), filled or not."""
    g = _grid(df.reset_index(drop=True), allow_future)
    return [_gap(g, a, b, kind) for a, b, kind in g.runs]


def _fill_gaps(
    df: pd.DataFrame, max_steps: int, *, file: str | None, allow_future: bool
) -> tuple[pd.DataFrame, list[Gap]]:
    df = df.reset_index(drop=True)
    g = _grid(df, allow_future)
    if not g.runs:
        return df, []
    n = len(g.tt)
    for a, b, kind in g.runs:
        if a == 0 or b == n - 1 or b - a + 1 > max_steps:
            raise _gap_error(g, a, b, kind, max_steps, file)
    for c, v in g.vals.items():
        fill = g.nan[c]
        if fill.any():
            have = ~np.isnan(v)
            v[fill] = np.interp(g.tt[fill], g.tt[have], v[have])
    out = pd.DataFrame({TIMESTAMP: pd.DatetimeIndex(pd.to_datetime(g.tt, unit="m", utc=True)).as_unit("ns")})
    for c in df.columns:
        if c != TIMESTAMP:
            out[c] = g.vals[c]
    return out, [_gap(g, a, b, kind) for a, b, kind in g.runs]


def _gap_error(g: _Grid, a: int, b: int, kind: str, max_steps: int, file: str | None) -> InputError:
    """The error for the run of missing steps ``a..b`` that :func:`fill_gaps` does not fill."""
    tt, src, nan, cols, n = g.tt, g.src, g.nan, list(g.vals), len(g.tt)

    def iso(i: int) -> str:
        return format_timestamps(pd.to_datetime([tt[i]], unit="m", utc=True))[0]

    steps = b - a + 1
    gone = [c for c in cols if nan[c][a : b + 1].any()]
    what = "prices" if PRICE in gone else "values of " + ", ".join(gone) if gone else "rows"
    values = "missing value" + ("s" if steps > 1 else "") + ", empty or NaN"
    detail = {
        "cells": values,
        "rows": f"no rows between {iso(a - 1)} and {iso(b + 1)}" if 0 < a and b < n - 1 else "missing rows",
        "cells and rows": values + " and missing rows",
    }[kind]
    if a == 0 or b == n - 1:
        side, what_value = ("start", "earlier") if a == 0 else ("end", "later")
        reason = (
            f"at the {side} of the series there is no {what_value} value to interpolate with, and --fill-gaps "
            "fills only runs between two known values; give the values or remove those rows"
        )
    elif max_steps == 0:
        reason = "gaps are filled only with --fill-gaps N (runs of up to N steps, linearly in time); or give the values"
    else:
        reason = f"more than --fill-gaps {max_steps} fills; give the values or a larger --fill-gaps"
    row, column = None, TIMESTAMP
    if src[a] >= 0:  # the run starts with a row of the file: name it and its first missing value
        row = None if file is None else _line(int(src[a]))
        column = next(c for c in cols if nan[c][a])
    s = "" if steps == 1 else "s"
    return InputError(
        f"{what} missing from {iso(a)} for {steps} step{s} ({detail}): {reason}", file=file, row=row, column=column
    )


def format_timestamps(ts: pd.DatetimeIndex | pd.Series) -> list[str]:
    """UTC ISO 8601 strings, e.g. ``2025-10-01T00:15:00Z``."""
    idx = pd.DatetimeIndex(ts)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return list(idx.strftime("%Y-%m-%dT%H:%M:%SZ"))


def price_file_text(df: pd.DataFrame) -> str:
    """The CSV text of a price frame (UTC ISO 8601 timestamps first, then the price, then exogenous columns)."""
    out = df.copy()
    out[TIMESTAMP] = format_timestamps(out[TIMESTAMP])
    cols = [TIMESTAMP, PRICE] + [c for c in out.columns if c not in (TIMESTAMP, PRICE)]
    return out[cols].to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_price_file(df: pd.DataFrame, path: str | Path, *, option: str | None = None) -> None:
    """Validate ``df`` and write it as a price file, whole or not at all (:func:`jaxvpp.files.write_file`)."""
    validate_prices(df, allow_future=True)
    write_file(path, price_file_text(df), option=option)


# ----------------------------------------------------------------------------------------------------
# Synthetic day-ahead prices
# ----------------------------------------------------------------------------------------------------


def synthetic_prices(
    days: int = 365,
    resolution_minutes: int = 60,
    seed: int = 0,
    *,
    start: str = "2024-01-01",
    tz: str = MARKET_TZ,
) -> pd.DataFrame:
    """A seeded synthetic day-ahead price series (EUR/MWh) with a renewable-share driver.

    Merit-order model: price = fuel level x convex supply curve of the residual demand
    ``D_t (1 - S_t)``, plus heavy-tailed (Student-t, 3 d.o.f.) autocorrelated noise and scarcity spikes.

    * demand ``D_t``: morning and evening peaks in local time, weekends lower, winter higher;
    * renewable share ``S_t`` in [0, 0.95]: solar (daylight bell, larger in summer, daily cloudiness)
      plus wind (persistent over days, stronger in winter); high shares give negative prices;
    * fuel level: slow multiplicative random walk with drift (gas/CO2 prices), seasonal price level;
    * columns: ``timestamp`` (UTC), ``price_eur_per_mwh``, ``renewable_share`` = the day-ahead forecast of
      ``S_t`` (the truth plus forecast error), an exogenous column known before the auction.

    ``days`` whole local delivery days from ``start`` at ``resolution_minutes`` (15, 30 or 60).
    """
    _check_resolution(resolution_minutes)
    if days < 1:
        raise InputError(f"days must be at least 1, got {days}", column="days")
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start)
    t0 = (t0.tz_convert(tz) if t0.tzinfo is not None else t0.tz_localize(tz)).normalize()
    t1 = (t0.tz_localize(None) + pd.Timedelta(days=days)).tz_localize(tz)
    idx = pd.date_range(t0, t1, freq=f"{resolution_minutes}min", inclusive="left")
    n = len(idx)
    loc = idx
    hour = np.asarray(loc.hour + loc.minute / 60.0, dtype=float) + resolution_minutes / 120.0  # mid-step
    dow = np.asarray(loc.day_of_week)
    doy = np.asarray(loc.day_of_year, dtype=float)
    day_no = np.asarray((loc.tz_localize(None).normalize() - t0.tz_localize(None)).days)
    steps_per_hour = 60.0 / resolution_minutes
    winter = np.cos(2 * np.pi * (doy - 15) / 365.25)  # +1 mid-January, -1 mid-July

    # demand (normalised): daily shape, weekend, season
    shape = (
        0.72
        + 0.16 * np.exp(-((hour - 9.0) ** 2) / 6.0)
        + 0.20 * np.exp(-((hour - 19.0) ** 2) / 5.0)
        - 0.10 * np.exp(-((hour - 3.5) ** 2) / 6.0)
    )
    weekend = np.where(dow == 6, 0.82, np.where(dow == 5, 0.90, 1.0))
    demand = shape * weekend * (1.0 + 0.07 * winter)

    # renewable share: solar + wind
    sun = np.clip(np.sin(np.pi * (hour - 6.5 + 1.5 * (1 - winter) / 2) / (11.0 + 5.0 * (1 - winter) / 2)), 0, None)
    sun = np.where((hour > 4) & (hour < 22), sun, 0.0)
    cloud = np.clip(rng.beta(2.5, 1.5, size=days + 1), 0.05, 1.0)[day_no]
    solar = (0.22 + 0.18 * (1 - winter) / 2) * sun**1.5 * cloud
    wind_hours = np.arange(n) / steps_per_hour
    phi = 0.985 ** (1.0 / steps_per_hour)  # hourly persistence ~ 0.985 (a weather system lasts days)
    eps = rng.standard_normal(n) * np.sqrt(1 - phi**2)
    w = np.empty(n)
    w[0] = eps[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        w[i] = phi * w[i - 1] + eps[i]
    wind = np.clip(0.28 + 0.06 * winter + 0.17 * w + 0.02 * np.sin(2 * np.pi * wind_hours / 24 + 1.0), 0.02, None)
    share = np.clip(solar + wind, 0.0, 0.95)
    share_fc = np.clip(share + 0.02 * rng.standard_normal(n) + 0.02 * rng.standard_normal(days + 1)[day_no], 0.0, 0.95)

    # fuel level: multiplicative random walk (daily) with drift; seasonal level
    fuel_steps = rng.normal(0.0004, 0.012, size=days + 1)
    fuel = np.exp(np.cumsum(fuel_steps))[day_no]
    level = fuel * (1.0 + 0.08 * winter)

    # merit order: convex supply curve of residual demand
    r = demand * (1.0 - share)
    base = -45.0 + 190.0 * r + 45.0 * np.exp(9.0 * (r - 0.80))
    base = np.where(base < 0, base * 0.6, base)  # negative prices are damped (curtailment)

    # heavy-tailed AR(1) noise and scarcity spikes (EUR/MWh)
    phi_n = 0.8 ** (1.0 / steps_per_hour)
    innov = rng.standard_t(3, size=n) * 5.0 * np.sqrt(1 - phi_n**2) / np.sqrt(3.0)
    noise = np.empty(n)
    noise[0] = innov[0]
    for i in range(1, n):
        noise[i] = phi_n * noise[i - 1] + innov[i]
    noise *= np.sqrt(3.0) * 1.6
    daily_shock = rng.standard_t(4, size=days + 1)[day_no] * 4.0
    spike_p = 0.004 / steps_per_hour * (1 + 4 * np.clip((r - 0.6) / 0.3, 0, 1))
    spikes = (rng.random(n) < spike_p) * rng.exponential(120.0, size=n)
    dips = (rng.random(n) < 0.002 / steps_per_hour * (share > 0.6)) * -rng.exponential(60.0, size=n)
    quarter = 0.0
    if resolution_minutes == 15:  # quarter-hour sawtooth inside the hour (ramp effects of 15-min products)
        quarter = 3.0 * (np.asarray(loc.minute) / 15.0 - 1.5) * np.sign(np.gradient(demand))
    price = level * base + noise + daily_shock + spikes + dips + quarter
    return pd.DataFrame(
        {
            TIMESTAMP: idx.tz_convert("UTC").as_unit("ns"),
            PRICE: np.round(price, 2),
            "renewable_share": np.round(share_fc, 4),
        }
    )


# ----------------------------------------------------------------------------------------------------
# ENTSO-E: Transparency Platform CSV exports and the API through entsoe-py
# ----------------------------------------------------------------------------------------------------

_TZ_MARK = re.compile(r"\((CET|CEST|UTC)\)")


def _entsoe_columns(raw: pd.DataFrame, file: str) -> tuple[str, str]:
    mtu = [c for c in raw.columns if c.strip().upper().startswith("MTU")]
    price = [c for c in raw.columns if "price" in c.lower() and "eur" in c.lower()]
    if not mtu:
        raise InputError(
            f"no 'MTU ...' column: not an ENTSO-E day-ahead price export (found {list(raw.columns)})",
            file=file,
            column="MTU",
        )
    if not price:
        raise InputError(
            f"no 'Day-ahead Price [EUR/MWh]' column (found {list(raw.columns)})",
            file=file,
            column="Day-ahead Price [EUR/MWh]",
        )
    return mtu[0], price[0]


def read_entsoe_csv(path: str | Path, *, tz: str = MARKET_TZ) -> pd.DataFrame:
    """Import a day-ahead price CSV exported from the ENTSO-E Transparency Platform into a price frame (UTC).

    Accepts the legacy export (``MTU (CET/CEST)`` = ``"01.01.2023 00:00 - 01.01.2023 01:00"``,
    ``Day-ahead Price [EUR/MWh]``) and the current one (``"01/01/2025 00:00:00 - 01/01/2025 00:15:00"``,
    ``Day-ahead Price (EUR/MWh)``, optional ``Sequence``). ``MTU (UTC)`` columns are read as UTC; otherwise the
    local times are resolved with ``tz``: the repeated autumn hour by its ``(CET)``/``(CEST)`` mark or, without
    marks, by order. Empty, ``-`` and ``n/e`` prices (no auction result) are dropped.
    """
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise InputError("ENTSO-E CSV file not found", file=file)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, sep=None, engine="python")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV file: {exc}", file=file) from None
    raw.columns = [str(c).strip().strip('"') for c in raw.columns]
    mtu_col, price_col = _entsoe_columns(raw, file)
    seq_col = next((c for c in raw.columns if c.lower().startswith("sequence")), None)
    if seq_col is not None:  # keep one auction sequence (the first one listed)
        first = raw[seq_col].iloc[0] if len(raw) else ""
        raw = raw[raw[seq_col] == first]
    raw = raw.reset_index()  # keeps the original row number in 'index'
    text = raw[mtu_col].astype(str).str.strip()
    start_text = text.str.split(" - ", n=1).str[0].str.strip()
    marks = start_text.str.extract(_TZ_MARK)[0]
    start_clean = start_text.str.replace(_TZ_MARK, "", regex=True).str.strip()
    parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    for fmt in (
        "%d.%m.%Y %H:%M",
        "%d/%m/%Y %H:%M:%S",
        "%d/%m/%Y %H:%M",
        "%d.%m.%Y %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ):
        todo = parsed.isna()
        if not todo.any():
            break
        parsed[todo] = pd.to_datetime(start_clean[todo], format=fmt, errors="coerce")
    if parsed.isna().any():
        i = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise InputError(
            f"cannot parse delivery period {text.iloc[i]!r}",
            file=file,
            row=_line(int(raw["index"].iloc[i])),
            column=mtu_col,
        )
    naive = pd.DatetimeIndex(parsed)
    if "UTC" in mtu_col.upper():
        ts = naive.tz_localize("UTC")
    else:
        if marks.notna().any():
            ambiguous = (marks == "CEST").to_numpy()  # True = DST side of a repeated hour
            ts = naive.tz_localize(tz, ambiguous=ambiguous, nonexistent="raise")
        else:
            try:
                ts = naive.tz_localize(tz, ambiguous="infer")
            except Exception as exc:  # pytz/zoneinfo AmbiguousTimeError or NonExistentTimeError
                raise InputError(f"cannot place local times in {tz}: {exc}", file=file, column=mtu_col) from None
        ts = ts.tz_convert("UTC")
    price_raw = raw[price_col].astype(str).str.strip()
    keep = ~price_raw.str.lower().isin(["", "-", "n/e", "nan", "n/a"])
    frame = pd.DataFrame({TIMESTAMP: ts[keep.to_numpy()].as_unit("ns"), PRICE: price_raw[keep].to_numpy()})
    if len(frame) == 0:
        raise InputError("the export holds no prices", file=file, column=price_col)
    lines = raw["index"][keep].to_numpy() + 2  # line numbers in the export (header = line 1)
    check_timestamps(frame[TIMESTAMP], file=file, lines=lines)
    frame[PRICE] = numeric_column(frame[PRICE], file=file, column=price_col, lines=lines)
    return frame


def read_entsoe_csvs(paths: list[str | Path], *, tz: str = MARKET_TZ) -> pd.DataFrame:
    """Import and concatenate several ENTSO-E exports (e.g. one per year); overlapping steps must agree."""
    frames = [read_entsoe_csv(p, tz=tz) for p in paths]
    df = pd.concat(frames, ignore_index=True).sort_values(TIMESTAMP, kind="stable")
    dup = df.duplicated(TIMESTAMP, keep=False)
    if dup.any():
        g = df[dup].groupby(TIMESTAMP)[PRICE].nunique()
        if (g > 1).any():
            raise InputError(f"the exports disagree on the price at {g[g > 1].index[0].isoformat()}", column=PRICE)
        df = df.drop_duplicates(TIMESTAMP)
    return validate_prices(df.reset_index(drop=True))


def fetch_entsoe(
    zone: str,
    start: str,
    end: str,
    *,
    cache_dir: str | Path = "data/raw",
    refresh: bool = False,
    api_key: str | None = None,
    tz: str = MARKET_TZ,
) -> tuple[pd.DataFrame, Path]:
    """Day-ahead prices of bidding ``zone`` (e.g. ``DE_LU``) for local days ``start`` (inclusive) to ``end`` (exclusive).

    Uses entsoe-py (``pip install 'jaxvpp[entsoe]'``) with the API key from ``ENTSOE_API_KEY``. The price file is
    cached as ``cache_dir/entsoe_<zone>_<start>_<end>.csv`` and read from there unless ``refresh``. Returns the
    frame (UTC; a mix of hourly and 15-minute products is kept as delivered) and the cache path.
    """
    t_start, t_end = pd.Timestamp(start), pd.Timestamp(end)
    if not t_end > t_start:
        raise InputError(f"--end ({end}) must be after --start ({start})", column="--end")
    cache = Path(cache_dir) / f"entsoe_{zone}_{t_start:%Y%m%d}_{t_end:%Y%m%d}.csv"
    if cache.is_file() and not refresh:  # as delivered: rows missing from the grid are kept missing
        return _read_price_csv(cache, allow_future=False, allow_missing=False)[1], cache
    check_file(cache, option="--cache-dir")  # before the query
    key = api_key or os.environ.get("ENTSOE_API_KEY", "").strip()
    if not key:
        raise InputError(
            "the ENTSO-E API key is not set: export ENTSOE_API_KEY=<your token> (request one from "
            "transparency@entsoe.eu), or import an exported CSV with --import-csv",
            column="ENTSOE_API_KEY",
        )
    try:
        from entsoe import EntsoePandasClient
    except ImportError:
        raise InputError(
            "entsoe-py is not installed: pip install 'jaxvpp[entsoe]' (or entsoe-py), or import an "
            "exported CSV with --import-csv"
        ) from None
    client = EntsoePandasClient(api_key=key)
    s0 = t_start.tz_localize(tz) if t_start.tzinfo is None else t_start
    s1 = t_end.tz_localize(tz) if t_end.tzinfo is None else t_end
    try:
        series = client.query_day_ahead_prices(zone, start=s0, end=s1)
    except Exception as exc:  # network, authentication, no data: report rather than crash
        raise InputError(f"ENTSO-E query for {zone} {start}..{end} failed: {type(exc).__name__}: {exc}") from None
    df = entsoe_series_to_frame(series)
    write_price_file(df, cache, option="--cache-dir")
    return df, cache


def entsoe_series_to_frame(series: pd.Series | pd.DataFrame) -> pd.DataFrame:
    """The entsoe-py result (prices indexed by tz-aware step starts) as a validated UTC price frame."""
    if isinstance(series, pd.DataFrame):
        series = series.iloc[:, 0]
    idx = pd.DatetimeIndex(series.index)
    if idx.tz is None:
        raise InputError("entsoe-py returned naive timestamps", column=TIMESTAMP)
    df = pd.DataFrame({TIMESTAMP: idx.tz_convert("UTC").as_unit("ns"), PRICE: np.asarray(series, dtype=float)})
    df = df.dropna().sort_values(TIMESTAMP).drop_duplicates(TIMESTAMP, keep="last").reset_index(drop=True)
    return validate_prices(df)
