"""Day-ahead probabilistic price forecasts: quantile regression, conformal calibration, rolling backtest.

For each step of the next delivery day the forecaster gives the price quantiles at ``levels`` (default
0.05, 0.10, ..., 0.95; EUR/MWh). Models (scikit-learn), one per level:

* ``gbm``: gradient-boosted trees with the quantile (pinball) loss (``HistGradientBoostingRegressor``);
* ``qra``: linear quantile regression on the same features (``QuantileRegressor``, HiGHS), fitted on a
  recent window (quantile regression averaging in its simplest form).

Features: calendar (time of day, weekday, season), lagged prices at the same wall-clock slot (yesterday,
two days ago and, with five weeks of history or more, a week ago and the 7-day slot mean), yesterday's
daily statistics, and every exogenous column: its value at the step (a day-ahead forecast, known before
gate closure), its value yesterday and its daily mean.

Calibration (conformalised quantile regression, one-sided per level): the model is trained on data that
ends ``calibration_days`` before the refit date; before each forecast every level is shifted by the
empirical ``tau``-quantile of its out-of-sample residuals ``y - q_tau`` over the last ``calibration_days``
days. In-sample boosted quantiles are too narrow; the shift restores coverage. Quantiles are then sorted
per step (the rearrangement of Chernozhukov et al.), so they never cross.

The issue time (``origin``) of the forecast for day ``d`` is 12:00 local time on day ``d - 1`` (the
day-ahead gate closure); all prices of day ``d - 1`` are known then, nothing later is used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from jaxvpp.errors import InputError
from jaxvpp.files import write_folder
from jaxvpp.market.ingress import (
    MARKET_TZ,
    PRICE,
    TIMESTAMP,
    delivery_day_steps,
    format_timestamps,
    harmonise_resolution,
    local_day,
    local_slot,
    numeric_column,
    parse_timestamps,
)

#: Default quantile levels 0.05, 0.10, ..., 0.95.
LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: Days of history below which the weekly lags are dropped.
WEEKLY_MIN_DAYS = 35
MIN_TRAIN_DAYS = 7


def level_column(level: float) -> str:
    """Column name of a quantile level, e.g. ``q0.05``."""
    return f"q{level:.2f}"


def level_columns(levels: tuple[float, ...] | list[float]) -> list[str]:
    """Column names of the quantile levels."""
    return [level_column(lv) for lv in levels]


@dataclass(frozen=True)
class ForecastConfig:
    """Forecaster settings.

    Attributes:
        model: ``"gbm"`` (gradient-boosted quantiles) or ``"qra"`` (linear quantile regression).
        levels: quantile levels in (0, 1), increasing.
        backtest_days: days of the rolling-origin backtest at the end of the file.
        calibration_days: out-of-sample days before each origin used for the conformal shifts.
        refit_every_days: days between model refits in the backtest (calibration is redone every day).
        train_days: training window (days) before the calibration window; ``None`` = all (gbm), 56 (qra).
        calibrate: apply the conformal shifts.
        boosting_iterations: boosting iterations per quantile level (gbm).
        learning_rate, max_leaf_nodes, min_samples_leaf, max_bins: further gradient-boosting settings.
        baseline_window_days: days of residuals behind the seasonal-naive baseline's quantiles.
        seed: random seed of the boosted trees.
        tz: market time zone that defines delivery days.
    """

    model: str = "gbm"
    levels: tuple[float, ...] = LEVELS
    backtest_days: int = 28
    calibration_days: int = 28
    refit_every_days: int = 7
    train_days: int | None = None
    calibrate: bool = True
    boosting_iterations: int = 100
    learning_rate: float = 0.1
    max_leaf_nodes: int = 12
    min_samples_leaf: int = 40
    max_bins: int = 128
    baseline_window_days: int = 28
    seed: int = 0
    tz: str = MARKET_TZ

    def __post_init__(self) -> None:
        if self.model not in ("gbm", "qra"):
            raise InputError(f"model must be 'gbm' or 'qra', got {self.model!r}", column="--model")
        lv = np.asarray(self.levels, dtype=float)
        if lv.size < 2 or np.any(lv <= 0) or np.any(lv >= 1) or np.any(np.diff(lv) <= 0):
            raise InputError("levels must be increasing and inside (0, 1)", column="--levels")
        if self.backtest_days < 1:
            raise InputError(f"--backtest-days must be at least 1, got {self.backtest_days}", column="--backtest-days")
        if self.calibration_days < 1:
            raise InputError(
                f"--calibration-days must be at least 1, got {self.calibration_days}", column="--calibration-days"
            )
        if self.refit_every_days < 1:
            raise InputError(f"--refit-every must be at least 1, got {self.refit_every_days}", column="--refit-every")
        if self.boosting_iterations < 1:
            raise InputError(f"--max-iter must be at least 1, got {self.boosting_iterations}", column="--max-iter")


# ----------------------------------------------------------------------------------------------------
# Quantile functions, CDFs and scores
# ----------------------------------------------------------------------------------------------------


def _tail_scales(levels: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exponential-tail scales (EUR/MWh) below the lowest and above the highest level, from the outer slopes."""
    lo = (q[..., 1] - q[..., 0]) / math.log(levels[1] / levels[0])
    hi = (q[..., -1] - q[..., -2]) / math.log((1 - levels[-2]) / (1 - levels[-1]))
    return np.maximum(lo, 0.0), np.maximum(hi, 0.0)


def quantile_function(levels: np.ndarray | tuple, q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse CDF at probabilities ``u`` from quantiles ``q`` at ``levels`` (monotone: linear inside, exponential tails).

    ``q`` has shape ``(..., L)`` (sorted along the last axis), ``u`` has shape ``(..., M)`` in (0, 1); returns
    ``(..., M)``. Below the lowest level ``Q(u) = q_1 + b_lo log(u / tau_1)``, above the highest
    ``Q(u) = q_L - b_hi log((1 - u) / (1 - tau_L))``, with ``b`` matching the outermost slopes.
    """
    lv = np.asarray(levels, dtype=float)
    q = np.asarray(q, dtype=float)
    u = np.clip(np.asarray(u, dtype=float), 1e-12, 1 - 1e-12)
    j = np.clip(np.searchsorted(lv, u, side="right") - 1, 0, lv.size - 2)
    ql = np.take_along_axis(q, j, axis=-1)
    qr = np.take_along_axis(q, j + 1, axis=-1)
    w = (u - lv[j]) / (lv[j + 1] - lv[j])
    out = ql + w * (qr - ql)
    b_lo, b_hi = _tail_scales(lv, q)
    below = u < lv[0]
    above = u > lv[-1]
    out = np.where(below, q[..., :1] + b_lo[..., None] * np.log(u / lv[0]), out)
    out = np.where(above, q[..., -1:] - b_hi[..., None] * np.log((1 - u) / (1 - lv[-1])), out)
    return out


def cdf_from_quantiles(levels: np.ndarray | tuple, q: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The CDF value (PIT) of ``y`` (shape ``(...)``) under the distribution of :func:`quantile_function` (``q``: ``(..., L)``)."""
    lv = np.asarray(levels, dtype=float)
    q = np.asarray(q, dtype=float)
    y = np.asarray(y, dtype=float)
    L = lv.size
    k = np.sum(q <= y[..., None], axis=-1)  # number of quantiles at or below y
    j = np.clip(k - 1, 0, L - 2)
    ql = np.take_along_axis(q, j[..., None], axis=-1)[..., 0]
    qr = np.take_along_axis(q, (j + 1)[..., None], axis=-1)[..., 0]
    gap = qr - ql
    w = np.where(gap > 0, (y - ql) / np.where(gap > 0, gap, 1.0), 0.5)
    u = lv[j] + np.clip(w, 0, 1) * (lv[j + 1] - lv[j])
    b_lo, b_hi = _tail_scales(lv, q)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u_lo = np.where(b_lo > 0, lv[0] * np.exp((y - q[..., 0]) / np.where(b_lo > 0, b_lo, 1.0)), 0.0)
        u_hi = np.where(b_hi > 0, 1 - (1 - lv[-1]) * np.exp(-(y - q[..., -1]) / np.where(b_hi > 0, b_hi, 1.0)), 1.0)
    u = np.where(y < q[..., 0], u_lo, u)
    u = np.where(y > q[..., -1], u_hi, u)
    return np.clip(u, 0.0, 1.0)


def pinball(y: np.ndarray, q: np.ndarray, levels: np.ndarray | tuple) -> np.ndarray:
    """Pinball (quantile) loss of each step and level, shape ``(n, L)`` (EUR/MWh)."""
    lv = np.asarray(levels, dtype=float)
    d = np.asarray(y, dtype=float)[:, None] - np.asarray(q, dtype=float)
    return np.maximum(lv * d, (lv - 1) * d)


def crps_from_quantiles(levels: np.ndarray | tuple, q: np.ndarray, y: np.ndarray, grid: int = 400) -> np.ndarray:
    """CRPS (EUR/MWh) of each step: ``2 * integral_0^1 pinball_u(y, Q(u)) du`` on a midpoint grid of ``grid`` levels,
    with ``Q`` the interpolated quantile function (exponential tails)."""
    u = (np.arange(grid) + 0.5) / grid
    q = np.asarray(q, dtype=float)
    qq = quantile_function(levels, q, np.broadcast_to(u, q.shape[:-1] + (grid,)))
    return 2.0 * pinball(np.asarray(y, dtype=float), qq, u).mean(axis=-1)


def score(y: np.ndarray, q: np.ndarray, levels: tuple[float, ...]) -> dict[str, float]:
    """Mean pinball loss, 90 % interval coverage and width, CRPS (EUR/MWh) and per-level coverage of a backtest."""
    y = np.asarray(y, dtype=float)
    q = np.asarray(q, dtype=float)
    lv = list(levels)
    out = {"pinball_loss": float(pinball(y, q, levels).mean()), "crps": float(crps_from_quantiles(levels, q, y).mean())}
    if 0.05 in [round(x, 6) for x in lv] and 0.95 in [round(x, 6) for x in lv]:
        lo, hi = q[:, _index(lv, 0.05)], q[:, _index(lv, 0.95)]
        out["coverage_90"] = float(np.mean((y >= lo) & (y <= hi)))
        out["width_90"] = float(np.mean(hi - lo))
    out["level_coverage"] = {level_column(t): float(np.mean(y <= q[:, i])) for i, t in enumerate(lv)}
    return out


def _index(levels: list[float], value: float) -> int:
    return int(np.argmin(np.abs(np.asarray(levels) - value)))


# ----------------------------------------------------------------------------------------------------
# Data preparation and features
# ----------------------------------------------------------------------------------------------------


@dataclass
class PreparedSeries:
    """A price series arranged by local delivery day and wall-clock slot."""

    frame: (
        pd.DataFrame
    )  #: rows of history and forecast day: timestamp, price (NaN on the forecast day), exog, day, slot
    exog: list[str]  #: exogenous column names
    resolution: int  #: step length (minutes)
    history_days: pd.DatetimeIndex  #: local days with prices (complete days)
    forecast_day: pd.Timestamp  #: the next delivery day (local, naive midnight)
    tables: dict[str, pd.DataFrame]  #: per column, a (day x slot) table over every day up to the forecast day
    tz: str = MARKET_TZ  #: market time zone of the delivery days
    notes: list[str] = field(default_factory=list)


def _table(frame: pd.DataFrame, column: str, days: pd.DatetimeIndex, slots: np.ndarray) -> pd.DataFrame:
    t = frame.pivot_table(index="day", columns="slot", values=column, aggfunc="mean")
    t = t.reindex(index=days, columns=slots)
    have = t.notna().any(axis=1)
    filled = t.ffill(axis=1).bfill(axis=1)  # the missing spring-DST hour takes its neighbour's value
    return filled.where(have, np.nan)


def prepare_series(df: pd.DataFrame, *, tz: str = MARKET_TZ) -> PreparedSeries:
    """Arrange a validated price frame (trailing rows with empty price = exogenous forecasts for the next day)."""
    notes: list[str] = []
    exog = [c for c in df.columns if c not in (TIMESTAMP, PRICE)]
    hist = df[df[PRICE].notna()].reset_index(drop=True)
    future = df[df[PRICE].isna()].reset_index(drop=True)
    hist, res = harmonise_resolution(hist)
    if len(future):
        future, _ = harmonise_resolution(future)
    hist = hist.assign(day=local_day(hist[TIMESTAMP], tz), slot=local_slot(hist[TIMESTAMP], tz))
    # the last day must be complete; otherwise drop it (it becomes the day to forecast)
    last = hist["day"].iloc[-1]
    expected = len(delivery_day_steps(last, res, tz))
    if int((hist["day"] == last).sum()) < expected:
        notes.append(
            f"the last day {last:%Y-%m-%d} is incomplete ({int((hist['day'] == last).sum())} of {expected} "
            "steps); it is dropped and forecast instead"
        )
        hist = hist[hist["day"] != last].reset_index(drop=True)
        if len(hist) == 0:
            raise InputError("no complete delivery day in the file", column=TIMESTAMP)
    fday = hist["day"].iloc[-1] + pd.Timedelta(days=1)
    steps = delivery_day_steps(fday, res, tz)
    fut = pd.DataFrame({TIMESTAMP: steps.as_unit("ns")})
    if exog:
        have = future.set_index(TIMESTAMP)[exog] if len(future) else pd.DataFrame(columns=exog)
        vals = have.reindex(pd.DatetimeIndex(steps).as_unit("ns")) if len(have) else None
        if vals is None or vals.isna().any().any():
            notes.append(
                f"no exogenous values ({', '.join(exog)}) for every step of {fday:%Y-%m-%d}: "
                "yesterday's values at the same time are used (persistence)"
            )
        for c in exog:
            fut[c] = np.nan if vals is None else vals[c].to_numpy()
    fut[PRICE] = np.nan
    fut = fut.assign(day=local_day(fut[TIMESTAMP], tz), slot=local_slot(fut[TIMESTAMP], tz))
    frame = pd.concat([hist, fut[hist.columns]], ignore_index=True)
    days_all = pd.date_range(hist["day"].iloc[0], fday, freq="D")
    slots = np.arange(0, 24 * 60, res)
    tables = {PRICE: _table(frame, PRICE, days_all, slots)}
    for c in exog:
        tables[c] = _table(frame, c, days_all, slots)
        if frame.loc[frame["day"] == fday, c].isna().any():  # persistence for the missing forecast-day values
            prev = tables[c].loc[fday - pd.Timedelta(days=1)]
            tables[c].loc[fday] = tables[c].loc[fday].fillna(prev)
            m = (frame["day"] == fday) & frame[c].isna()
            frame.loc[m, c] = prev.reindex(frame.loc[m, "slot"]).to_numpy()
    history_days = pd.DatetimeIndex(hist["day"].unique())
    return PreparedSeries(frame, exog, res, history_days, fday, tables, tz, notes)


def _lookup(table: pd.DataFrame, day: pd.DatetimeIndex, slot: np.ndarray, lag: int) -> np.ndarray:
    """Values of ``table`` at (``day - lag`` days, ``slot``) (NaN where absent)."""
    arr = table.to_numpy()
    di = table.index.get_indexer(day) - lag
    si = table.columns.get_indexer(slot)
    ok = (di >= 0) & (si >= 0) & (table.index.get_indexer(day) >= 0)
    out = np.full(len(day), np.nan)
    out[ok] = arr[di[ok], si[ok]]
    return out


def _daily(table: pd.DataFrame, day: pd.DatetimeIndex, lag: int, how: str) -> np.ndarray:
    """Daily statistic ``how`` (mean, min, max, std) of ``table`` on day ``day - lag``."""
    stat = getattr(table, how)(axis=1)
    return np.asarray(stat.reindex(day - pd.Timedelta(days=lag)), dtype=float)


def build_features(series: PreparedSeries, rows: pd.DataFrame, *, weekly: bool) -> pd.DataFrame:
    """The feature matrix of ``rows`` (with ``timestamp``, ``day``, ``slot`` and exogenous columns)."""
    day = pd.DatetimeIndex(rows["day"])
    slot = rows["slot"].to_numpy()
    loc = pd.DatetimeIndex(rows[TIMESTAMP]).tz_convert(series.tz)
    frac = slot / 1440.0
    doy = np.asarray(loc.day_of_year, dtype=float)
    dow = np.asarray(day.day_of_week, dtype=float)
    P = series.tables[PRICE]
    f: dict[str, np.ndarray] = {
        "hour": slot / 60.0,
        "sin_day": np.sin(2 * np.pi * frac),
        "cos_day": np.cos(2 * np.pi * frac),
        "sin_day2": np.sin(4 * np.pi * frac),
        "cos_day2": np.cos(4 * np.pi * frac),
        "dow": dow,
        "saturday": (dow == 5).astype(float),
        "sunday": (dow == 6).astype(float),
        "sin_year": np.sin(2 * np.pi * doy / 365.25),
        "cos_year": np.cos(2 * np.pi * doy / 365.25),
        "lag1": _lookup(P, day, slot, 1),
        "lag2": _lookup(P, day, slot, 2),
        "d1_mean": _daily(P, day, 1, "mean"),
        "d1_min": _daily(P, day, 1, "min"),
        "d1_max": _daily(P, day, 1, "max"),
        "d1_std": _daily(P, day, 1, "std"),
    }
    if weekly:
        f["lag7"] = _lookup(P, day, slot, 7)
        f["slot_mean7"] = np.mean([_lookup(P, day, slot, k) for k in range(1, 8)], axis=0)
        f["d7_mean"] = _daily(P, day, 7, "mean")
    for c in series.exog:
        X = series.tables[c]
        f[c] = rows[c].to_numpy(dtype=float)
        f[f"{c}_lag1"] = _lookup(X, day, slot, 1)
        f[f"{c}_daymean"] = _daily(X, day, 0, "mean")
        f[f"{c}_d1_mean"] = _daily(X, day, 1, "mean")
    return pd.DataFrame(f, index=rows.index)


# ----------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------


def fit_quantile_models(X: np.ndarray, y: np.ndarray, cfg: ForecastConfig) -> list:
    """One fitted scikit-learn model per level of ``cfg.levels``.

    Fits run single-threaded: on these small problems OpenMP threads cost more than they save (and their
    spin-waiting slows a busy machine down badly). scikit-learn is imported first so that its OpenMP
    runtime is loaded when the limit is set.
    """
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime before the limit)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return [_fit_one(X, y, float(lv), cfg) for lv in cfg.levels]


def _fit_one(X: np.ndarray, y: np.ndarray, lv: float, cfg: ForecastConfig):
    """Fit the model of one level ``lv``."""
    if cfg.model == "gbm":
        from sklearn.ensemble import HistGradientBoostingRegressor

        m = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=lv,
            max_iter=cfg.boosting_iterations,
            learning_rate=cfg.learning_rate,
            max_leaf_nodes=cfg.max_leaf_nodes,
            min_samples_leaf=cfg.min_samples_leaf,
            max_bins=cfg.max_bins,
            early_stopping=False,
            random_state=cfg.seed,
        )
    else:
        from sklearn.linear_model import QuantileRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        m = make_pipeline(StandardScaler(), QuantileRegressor(quantile=lv, alpha=1e-4, solver="highs"))
    return m.fit(X, y)


def predict_quantiles(models: list, X: np.ndarray) -> np.ndarray:
    """Raw (uncalibrated, unsorted) predictions, shape ``(n, L)``."""
    from threadpoolctl import threadpool_limits

    if len(X) == 0:
        return np.zeros((0, len(models)))
    with threadpool_limits(limits=1):
        return np.column_stack([m.predict(X) for m in models])


def conformal_shifts(pred: np.ndarray, y: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Per-level shifts: the ``tau``-quantile of the out-of-sample residuals ``y - q_tau`` (conservative order statistic)."""
    if len(y) == 0:
        return np.zeros(len(levels))
    r = np.asarray(y, dtype=float)[:, None] - pred
    n = len(y)
    out = np.empty(len(levels))
    for i, t in enumerate(levels):
        rs = np.sort(r[:, i])
        if t >= 0.5:  # ceil((n + 1) tau)-th smallest: P(y <= q + s) >= tau
            k = min(n, math.ceil((n + 1) * t))
        else:  # floor((n + 1) tau)-th smallest: P(y < q + s) <= tau
            k = max(1, math.floor((n + 1) * t))
        out[i] = rs[k - 1]
    return out


def rearrange(q: np.ndarray) -> np.ndarray:
    """Sort quantiles per step so that they never cross."""
    return np.sort(np.asarray(q, dtype=float), axis=-1)


# ----------------------------------------------------------------------------------------------------
# Plan, backtest and the next-day forecast
# ----------------------------------------------------------------------------------------------------


@dataclass
class ForecastResult:
    """Everything ``jaxvpp forecast`` writes."""

    quantiles: pd.DataFrame  #: timestamp + one column per level, one row per step of the forecast day
    backtest: pd.DataFrame  #: timestamp, origin, realised + levels (calibrated model)
    baseline: pd.DataFrame  #: the same for the seasonal-naive baseline
    metrics: dict
    notes: list[str]


def _plan(series: PreparedSeries, cfg: ForecastConfig) -> tuple[ForecastConfig, bool, list[str]]:
    """Shrink lags, calibration and backtest windows to what the history allows (with notes)."""
    notes: list[str] = []
    n = len(series.history_days)
    weekly = n >= WEEKLY_MIN_DAYS
    if not weekly:
        notes.append(
            f"only {n} days of history (< {WEEKLY_MIN_DAYS}, about five weeks): the weekly lags are "
            "dropped and the baseline uses the daily lag"
        )
    lag_days = 7 if weekly else 2
    avail = n - lag_days
    if avail < MIN_TRAIN_DAYS + 2:
        raise InputError(
            f"the price file holds {n} complete days; at least {lag_days + MIN_TRAIN_DAYS + 2} are needed",
            column=TIMESTAMP,
        )
    cal = min(cfg.calibration_days, max(1, avail // 4))
    bt = min(cfg.backtest_days, avail - cal - MIN_TRAIN_DAYS)
    if cal < cfg.calibration_days:
        notes.append(f"calibration window shortened to {cal} days")
    if bt < cfg.backtest_days:
        notes.append(f"backtest shortened to {bt} days")
    return replace(cfg, calibration_days=cal, backtest_days=bt), weekly, notes


class _Forecaster:
    """Fits, calibrates and predicts one target day at a time without look-ahead."""

    def __init__(self, series: PreparedSeries, cfg: ForecastConfig, weekly: bool) -> None:
        self.s, self.cfg = series, cfg
        fr = series.frame
        self.X = build_features(series, fr, weekly=weekly)
        self.y = fr[PRICE].to_numpy(dtype=float)
        self.day = pd.DatetimeIndex(fr["day"])
        self.ok = self.X.notna().all(axis=1).to_numpy()
        self.models: list | None = None
        self.raw = np.full((len(fr), len(cfg.levels)), np.nan)

    def refit(self, first_day: pd.Timestamp) -> None:
        """Train on target days before ``first_day - calibration_days``; predict every later row (out of sample)."""
        cfg = self.cfg
        fit_end = first_day - pd.Timedelta(days=cfg.calibration_days)
        window = cfg.train_days if cfg.train_days is not None else (56 if cfg.model == "qra" else None)
        m = self.ok & (self.day < fit_end) & np.isfinite(self.y)
        if window is not None:
            m &= self.day >= fit_end - pd.Timedelta(days=window)
        if m.sum() < 10:
            raise InputError("too little training data after the lags", column=TIMESTAMP)
        self.models = fit_quantile_models(self.X.to_numpy()[m], self.y[m], cfg)
        later = self.ok & (self.day >= fit_end)
        self.raw[:] = np.nan
        self.raw[later] = predict_quantiles(self.models, self.X.to_numpy()[later])

    def forecast(self, d: pd.Timestamp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of day ``d``, their calibrated sorted quantiles, and the raw (sorted) ones."""
        rows = np.flatnonzero(self.day == d)
        raw = self.raw[rows]
        if np.isnan(raw).any():
            raise InputError(f"features for {d:%Y-%m-%d} are incomplete (missing lagged days)", column=TIMESTAMP)
        shift = np.zeros(len(self.cfg.levels))
        if self.cfg.calibrate:
            cal = (self.day >= d - pd.Timedelta(days=self.cfg.calibration_days)) & (self.day < d)
            cal &= ~np.isnan(self.raw[:, 0]) & np.isfinite(self.y)
            shift = conformal_shifts(self.raw[cal], self.y[cal], self.cfg.levels)
        return rows, rearrange(raw + shift), rearrange(raw)


def _origin(d: pd.Timestamp, tz: str) -> pd.Timestamp:
    """Issue time of the forecast of local day ``d``: 12:00 local on the day before, in UTC."""
    return (d - pd.Timedelta(days=1) + pd.Timedelta(hours=12)).tz_localize(tz).tz_convert("UTC")


def seasonal_naive(
    series: PreparedSeries, days: list[pd.Timestamp], lag: int, window: int, levels: tuple[float, ...]
) -> dict[pd.Timestamp, np.ndarray]:
    """Seasonal-naive quantiles: the price ``lag`` days earlier plus the empirical quantiles of the lag-``lag``
    differences over the ``window`` days before the target day (pooled over slots)."""
    P = series.tables[PRICE]
    fr = series.frame
    out = {}
    for d in days:
        rows = fr.index[fr["day"] == d]
        point = _lookup(P, pd.DatetimeIndex(fr.loc[rows, "day"]), fr.loc[rows, "slot"].to_numpy(), lag)
        past = pd.date_range(d - pd.Timedelta(days=window), d - pd.Timedelta(days=1), freq="D")
        cur = P.reindex(past).to_numpy()
        prev = P.reindex(past - pd.Timedelta(days=lag)).to_numpy()
        res = (cur - prev).ravel()
        res = res[np.isfinite(res)]
        if res.size == 0 or np.isnan(point).any():
            out[d] = np.full((len(rows), len(levels)), np.nan)
            continue
        out[d] = point[:, None] + np.quantile(res, levels)[None, :]
    return out


def _choose_baseline_lag(series: PreparedSeries, first_test: pd.Timestamp, weekly: bool, cfg: ForecastConfig) -> int:
    """The seasonal lag (1 or 7 days) with the lower pinball loss on the days before the backtest."""
    if not weekly:
        return 1
    hd = [d for d in series.history_days if d < first_test]
    eval_days = hd[-min(len(hd) - 14, cfg.baseline_window_days) :] if len(hd) > 21 else []
    if not eval_days:
        return 1
    best, best_loss = 1, np.inf
    fr = series.frame
    for lag in (1, 7):
        fc = seasonal_naive(
            series, eval_days, lag, min(cfg.baseline_window_days, 7 if len(hd) < 49 else 28), cfg.levels
        )
        losses = []
        for d in eval_days:
            y = fr.loc[fr["day"] == d, PRICE].to_numpy()
            if np.isfinite(fc[d]).all():
                losses.append(pinball(y, fc[d], cfg.levels).mean())
        if losses and np.mean(losses) < best_loss:
            best, best_loss = lag, float(np.mean(losses))
    return best


def run_forecast(df: pd.DataFrame, cfg: ForecastConfig = ForecastConfig()) -> ForecastResult:
    """Rolling-origin backtest over the last ``cfg.backtest_days`` days, then the forecast of the next delivery day."""
    series = prepare_series(df, tz=cfg.tz)
    cfg, weekly, notes = _plan(series, cfg)
    notes = series.notes + notes
    fc = _Forecaster(series, cfg, weekly)
    test_days = list(series.history_days[-cfg.backtest_days :])
    fr = series.frame
    cols = level_columns(cfg.levels)
    parts, raw_parts = [], []
    for i, d in enumerate(test_days):
        if i % cfg.refit_every_days == 0:
            fc.refit(d)
        rows, q, raw = fc.forecast(d)
        parts.append((rows, q))
        raw_parts.append(raw)

    def frame_of(parts_: list, name: str | None = None) -> pd.DataFrame:
        rows = np.concatenate([r for r, _ in parts_])
        q = np.vstack([x for _, x in parts_])
        out = pd.DataFrame({TIMESTAMP: fr.loc[rows, TIMESTAMP].to_numpy()})
        out["origin"] = [_origin(d, cfg.tz) for d in fr.loc[rows, "day"]]
        out["realised"] = fr.loc[rows, PRICE].to_numpy()
        out[cols] = q
        return out

    backtest = frame_of(parts)
    lag = _choose_baseline_lag(series, test_days[0], weekly, cfg)
    base = seasonal_naive(series, test_days, lag, cfg.baseline_window_days, cfg.levels)
    baseline = frame_of([(np.flatnonzero(fr["day"] == d), base[d]) for d in test_days])
    ok = np.isfinite(baseline[cols].to_numpy()).all(axis=1)

    # the next delivery day
    fc.refit(series.forecast_day)
    rows, q, _ = fc.forecast(series.forecast_day)
    quantiles = pd.DataFrame({TIMESTAMP: fr.loc[rows, TIMESTAMP].to_numpy()})
    quantiles[cols] = q

    y = backtest["realised"].to_numpy()
    m_model = score(y, backtest[cols].to_numpy(), cfg.levels)
    m_raw = score(y, np.vstack(raw_parts), cfg.levels)
    m_base = score(y[ok], baseline.loc[ok, cols].to_numpy(), cfg.levels)
    metrics = {
        "pinball_loss": m_model["pinball_loss"],
        "baseline_pinball_loss": m_base["pinball_loss"],
        "pinball_improvement": 1.0 - m_model["pinball_loss"] / m_base["pinball_loss"],
        "coverage_90": m_model.get("coverage_90"),
        "width_90": m_model.get("width_90"),
        "crps": m_model["crps"],
        "baseline_coverage_90": m_base.get("coverage_90"),
        "baseline_width_90": m_base.get("width_90"),
        "baseline_crps": m_base["crps"],
        "uncalibrated_pinball_loss": m_raw["pinball_loss"],
        "uncalibrated_coverage_90": m_raw.get("coverage_90"),
        "level_coverage": m_model["level_coverage"],
        "backtest_days": len(test_days),
        "backtest_steps": int(len(backtest)),
        "levels": list(cfg.levels),
        "model": cfg.model,
        "calibrated": cfg.calibrate,
        "calibration_days": cfg.calibration_days,
        "refit_every_days": cfg.refit_every_days,
        "baseline_lag_days": lag,
        "weekly_lags": weekly,
        "history_days": len(series.history_days),
        "resolution_minutes": series.resolution,
        "forecast_day": f"{series.forecast_day:%Y-%m-%d}",
        "forecast_steps": int(len(quantiles)),
        "exogenous_columns": series.exog,
        "units": "EUR/MWh",
        "notes": notes,
    }
    return ForecastResult(quantiles, backtest, baseline, metrics, notes)


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------


def quantile_frame_text(frame: pd.DataFrame, cols: list[str]) -> str:
    """CSV text with UTC ISO 8601 timestamps (and origins) and the given columns."""
    out = frame.copy()
    out[TIMESTAMP] = format_timestamps(out[TIMESTAMP])
    if "origin" in out:
        out["origin"] = format_timestamps(out["origin"])
    return out[cols].to_csv(index=False, float_format="%.6g", lineterminator="\n")


def plot_risk_bands(result: ForecastResult, path: str | Path, tz: str = MARKET_TZ) -> None:
    """Fan chart: the backtest's quantile bands against realised prices, and the next day's forecast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result.metrics["levels"]
    fig, axes = plt.subplots(2, 1, figsize=(12, 7.5), gridspec_kw={"height_ratios": [1.4, 1]})
    pairs = [(0.05, 0.95), (0.10, 0.90), (0.25, 0.75)]
    shades = ["#c6dbef", "#9ecae1", "#6baed6"]

    def fan(ax, frame, realised: bool) -> None:
        t = pd.DatetimeIndex(frame[TIMESTAMP]).tz_convert(tz).tz_localize(None)
        for (lo, hi), c in zip(pairs, shades):
            if lo in levels and hi in levels:
                ax.fill_between(
                    t,
                    frame[level_column(lo)],
                    frame[level_column(hi)],
                    step="post",
                    color=c,
                    label=f"{int(lo * 100)}-{int(hi * 100)} % band",
                    lw=0,
                )
        if 0.5 in levels:
            ax.step(t, frame[level_column(0.5)], where="post", color="#08519c", lw=1.0, label="median")
        if realised:
            ax.step(t, frame["realised"], where="post", color="black", lw=0.8, label="realised")
        ax.set_ylabel("price (EUR/MWh)")
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)

    bt = result.backtest
    fan(axes[0], bt, True)
    m = result.metrics
    axes[0].set_title(
        f"Backtest, {m['backtest_days']} days ({m['model']}, calibrated={m['calibrated']}): "
        f"90 % coverage {m['coverage_90']:.2f}, pinball {m['pinball_loss']:.2f} vs baseline "
        f"{m['baseline_pinball_loss']:.2f} EUR/MWh",
        fontsize=10,
    )
    axes[0].set_xlabel(f"delivery time ({tz})")
    axes[0].legend(loc="upper left", fontsize=8, ncol=5)
    fan(axes[1], result.quantiles, False)
    axes[1].set_title(f"Forecast for {m['forecast_day']} ({m['forecast_steps']} steps)", fontsize=10)
    axes[1].set_xlabel(f"delivery time ({tz})")
    axes[1].legend(loc="upper left", fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: The files :func:`write_forecast` writes.
FORECAST_FILES = ("quantiles.csv", "backtest.csv", "baseline_backtest.csv", "forecast_metrics.json", "risk_bands.png")


def write_forecast(
    result: ForecastResult, out_dir: str | Path, tz: str = MARKET_TZ, *, option: str | None = None
) -> None:
    """Write :data:`FORECAST_FILES` into ``out_dir``, whole or not at all (:func:`jaxvpp.files.write_folder`)."""
    cols = level_columns(result.metrics["levels"])
    write_folder(
        out_dir,
        {
            "quantiles.csv": quantile_frame_text(result.quantiles, [TIMESTAMP] + cols),
            "backtest.csv": quantile_frame_text(result.backtest, [TIMESTAMP, "origin", "realised"] + cols),
            "baseline_backtest.csv": quantile_frame_text(result.baseline, [TIMESTAMP, "origin", "realised"] + cols),
            "forecast_metrics.json": json.dumps(result.metrics, indent=2) + "\n",
            "risk_bands.png": lambda p: plot_risk_bands(result, p, tz),
        },
        owned=FORECAST_FILES,
        option=option,
    )


def read_quantile_file(path: str | Path, *, require: tuple[str, ...] = ()) -> tuple[pd.DataFrame, tuple[float, ...]]:
    """Read ``quantiles.csv`` or ``backtest.csv``: timestamps (UTC), level columns ``qX.XX`` and ``require``d columns."""

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=str(path))
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV file: {exc}", file=str(path)) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    for c in (TIMESTAMP,) + require:
        if c not in raw.columns:
            raise InputError(f"missing column {c!r}", file=str(path), column=c)
    qcols = [c for c in raw.columns if c.startswith("q")]
    levels = []
    for c in qcols:
        try:
            levels.append(float(c[1:]))
        except ValueError:
            raise InputError(
                f"column {c!r} is not a quantile level (expected e.g. q0.05)", file=str(path), column=c
            ) from None
    if len(levels) < 2 or np.any(np.diff(levels) <= 0) or min(levels) <= 0 or max(levels) >= 1:
        raise InputError("need at least two quantile columns q<level> with increasing levels in (0, 1)", file=str(path))
    if len(raw) == 0:
        raise InputError("no data rows", file=str(path))
    out = pd.DataFrame({TIMESTAMP: parse_timestamps(raw[TIMESTAMP], file=str(path))})
    for c in require:
        if c == "origin":
            out[c] = parse_timestamps(raw[c], file=str(path), column=c)
        else:
            out[c] = numeric_column(raw[c], file=str(path), column=c)
    for c in qcols:
        out[c] = numeric_column(raw[c], file=str(path), column=c)
    q = out[qcols].to_numpy()
    bad = np.flatnonzero(np.any(np.diff(q, axis=1) < 0, axis=1))
    if bad.size:
        raise InputError("quantiles cross (must be non-decreasing across levels)", file=str(path), row=int(bad[0]) + 2)
    return out, tuple(levels)
