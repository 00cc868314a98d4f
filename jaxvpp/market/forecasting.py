"""Day-ahead probabilistic price forecasts: quantile regression, rolling conformal calibration, rolling backtest.

For each step of a delivery day the forecaster gives the price quantiles at ``levels`` (default
0.05, 0.10, ..., 0.95; EUR/MWh). Models (scikit-learn), one per level:

* ``gbm``: gradient-boosted trees with the quantile (pinball) loss (``HistGradientBoostingRegressor``);
* ``qra``: linear quantile regression on the same features (``QuantileRegressor``, HiGHS), fitted on a
  recent window (quantile regression averaging in its simplest form).

Features: calendar (time of day, weekday, season), lagged prices at the same wall-clock slot (yesterday,
two days ago and, with five weeks of history or more before the first forecast day, a week ago and the
7-day slot mean), yesterday's daily statistics, and every exogenous column: its value at the step (a
day-ahead forecast, known before gate closure), its value yesterday and its daily mean.

Rolling forecasts (:func:`rolling_forecasts`): the models are refitted every ``refit_every_days`` days,
counted from the first forecast day, each time on all data before its refit day (or the last
``train_days``). Calibration is rolling out-of-sample conformalised quantile regression (one-sided per
level): the forecast of day ``d`` is shifted, level by level, by the empirical ``tau``-quantile of the
residuals ``y - q_tau`` of the forecasts actually issued for the ``calibration_days`` days before ``d``
(each made by the model of its own day, so every residual is out of sample). Before the first forecast
day a warm-up model, trained on data that ends ``warm-up`` days earlier, forecasts those warm-up days
and supplies the first residuals. Quantiles are then sorted per step (the rearrangement of Chernozhukov
et al.), so they never cross.

The issue time (``origin``) of the forecast for day ``d`` is 12:00 local time on day ``d - 1`` (the
day-ahead gate closure); all prices of day ``d - 1`` are known then, nothing later is used: the
forecast of a day depends only on prices before it (and exogenous values up to it), and the plan
(weekly lags, warm-up length) only on the history before the first forecast day.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
#: Days of history (before the first forecast day) below which the weekly lags are dropped.
WEEKLY_MIN_DAYS = 35
#: Fewest days of training data of the warm-up model (after the lags).
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
        calibration_days: days of issued (out-of-sample) forecasts before each day behind its conformal shifts.
        refit_every_days: days between model refits, counted from the first forecast day (calibration is
            redone every day).
        train_days: training window (days) before each refit day; ``None`` = all history (gbm), 56 (qra).
        calibrate: apply the conformal shifts.
        boosting_iterations: boosting iterations per quantile level (gbm).
        learning_rate, max_leaf_nodes, min_samples_leaf, max_bins: further gradient-boosting settings.
        early_stopping: stop boosting when the loss on a 10 % validation split stops improving (gbm).
        max_train_rows: training rows per refit above which a seeded random subset of this size is used
            (``None`` = all rows); it binds on long 15-minute histories.
        fit_jobs: worker processes that fit the levels' models side by side (each model single-threaded).
        baseline_window_days: days of residuals behind the seasonal-naive baseline's quantiles.
        seed: random seed of the boosted trees and of the row subset.
        tz: market time zone that defines delivery days.
    """

    model: str = "gbm"
    levels: tuple[float, ...] = LEVELS
    backtest_days: int = 28
    calibration_days: int = 28
    refit_every_days: int = 7
    train_days: int | None = None
    calibrate: bool = True
    boosting_iterations: int = 50
    learning_rate: float = 0.2
    max_leaf_nodes: int = 12
    min_samples_leaf: int = 40
    max_bins: int = 128
    early_stopping: bool = False
    max_train_rows: int | None = 15000
    fit_jobs: int = 2
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
        if self.train_days is not None and self.train_days < MIN_TRAIN_DAYS:
            raise InputError(
                f"train_days must be at least {MIN_TRAIN_DAYS}, got {self.train_days}", column="train_days"
            )
        if self.max_train_rows is not None and self.max_train_rows < 100:
            raise InputError(f"max_train_rows must be at least 100, got {self.max_train_rows}", column="max_train_rows")
        if self.fit_jobs < 1:
            raise InputError(f"fit_jobs must be at least 1, got {self.fit_jobs}", column="fit_jobs")


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

    Each fit runs single-threaded inside (on these small problems OpenMP threads cost more than they save,
    and their spin-waiting slows a busy machine down badly); with ``cfg.fit_jobs`` > 1 that many worker
    processes (joblib's loky backend) fit the levels side by side. Threads would not help: on a few
    thousand rows the boosting loop's Python part holds the GIL most of the time. scikit-learn is imported
    first so that its OpenMP runtime is loaded when the limit is set. The models do not depend on the
    number of workers.
    """
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime before the limit)
    import sklearn.linear_model  # noqa: F401

    if cfg.fit_jobs <= 1:
        return [_fit_one(X, y, float(lv), cfg) for lv in cfg.levels]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=cfg.fit_jobs, backend="loky")(delayed(_fit_one)(X, y, float(lv), cfg) for lv in cfg.levels)


def _fit_one(X: np.ndarray, y: np.ndarray, lv: float, cfg: ForecastConfig):
    """Fit the model of one level ``lv`` (single-threaded)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit_level(X, y, lv, cfg)


def _fit_level(X: np.ndarray, y: np.ndarray, lv: float, cfg: ForecastConfig):
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
            early_stopping=cfg.early_stopping,
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


@dataclass(frozen=True)
class _Plan:
    """What the history before the first forecast day allows."""

    history_days: int  #: complete days of history before the first forecast day
    weekly: bool  #: weekly lags in the features
    warmup_days: int  #: days the warm-up model forecasts before the first forecast day (first residuals)
    notes: tuple[str, ...]


def _plan_for(n: int, cfg: ForecastConfig) -> _Plan | None:
    """The plan for ``n`` days of history before the first forecast day, or None when they are too few."""
    weekly = n >= WEEKLY_MIN_DAYS
    avail = n - (7 if weekly else 2)  # days with complete lagged features
    warmup = min(cfg.calibration_days, max(1, avail // 4))
    if avail - warmup < MIN_TRAIN_DAYS:
        return None
    notes = []
    if not weekly:
        notes.append(
            f"only {n} days of history before the first forecast day (< {WEEKLY_MIN_DAYS}, about five weeks): "
            "the weekly lags are dropped and the baseline uses the daily lag"
        )
    if warmup < cfg.calibration_days and cfg.calibrate:
        notes.append(
            f"calibration warm-up shortened to {warmup} days (the first forecast days are calibrated on fewer "
            f"than {cfg.calibration_days} days of residuals)"
        )
    return _Plan(n, weekly, warmup, tuple(notes))


def _history_needed(cfg: ForecastConfig) -> int:
    """Fewest complete days of history before the first forecast day (lags, warm-up training and warm-up)."""
    n = 1
    while _plan_for(n, cfg) is None:
        n += 1
    return n


def _days_before(series: PreparedSeries, day: pd.Timestamp) -> int:
    return int(np.searchsorted(series.history_days.to_numpy(), np.datetime64(day, "ns")))


def earliest_forecast_day(series: PreparedSeries, cfg: ForecastConfig = ForecastConfig()) -> pd.Timestamp:
    """The first local delivery day (naive midnight) that :func:`rolling_forecasts` accepts as ``days[0]``.

    It is the first day of the series with enough complete days of history before it for the lags, the
    warm-up model's training data and the calibration warm-up; raises ``InputError`` when no day of the
    series (up to its forecast day) has that much.
    """
    need = _history_needed(cfg)
    hd = series.history_days
    if len(hd) < need:
        raise InputError(
            f"the price file holds {len(hd)} complete days; at least {need} are needed before the first forecast day",
            column=TIMESTAMP,
        )
    return hd[need] if len(hd) > need else series.forecast_day


def _check_days(series: PreparedSeries, days: Sequence[pd.Timestamp]) -> pd.DatetimeIndex:
    """``days`` as increasing naive local midnights of the series (history days or its forecast day)."""
    try:
        idx = pd.DatetimeIndex([pd.Timestamp(d) for d in days])
    except (TypeError, ValueError) as exc:
        raise InputError(f"forecast days must be dates: {exc}", column=TIMESTAMP) from None
    if len(idx) == 0:
        raise InputError("no forecast days given", column=TIMESTAMP)
    if idx.tz is not None or np.any(idx != idx.normalize()):
        raise InputError("forecast days must be naive local midnights (as in history_days)", column=TIMESTAMP)
    idx = idx.as_unit("ns")
    if np.any(np.diff(idx.asi8) <= 0):
        raise InputError("forecast days must be strictly increasing", column=TIMESTAMP)
    known = series.history_days.append(pd.DatetimeIndex([series.forecast_day])).as_unit("ns")
    missing = idx[~idx.isin(known)]
    if len(missing):
        raise InputError(
            f"{missing[0]:%Y-%m-%d} is neither a complete day of the price series nor its next delivery day "
            f"{series.forecast_day:%Y-%m-%d}",
            column=TIMESTAMP,
        )
    return idx


class _Rolling:
    """Refits, predicts and calibrates rolling forecasts whose refits are anchored at ``first_day``."""

    def __init__(self, series: PreparedSeries, cfg: ForecastConfig, first_day: pd.Timestamp) -> None:
        n = _days_before(series, first_day)
        plan = _plan_for(n, cfg)
        if plan is None:
            need = _history_needed(cfg)
            hd = series.history_days
            earliest = (
                f"; the earliest forecast day of this series is {earliest_forecast_day(series, cfg):%Y-%m-%d}"
                if len(hd) >= need
                else ""
            )
            raise InputError(
                f"the first forecast day {first_day:%Y-%m-%d} has {n} complete days of history before it; at least "
                f"{need} are needed (lags, warm-up model and calibration warm-up){earliest}",
                column=TIMESTAMP,
            )
        self.s, self.cfg, self.plan, self.first = series, cfg, plan, first_day
        fr = series.frame
        self.X = build_features(series, fr, weekly=plan.weekly).to_numpy(dtype=float)
        self.y = fr[PRICE].to_numpy(dtype=float)
        self.day = pd.DatetimeIndex(fr["day"])
        self.k = np.asarray((self.day - first_day).days, dtype=np.int64)  # day number, 0 = first forecast day
        self.ok = np.isfinite(self.X).all(axis=1)
        self.raw = np.full((len(fr), len(cfg.levels)), np.nan)

    def _fit(self, end: int) -> tuple[list, int]:
        """Models trained on the rows of days ``< end`` (day numbers), within ``train_days``; and the days used."""
        cfg = self.cfg
        window = cfg.train_days if cfg.train_days is not None else (56 if cfg.model == "qra" else None)
        m = self.ok & (self.k < end) & np.isfinite(self.y)
        if window is not None:
            m &= self.k >= end - window
        rows = np.flatnonzero(m)
        if len(rows) < 10:
            raise InputError("too little training data after the lags", column=TIMESTAMP)
        used = len(np.unique(self.k[rows]))
        if cfg.max_train_rows is not None and len(rows) > cfg.max_train_rows:
            pick = np.random.default_rng(cfg.seed).choice(len(rows), cfg.max_train_rows, replace=False)
            rows = rows[np.sort(pick)]
        return fit_quantile_models(self.X[rows], self.y[rows], cfg), used

    def run(
        self, days: pd.DatetimeIndex, *, refit_last: bool = False, log: Callable[[str], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Forecast ``days`` (the first is ``first_day``); with ``refit_last`` the last day gets its own refit
        on all data before it. Returns the rows, their day numbers, calibrated and raw (sorted) quantiles."""
        cfg, w, every = self.cfg, self.plan.warmup_days, self.cfg.refit_every_days
        ks = np.asarray((days - self.first).days, dtype=np.int64)
        need = set(ks.tolist())
        if cfg.calibrate:
            for k in ks:
                need.update(range(max(k - cfg.calibration_days, -w), k))
        last = int(ks[-1]) if refit_last else None
        blocks: dict[int, list[int]] = {}  # refit day number (-w: the warm-up model) -> days it forecasts
        for k in sorted(need):
            start = k if k == last else (-w if k < 0 else (k // every) * every)
            blocks.setdefault(start, []).append(k)
        for start, members in sorted(blocks.items()):
            rows = np.flatnonzero(np.isin(self.k, members) & self.ok)
            if len(rows) == 0:
                continue
            t0 = time.perf_counter()
            models, used = self._fit(start)
            self.raw[rows] = predict_quantiles(models, self.X[rows])
            if log is not None:
                a, b = (self.first + pd.Timedelta(days=int(x)) for x in (members[0], members[-1]))
                what = "warm-up" if start < 0 else "forecast"
                log(
                    f"{what} {a:%Y-%m-%d}..{b:%Y-%m-%d} ({len(members)} days, refit on {used} days of history) "
                    f"{time.perf_counter() - t0:.1f} s"
                )
        have = ~np.isnan(self.raw[:, 0]) & np.isfinite(self.y)
        out_rows, out_q = [], []
        for d, k in zip(days, ks):
            rows = np.flatnonzero(self.k == k)
            raw = self.raw[rows]
            if np.isnan(raw).any():
                raise InputError(f"features for {d:%Y-%m-%d} are incomplete (missing lagged days)", column=TIMESTAMP)
            shift = np.zeros(len(cfg.levels))
            if cfg.calibrate:
                cal = have & (self.k >= max(k - cfg.calibration_days, -w)) & (self.k < k)
                shift = conformal_shifts(self.raw[cal], self.y[cal], cfg.levels)
            out_rows.append(rows)
            out_q.append(rearrange(raw + shift))
        rows = np.concatenate(out_rows)
        return rows, self.k[rows], np.vstack(out_q), rearrange(self.raw[rows])

    def frame(self, rows: np.ndarray, q: np.ndarray) -> pd.DataFrame:
        """The rows as a frame: timestamp, origin, day, realised and the level columns."""
        fr = self.s.frame
        day = pd.DatetimeIndex(fr["day"].to_numpy()[rows])
        uniq = day.unique()
        origins = pd.DatetimeIndex([issue_time(d, self.cfg.tz) for d in uniq])
        out = pd.DataFrame({TIMESTAMP: fr[TIMESTAMP].iloc[rows].reset_index(drop=True)})
        out["origin"] = origins[uniq.get_indexer(day)]
        out["day"] = day
        out["realised"] = self.y[rows]
        out[level_columns(self.cfg.levels)] = q
        return out


def rolling_forecasts(
    series: PreparedSeries,
    days: Sequence[pd.Timestamp],
    cfg: ForecastConfig = ForecastConfig(),
    *,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Calibrated quantile forecasts (EUR/MWh) of every step of each delivery day in ``days``, issued in turn.

    ``days`` are increasing local delivery days (naive midnights, as in ``series.history_days``; the
    series' ``forecast_day`` may be the last), at least :func:`earliest_forecast_day`. The models are refitted
    every ``cfg.refit_every_days`` days counted from ``days[0]``, each on all data before its refit day;
    the forecast of day ``d`` is shifted by the conformal shifts of the forecasts issued for the
    ``cfg.calibration_days`` days before ``d`` (a warm-up model supplies those before ``days[0]``). The rows
    of day ``d`` depend only on prices before ``d``, exogenous values up to ``d`` and ``days[0]``.

    Returns one row per step of each day, in time order: ``timestamp`` (UTC), ``origin`` (UTC issue time,
    12:00 local the day before), ``day`` (naive local midnight), ``realised`` (EUR/MWh, NaN where unknown)
    and the sorted calibrated quantiles ``level_columns(cfg.levels)``. ``log`` gets one line per refit.
    """
    idx = _check_days(series, days)
    run = _Rolling(series, cfg, idx[0])
    rows, _, q, _ = run.run(idx, log=log)
    return run.frame(rows, q)


def issue_time(d: pd.Timestamp, tz: str = MARKET_TZ) -> pd.Timestamp:
    """Issue time (UTC) of the forecast of local delivery day ``d`` (naive midnight): 12:00 local on the day before."""
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
    """Rolling-origin backtest over the last ``cfg.backtest_days`` days (:func:`rolling_forecasts`), then the
    forecast of the next delivery day from models refitted on all data."""
    series = prepare_series(df, tz=cfg.tz)
    hd = series.history_days
    first_ok = earliest_forecast_day(series, cfg)
    n_ok = int(np.sum(hd >= first_ok))
    if n_ok < 1:
        raise InputError(
            f"the price file holds {len(hd)} complete days; at least {_history_needed(cfg) + 1} are needed "
            "(history before the backtest and one backtest day)",
            column=TIMESTAMP,
        )
    bt = min(cfg.backtest_days, n_ok)
    notes = list(series.notes)
    if bt < cfg.backtest_days:
        notes.append(f"backtest shortened to {bt} days")
    test_days = hd[-bt:]
    fc = _Rolling(series, cfg, test_days[0])
    notes += list(fc.plan.notes)
    days = test_days.append(pd.DatetimeIndex([series.forecast_day]))
    rows, ks, q, raw = fc.run(days, refit_last=True)
    in_bt = ks < ks[-1]
    backtest = fc.frame(rows[in_bt], q[in_bt]).drop(columns="day")
    cols = level_columns(cfg.levels)
    fr = series.frame
    quantiles = pd.DataFrame({TIMESTAMP: fr[TIMESTAMP].iloc[rows[~in_bt]].reset_index(drop=True)})
    quantiles[cols] = q[~in_bt]

    weekly = fc.plan.weekly
    lag = _choose_baseline_lag(series, test_days[0], weekly, cfg)
    base = seasonal_naive(series, list(test_days), lag, cfg.baseline_window_days, cfg.levels)
    baseline = backtest[[TIMESTAMP, "origin", "realised"]].copy()
    baseline[cols] = np.vstack([base[d] for d in test_days])
    ok = np.isfinite(baseline[cols].to_numpy()).all(axis=1)

    y = backtest["realised"].to_numpy()
    m_model = score(y, backtest[cols].to_numpy(), cfg.levels)
    m_raw = score(y, raw[in_bt], cfg.levels)
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
        "calibration_warmup_days": fc.plan.warmup_days,
        "refit_every_days": cfg.refit_every_days,
        "baseline_lag_days": lag,
        "weekly_lags": weekly,
        "history_days": len(hd),
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
