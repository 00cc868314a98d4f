"""The data contract: reading ``fleet.csv``, ``scenarios.csv`` and ``target.csv``; writing results atomically.

Every problem with an input file raises one :class:`~jaxvpp.errors.InputError` that names the file, the row
and the column. **Rows are line numbers in the file**: the header is row 1, the first data row is row 2
(as a spreadsheet or ``nl -ba`` shows it). Problems with a whole column (a missing column, probabilities
that do not sum to 1) name row 1, the header, or no row.

Files (UTF-8, comma separated, a leading byte-order mark and spaces around cells are ignored):

* ``fleet.csv``: ``battery_id`` (required, unique) and any of the parameter columns in
  :data:`jaxvpp.problem.FLEET_COLUMNS`. A missing column or an empty cell takes the default in
  :data:`jaxvpp.problem.DEFAULTS`, except ``ramp_mw_per_h``: an empty cell (or ``inf``) means no ramp limit,
  a missing column the default ramp. Unknown columns are rejected (usually a typo).
* ``scenarios.csv``: ``scenario`` (unique labels), ``probability``, then one price column (EUR/MWh) per
  step; the header of a price column is the step's label. Probabilities must be >= 0 and sum to 1 within
  1e-6 (they are then rescaled to sum to 1 exactly).
* ``target.csv``: ``step``, ``target_mw`` (the required fleet sum of net injections p_t, MW), one row per
  step of the scenarios, matched to it by the label in ``step`` (rows in any order; a label that is no
  step, a step given twice or left out is an error).

Outputs are written through :mod:`jaxvpp.files`: checked before any work, each folder whole or not at all.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxvpp.errors import InputError
from jaxvpp.files import Content, write_folder
from jaxvpp.market.ingress import names_utc_offset
from jaxvpp.problem import DEFAULTS, FLEET_COLUMNS, Fleet, Market

#: Probabilities must sum to 1 within this tolerance.
PROBABILITY_TOL = 1e-6

#: Columns of ``schedules.csv`` in order.
SCHEDULE_COLUMNS: tuple[str, ...] = ("battery_id", "step", "charge_mw", "discharge_mw", "net_mw", "soc_mwh")

_FRACTION_COLUMNS = ("soc_min", "soc_max", "soc_initial")
_NONNEGATIVE_COLUMNS = ("risk_weight", "degradation_eur_per_mwh", "quadratic_cost_eur_per_mw2h")


# ----------------------------------------------------------------------------------------------- reading
def _read_rows(path: str | os.PathLike[str]) -> tuple[str, list[str], int, Iterator[tuple[int, list[str]]]]:
    """Open a CSV file: its name for messages, the stripped header, its line and an iterator of (line, cells).

    Blank lines are skipped (they still count for the line numbers).
    """
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", file=name)
    if not p.is_file():
        raise InputError("not a regular file", file=name)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", file=name) from None
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", file=name) from None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    header: list[str] | None = None
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                header = [c.strip() for c in cells]
                break
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}", file=name, row=reader.line_num) from None
    if header is None:
        raise InputError("the file is empty (no header line)", file=name)
    header_row = reader.line_num
    seen: set[str] = set()
    for col in header:
        if col == "":
            raise InputError("empty column name in the header", file=name, row=header_row)
        if col in seen:
            raise InputError("duplicate column name in the header", file=name, row=header_row, column=col)
        seen.add(col)

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                cells = [c.strip() for c in cells]
                if len(cells) != len(header):
                    raise InputError(
                        f"expected {len(header)} cells as in the header, found {len(cells)}", file=name, row=line
                    )
                yield line, cells
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", file=name, row=reader.line_num) from None

    return name, header, header_row, rows()


def _unique_label(value: str, seen: dict[str, int], *, empty: str, file: str, row: int, column: str) -> str:
    """A non-empty label not seen on an earlier row (``seen`` maps labels to their rows and is updated)."""
    if value == "":
        raise InputError(empty, file=file, row=row, column=column)
    if value in seen:
        raise InputError(
            f"duplicate {column} {value!r} (first on row {seen[value]})", file=file, row=row, column=column
        )
    seen[value] = row
    return value


def _parse_float(cell: str, *, file: str, row: int, column: str, allow_inf: bool = False) -> float:
    """Parse one numeric cell; NaN is always rejected, +-inf unless ``allow_inf``."""
    try:
        if "_" in cell:
            raise ValueError
        value = float(cell)
    except ValueError:
        raise InputError(f"not a number: {cell!r}", file=file, row=row, column=column) from None
    if math.isnan(value):
        raise InputError("NaN is not allowed", file=file, row=row, column=column)
    if math.isinf(value) and not allow_inf:
        raise InputError(f"must be finite, got {cell!r}", file=file, row=row, column=column)
    return value


def _require_columns(header: Sequence[str], required: Sequence[str], file: str, row: int = 1) -> None:
    for col in required:
        if col not in header:
            raise InputError(
                f"missing required column {col!r} (header: {', '.join(header)})", file=file, row=row, column=col
            )


def _check_battery(values: dict[str, float], present: set[str], file: str, row: int) -> None:
    """Physical validity of one battery's parameters (``present`` = columns given in the file, for messages)."""

    def err(column: str, message: str) -> InputError:
        return InputError(message, file=file, row=row, column=column)

    for col in ("capacity_mwh", "power_mw"):
        if not values[col] > 0:
            raise err(col, f"{col} must be positive, got {values[col]:g}")
    if values["ramp_mw_per_h"] < 0:
        raise err(
            "ramp_mw_per_h", f"ramp_mw_per_h must be >= 0 (empty or inf = no limit), got {values['ramp_mw_per_h']:g}"
        )
    for col in _FRACTION_COLUMNS:
        if not 0.0 <= values[col] <= 1.0:
            raise err(col, f"{col} must lie in [0, 1] (a fraction of capacity), got {values[col]:g}")
    if not values["soc_min"] < values["soc_max"]:
        col = "soc_min" if "soc_min" in present or "soc_max" not in present else "soc_max"
        raise err(col, f"soc_min ({values['soc_min']:g}) must be below soc_max ({values['soc_max']:g})")
    if not values["soc_min"] <= values["soc_initial"] <= values["soc_max"]:
        raise err(
            "soc_initial",
            f"soc_initial ({values['soc_initial']:g}) must lie in [soc_min, soc_max] = "
            f"[{values['soc_min']:g}, {values['soc_max']:g}]",
        )
    for col in ("eta_charge", "eta_discharge"):
        if not 0.0 < values[col] <= 1.0:
            raise err(col, f"{col} must lie in (0, 1], got {values[col]:g}")
    for col in _NONNEGATIVE_COLUMNS:
        if values[col] < 0:
            raise err(col, f"{col} must be >= 0, got {values[col]:g}")


def read_fleet(path: str | os.PathLike[str]) -> tuple[list[str], Fleet]:
    """Read ``fleet.csv``: the battery ids and the :class:`Fleet` (arrays of shape ``(N,)``, float64).

    Units as in :class:`~jaxvpp.problem.Fleet` (MWh, MW, MW/h, fractions, EUR/MWh, EUR/(MW^2 h)).
    Raises :class:`InputError` naming file, row (line number, header = 1) and column.
    """
    file, header, hrow, rows = _read_rows(path)
    _require_columns(header, ("battery_id",), file, hrow)
    unknown = [c for c in header if c != "battery_id" and c not in DEFAULTS]
    if unknown:
        raise InputError(
            f"unknown column {unknown[0]!r} (a typo?); allowed: battery_id, {', '.join(FLEET_COLUMNS)}",
            file=file,
            row=hrow,
            column=unknown[0],
        )
    present = set(header)
    index = {c: header.index(c) for c in header}
    ids: list[str] = []
    first_seen: dict[str, int] = {}
    cols: dict[str, list[float]] = {c: [] for c in FLEET_COLUMNS}
    for line, cells in rows:
        bid = _unique_label(
            cells[index["battery_id"]], first_seen, empty="empty battery_id", file=file, row=line, column="battery_id"
        )
        values: dict[str, float] = {}
        for col in FLEET_COLUMNS:
            cell = cells[index[col]] if col in index else ""
            if cell == "":
                # empty ramp cell = no ramp limit; a missing ramp column = the default ramp
                values[col] = math.inf if (col == "ramp_mw_per_h" and col in index) else DEFAULTS[col]
            else:
                allow_inf = col == "ramp_mw_per_h"
                values[col] = _parse_float(cell, file=file, row=line, column=col, allow_inf=allow_inf)
        _check_battery(values, present, file, line)
        ids.append(bid)
        for col in FLEET_COLUMNS:
            cols[col].append(values[col])
    if not ids:
        raise InputError("no batteries: the file has a header but no data rows", file=file, row=hrow + 1)
    fleet = Fleet(**{c: jnp.asarray(np.asarray(v, dtype=np.float64)) for c, v in cols.items()})
    return ids, fleet


def read_scenarios(path: str | os.PathLike[str]) -> tuple[list[str], Market]:
    """Read ``scenarios.csv``: the step labels (price-column headers) and the :class:`Market`.

    Prices in EUR/MWh, shape ``(K, T)``; probabilities ``(K,)`` rescaled to sum to exactly 1 after the check
    that they sum to 1 within :data:`PROBABILITY_TOL`.
    """
    file, header, hrow, rows = _read_rows(path)
    _require_columns(header, ("scenario", "probability"), file, hrow)
    i_scen, i_prob = header.index("scenario"), header.index("probability")
    step_cols = [j for j in range(len(header)) if j not in (i_scen, i_prob)]
    if not step_cols:
        raise InputError(
            "no price columns: give one column per step after 'scenario, probability'", file=file, row=hrow
        )
    steps = [header[j] for j in step_cols]
    labels: dict[str, int] = {}
    prices: list[list[float]] = []
    probs: list[float] = []
    for line, cells in rows:
        _unique_label(cells[i_scen], labels, empty="empty scenario label", file=file, row=line, column="scenario")
        w = _parse_float(cells[i_prob], file=file, row=line, column="probability")
        if w < 0:
            raise InputError(f"probability must be >= 0, got {w:g}", file=file, row=line, column="probability")
        probs.append(w)
        prices.append([_parse_float(cells[j], file=file, row=line, column=header[j]) for j in step_cols])
    if not probs:
        raise InputError("no scenarios: the file has a header but no data rows", file=file, row=hrow + 1)
    total = math.fsum(probs)
    if abs(total - 1.0) > PROBABILITY_TOL:
        raise InputError(
            f"probabilities sum to {total:.12g}, not 1 (tolerance {PROBABILITY_TOL:g})", file=file, column="probability"
        )
    w_arr = np.asarray(probs, dtype=np.float64)
    market = Market(prices=jnp.asarray(np.asarray(prices, dtype=np.float64)), probabilities=jnp.asarray(w_arr / total))
    return steps, market


def check_steps(
    found: int,
    expected: int,
    *,
    file: str | os.PathLike[str] | None = None,
    row: int | None = None,
    column: str | None = None,
    expected_from: str = "the price scenarios",
) -> None:
    """Raise :class:`InputError` if a file has ``found`` steps where ``expected`` (from ``expected_from``) are needed."""
    if int(found) != int(expected):
        raise InputError(
            f"{found} steps, but {expected_from} have {expected} steps",
            file=None if file is None else str(file),
            row=row,
            column=column,
        )


def _instant(label: str) -> int | None:
    """The UTC instant (ns) of an ISO 8601 label with an explicit offset (``Z``, ``+01:00``), else None."""
    if not names_utc_offset(label):
        return None
    try:
        ts = pd.Timestamp(label)
    except (ValueError, TypeError, OverflowError):
        return None
    if ts is pd.NaT or ts.tzinfo is None:
        return None
    return int(ts.tz_convert("UTC").as_unit("ns").value)


def read_target(
    path: str | os.PathLike[str], num_steps: int, *, step_labels: Sequence[str] | None = None
) -> np.ndarray:
    """Read ``target.csv`` (``step, target_mw``): the required fleet net injection per step (MW), shape ``(T,)``.

    With ``step_labels`` (the scenarios' steps) every row is matched to its step by the label in ``step``,
    in any order, and the result follows ``step_labels``; a label that is no step, a step given twice and a
    step left out are errors naming the file, the row and the label. Labels match when they are equal, or,
    when every step label is an ISO 8601 timestamp with an offset, when they denote the same instant
    (``2025-01-01T00:00:00Z`` = ``2025-01-01T01:00:00+01:00``). Without ``step_labels`` the rows are taken
    in order; their number must be ``num_steps``.
    """
    file, header, hrow, rows = _read_rows(path)
    _require_columns(header, ("step", "target_mw"), file, hrow)
    unknown = [c for c in header if c not in ("step", "target_mw")]
    if unknown:
        raise InputError(
            f"unknown column {unknown[0]!r}; target.csv has columns step, target_mw",
            file=file,
            row=hrow,
            column=unknown[0],
        )
    i_step, i_val = header.index("step"), header.index("target_mw")
    entries: list[tuple[int, str, float]] = []
    for line, cells in rows:
        if cells[i_step] == "":
            raise InputError("empty step label", file=file, row=line, column="step")
        entries.append((line, cells[i_step], _parse_float(cells[i_val], file=file, row=line, column="target_mw")))
    if not entries:
        raise InputError("no steps: the file has a header but no data rows", file=file, row=hrow + 1)
    if step_labels is None:
        check_steps(
            len(entries),
            num_steps,
            file=file,
            row=entries[-1][0] if len(entries) > num_steps else None,
            column="step",
            expected_from="the price scenarios",
        )
        return np.asarray([v for _, _, v in entries], dtype=np.float64)
    labels = [str(s) for s in step_labels]
    if len(labels) != int(num_steps):
        raise ValueError(f"{len(labels)} step labels for {num_steps} steps")
    instants = [_instant(s) for s in labels]
    by_instant = all(x is not None for x in instants) and len(set(instants)) == len(instants)
    position = {(x if by_instant else s): k for k, (s, x) in enumerate(zip(labels, instants))}
    count = "" if len(entries) == len(labels) else f" (the file has {len(entries)} steps, the scenarios {len(labels)})"
    values = np.full(len(labels), np.nan)
    first: dict[int, int] = {}
    for line, label, value in entries:
        k = position.get(_instant(label) if by_instant else label)
        if k is None:
            shown = ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")
            raise InputError(
                f"step {label!r} does not match any of the scenarios' steps ({shown}){count}",
                file=file,
                row=line,
                column="step",
            )
        if k in first:
            raise InputError(
                f"duplicate step {label!r}: step {labels[k]!r} is already given on row {first[k]}",
                file=file,
                row=line,
                column="step",
            )
        first[k] = line
        values[k] = value
    missing = [labels[k] for k in range(len(labels)) if k not in first]
    if missing:
        shown = ", ".join(repr(s) for s in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputError(
            f"{len(entries)} steps, but the price scenarios have {len(labels)} steps: missing {shown}",
            file=file,
            column="step",
        )
    return values


def validate_alpha(alpha: float) -> float:
    """Check the CVaR tail probability ``alpha`` lies in (0, 1); raises :class:`InputError` naming ``--alpha``."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"alpha must be a number in (0, 1), got {alpha!r}", column="--alpha") from None
    if not 0.0 < a < 1.0:
        raise InputError(f"alpha must lie in (0, 1) (the CVaR tail probability), got {alpha!r}", column="--alpha")
    return a


# ----------------------------------------------------------------------------------------------- writing
def write_outputs(
    out_dir: str | os.PathLike[str],
    files: Mapping[str, Content],
    *,
    owned: Sequence[str] = (),
    option: str | None = None,
) -> None:
    """Write ``files`` (name -> text, bytes, or a function writing the file) as the folder ``out_dir``, whole
    or not at all (:func:`jaxvpp.files.write_folder`).

    The new folder holds these files and every entry of the old folder except those in ``owned`` (the names
    the writer owns: written now, or stale from an earlier run). The old folder stays until the new one has
    taken its place in one rename; a failure, an interrupt or a crash leaves the old set or the new one.
    Text is written as UTF-8 without newline translation. Raises :class:`~jaxvpp.files.OutputError` (an
    :class:`InputError` and an :class:`OSError`) naming ``out_dir`` and ``option`` if it cannot be written.
    """
    write_folder(out_dir, files, owned=owned, option=option)


def schedules_frame(
    battery_ids: Sequence[str],
    charge: np.ndarray,
    discharge: np.ndarray,
    soc: np.ndarray,
    step_labels: Sequence[str],
) -> pd.DataFrame:
    """The long-format schedule table, one row per (battery, step), battery-major.

    Columns ``battery_id, step, charge_mw, discharge_mw, net_mw, soc_mwh``; ``charge``, ``discharge`` (MW) and
    ``soc`` (MWh, the energy e_t after step t) have shape ``(N, T)``; ``net_mw = discharge - charge``.
    """
    c, d, e = (np.asarray(a, dtype=np.float64) for a in (charge, discharge, soc))
    n, t = len(battery_ids), len(step_labels)
    for nm, a in (("charge", c), ("discharge", d), ("soc", e)):
        if a.shape != (n, t):
            raise ValueError(f"{nm} has shape {a.shape}, expected (num_batteries, num_steps) = ({n}, {t})")
    return pd.DataFrame(
        {
            "battery_id": np.repeat(np.asarray([str(b) for b in battery_ids], dtype=object), t),
            "step": np.tile(np.asarray([str(s) for s in step_labels], dtype=object), n),
            "charge_mw": c.ravel(),
            "discharge_mw": d.ravel(),
            "net_mw": (d - c).ravel(),
            "soc_mwh": e.ravel(),
        },
        columns=list(SCHEDULE_COLUMNS),
    )


def read_schedules(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``schedules.csv`` back (ids and steps as strings, numbers as float64, exact round trip)."""
    file = str(path)
    if not Path(path).exists():
        raise InputError("file not found", file=file)
    try:
        frame = pd.read_csv(path, dtype={"battery_id": str, "step": str}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError("the file is empty (no header line)", file=file) from None
    _require_columns(list(frame.columns), SCHEDULE_COLUMNS, file)
    for col in SCHEDULE_COLUMNS[2:]:
        num = pd.to_numeric(frame[col], errors="coerce")
        bad = np.flatnonzero(num.isna().to_numpy())
        if bad.size:
            raise InputError(f"not a number: {frame[col].iloc[bad[0]]!r}", file=file, row=int(bad[0]) + 2, column=col)
        frame[col] = num.astype(np.float64)
    return frame[list(SCHEDULE_COLUMNS)]


def schedules_arrays(frame: pd.DataFrame) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`schedules_frame`: ``(battery_ids, step_labels, charge, discharge, soc)``, arrays ``(N, T)``."""
    ids = list(dict.fromkeys(frame["battery_id"]))
    steps = list(dict.fromkeys(frame["step"]))
    n, t = len(ids), len(steps)
    if len(frame) != n * t:
        raise ValueError(f"schedule has {len(frame)} rows, expected {n} batteries x {t} steps")
    shape = (n, t)
    return (
        ids,
        steps,
        frame["charge_mw"].to_numpy().reshape(shape),
        frame["discharge_mw"].to_numpy().reshape(shape),
        frame["soc_mwh"].to_numpy().reshape(shape),
    )


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) and x > 0 else repr(float(x))


def fleet_csv(battery_ids: Sequence[str], fleet: Fleet) -> str:
    """``fleet.csv`` text for a fleet (all columns, exact float repr; no ramp limit written as ``inf``)."""
    arrays = {c: np.atleast_1d(np.asarray(getattr(fleet, c), dtype=np.float64)) for c in FLEET_COLUMNS}
    lines = [",".join(("battery_id",) + FLEET_COLUMNS)]
    for i, bid in enumerate(battery_ids):
        lines.append(",".join([_csv_cell(str(bid))] + [_fmt(arrays[c][i]) for c in FLEET_COLUMNS]))
    return "\n".join(lines) + "\n"


def scenarios_csv(step_labels: Sequence[str], market: Market, scenario_ids: Sequence[str] | None = None) -> str:
    """``scenarios.csv`` text for a market (exact float repr)."""
    prices = np.asarray(market.prices, dtype=np.float64)
    w = np.asarray(market.probabilities, dtype=np.float64)
    ids = scenario_ids if scenario_ids is not None else [f"s{k + 1}" for k in range(len(w))]
    lines = [",".join(["scenario", "probability"] + [_csv_cell(str(s)) for s in step_labels])]
    for k in range(len(w)):
        lines.append(",".join([_csv_cell(str(ids[k])), _fmt(w[k])] + [_fmt(x) for x in prices[k]]))
    return "\n".join(lines) + "\n"


def target_csv(step_labels: Sequence[str], target_mw: np.ndarray) -> str:
    """``target.csv`` text (``step, target_mw``)."""
    lines = ["step,target_mw"] + [f"{_csv_cell(str(s))},{_fmt(v)}" for s, v in zip(step_labels, np.asarray(target_mw))]
    return "\n".join(lines) + "\n"


def _csv_cell(s: str) -> str:
    if any(ch in s for ch in ',"\n\r') or s != s.strip():
        return '"' + s.replace('"', '""') + '"'
    return s


# ------------------------------------------------------------------------------------- coordination outputs
#: Columns of ``convergence.csv`` after ``iteration`` (ADMM writes its penalty ``rho`` in place of ``step``).
CONVERGENCE_COLUMNS: tuple[str, ...] = (
    "primal_residual",
    "dual_residual",
    "coupling_residual_mw",
    "gap",
    "mu",
    "step",
    "objective_eur",
    "elapsed_s",
)


def coordination_summary(result) -> dict:
    """The coordination part of ``summary.json`` from a :class:`~jaxvpp.coordination.CoordinationResult`.

    Keys: ``objective_eur, expected_revenue_eur, cvar_eur, converged, status, iterations,
    coupling_residual_mw, coupling_price_eur_per_mwh, accuracy``. A non-finite coupling price turns the status into
    ``"numerical_error"`` (also on ``result``), so that callers refuse to write such a result.
    """
    sol = result.solution
    price = np.asarray(result.coupling_price_eur_per_mwh)
    if not np.all(np.isfinite(price)):
        result.status = "numerical_error"
    return dict(
        objective_eur=result.objective_eur,
        expected_revenue_eur=float(np.sum(np.asarray(sol.expected_revenue_eur))),
        cvar_eur=float(np.sum(np.asarray(sol.cvar_eur))),
        converged=bool(result.converged and result.status == "converged"),
        status=result.status,
        iterations=result.iterations,
        coupling_residual_mw=result.coupling_residual_mw,
        coupling_price_eur_per_mwh=[float(v) for v in price],
        # ALADIN: the largest relative residual reached (<= tol, or up to 1e-6 at the acceptable level)
        accuracy=None if not np.isfinite(result.accuracy) else float(result.accuracy),
    )


def convergence_frame(result) -> pd.DataFrame | None:
    """``convergence.csv`` as a table, one row per iteration (``None`` without a history, e.g. centralized)."""
    if not result.history:
        return None
    hist = {k: np.asarray(v) for k, v in result.history.items() if not k.startswith("_")}
    n = result.iterations
    frame = pd.DataFrame(
        {"iteration": np.arange(1, n + 1), **{c: hist[c][:n] for c in CONVERGENCE_COLUMNS if c in hist}}
    )
    if result.method == "admm":
        frame = frame.rename(columns={"step": "rho"})
    return frame
