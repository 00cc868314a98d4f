"""Out-of-sample backtest: does the risk-aware schedule pay off on days that built none of its scenarios?

For every delivery day ``d`` of a range:

1. the quantile forecast issued at gate closure on ``d - 1`` from prices known then
   (:func:`jaxvpp.market.forecasting.rolling_forecasts`: no look-ahead);
2. the day's K weighted scenarios (:func:`jaxvpp.market.scenarios.scenario_set`; the copula correlation from the
   forecasts issued for the ``copula_days`` days before ``d``);
3. every battery's schedule under each strategy (:data:`STRATEGIES`);
4. the schedule's realised revenue on day ``d``'s actual prices and its cost terms, and what the forecast
   predicted for it (expected profit and CVaR over the day's scenarios).

Days are independent in this model (each starts at its initial state of charge and ends at or above it), so
the problems of all days and all batteries of one strategy are one batched solve
(:func:`jaxvpp.studies.sweeps.solve_batch`); days with another number of steps (the daylight-saving days)
form a batch of their own. Every strategy is evaluated the same way: realised revenue
``dt sum_t price_t p_t`` (EUR), cost ``deg dt sum (c + d) + q/2 dt sum (c^2 + d^2)`` (EUR), realised profit
= revenue - cost, regret = perfect foresight's realised profit - the strategy's (EUR, >= 0 up to the
solver's tolerance), and the predicted expected profit and CVaR of the schedule under the day's scenarios.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxvpp.battery.solution import fleet_metrics
from jaxvpp.errors import InputError, NumericalError
from jaxvpp.files import write_folder
from jaxvpp.market.forecasting import (
    WEEKLY_MIN_DAYS,
    ForecastConfig,
    PreparedSeries,
    earliest_forecast_day,
    issue_time,
    level_columns,
    prepare_series,
    quantile_frame_text,
    quantile_function,
    rolling_forecasts,
    score,
    seasonal_naive,
)
from jaxvpp.market.ingress import PRICE, TIMESTAMP
from jaxvpp.market.scenarios import cvar, scenario_set
from jaxvpp.problem import Fleet, Market, Settings
from jaxvpp.studies.sweeps import BatchResult, solve_batch

Log = Callable[[str], None]

#: The strategies a backtest compares, and what each schedules.
STRATEGIES: dict[str, str] = {
    "perfect_foresight": "risk-neutral on the realised prices: the upper bound of realised profit",
    "deterministic": "risk-neutral on the median (point) forecast, what most operators run today",
    "risk_neutral": "risk-neutral over the scenarios (risk weight 0)",
    "risk_aware": "expected profit minus risk weight x CVaR over the scenarios (the fleet's own weights, or "
    "one strategy risk_aware_<w> per given weight)",
    "coordinated": "risk-aware, coordinated by ALADIN to theta x the fleet's deterministic schedule of the day "
    "(the target rule of jaxvpp run)",
}
#: The strategies a backtest runs unless told otherwise.
DEFAULT_STRATEGIES: tuple[str, ...] = ("perfect_foresight", "deterministic", "risk_neutral", "risk_aware")

#: Columns of ``days.csv`` (one row per day and strategy, summed over the fleet; EUR).
DAY_COLUMNS: tuple[str, ...] = (
    "day",
    "strategy",
    "realised_revenue_eur",
    "cost_eur",
    "realised_profit_eur",
    "predicted_expected_profit_eur",
    "predicted_cvar_eur",
    "regret_eur",
    "realised_loss_eur",
    "cycles",
    "converged",
)
#: The files :func:`write_backtest` writes (it owns them: one of an earlier run it does not write is removed).
BACKTEST_FILES: tuple[str, ...] = (
    "days.csv",
    "batteries.csv",
    "forecasts.csv",
    "summary.json",
    "cumulative_profit.png",
    "daily_profit.png",
    "cvar.png",
)


@dataclass(frozen=True)
class BacktestConfig:
    """Settings of a backtest.

    Attributes:
        strategies: names from :data:`STRATEGIES` (perfect foresight is always run: the regret needs it).
        risk_weights: risk weights of the ``risk_aware`` strategy, one strategy ``risk_aware_<w>`` each;
            empty = every battery's own weight (one strategy ``risk_aware``).
        theta: the ``coordinated`` strategy's target, theta x the fleet's deterministic schedule (dimensionless).
        alpha: CVaR tail probability (0.05 = the worst 5 %).
        baseline: the loss the CVaR measures, ``"zero"`` (-revenue) or ``"expected"``.
        samples: price paths sampled per day; scenarios: K weighted scenarios per day after the reduction.
        reduction: ``"tail"``, ``"kmeans"`` or ``"medoids"``.
        seed: random seed of the sampling and clustering.
        copula_days: issued forecasts (days) behind each day's copula correlation.
        forecast: the forecaster's settings.
    """

    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    risk_weights: tuple[float, ...] = ()
    theta: float = 0.6
    alpha: float = 0.05
    baseline: str = "zero"
    samples: int = 1000
    scenarios: int = 20
    reduction: str = "tail"
    seed: int = 0
    copula_days: int = 28
    forecast: ForecastConfig = field(default_factory=ForecastConfig)

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise InputError(
                f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}"
                if unknown
                else "no strategy given",
                column="--strategies",
            )
        if any(not (math.isfinite(w) and w >= 0) for w in self.risk_weights):
            raise InputError("risk weights must be finite and >= 0", column="--risk-weights")
        if not (math.isfinite(self.theta) and self.theta >= 0):
            raise InputError(f"theta must be finite and >= 0, got {self.theta}", column="--theta")
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha must lie in (0, 1), got {self.alpha}", column="--alpha")
        if self.samples < 2:
            raise InputError(f"--samples must be at least 2, got {self.samples}", column="--samples")
        if not 1 <= self.scenarios <= self.samples:
            raise InputError(f"--k must lie in [1, --samples], got {self.scenarios}", column="--k")
        if self.copula_days < 0:
            raise InputError(f"--copula-days must be >= 0, got {self.copula_days}", column="--copula-days")

    def strategy_names(self) -> list[str]:
        """The strategies' names in the outputs, in order (perfect foresight first)."""
        chosen = set(self.strategies) | {"perfect_foresight"}
        names: list[str] = []
        for s in STRATEGIES:  # in the table's order: each strategy after the ones it builds on
            if s not in chosen:
                continue
            if s == "risk_aware" and self.risk_weights:
                names += [f"risk_aware_{w:g}" for w in dict.fromkeys(self.risk_weights)]
            else:
                names.append(s)
        return names


@dataclass
class BacktestResult:
    """What :func:`backtest` computed (EUR, MW, EUR/MWh)."""

    days: pd.DataFrame  #: :data:`DAY_COLUMNS`, one row per day and strategy (fleet sums)
    batteries: pd.DataFrame  #: the same per battery (``battery_id`` after ``strategy``)
    forecasts: (
        pd.DataFrame
    )  #: the issued quantile forecasts (timestamp, origin, realised, q...), copula window included
    summary: dict[str, Any]  #: per strategy and for the run (see :func:`strategy_summary`)
    net_mw: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  #: strategy -> day -> (N, T) schedules
    phase_times_s: dict[str, float] = field(default_factory=dict)


def _day_label(d: pd.Timestamp) -> str:
    return f"{pd.Timestamp(d):%Y-%m-%d}"


def _tail(values: np.ndarray, alpha: float) -> float:
    """Mean of the worst (largest) ``alpha`` share of equally likely ``values`` (the empirical CVaR)."""
    return cvar(np.asarray(values, dtype=float), None, alpha)


def strategy_summary(days: pd.DataFrame, batteries: pd.DataFrame, alpha: float) -> dict[str, dict[str, Any]]:
    """Per strategy: mean daily realised profit, its empirical ``alpha`` tail, the worst day, regret, cycles,
    and how often the realised loss exceeded the predicted CVaR (EUR unless stated)."""
    out: dict[str, dict[str, Any]] = {}
    for name, g in days.groupby("strategy", sort=False):
        profit = g["realised_profit_eur"].to_numpy()
        worst = int(np.argmin(profit))
        b = batteries[batteries["strategy"] == name]
        out[str(name)] = {
            "days": int(len(g)),
            "mean_daily_profit_eur": float(profit.mean()),
            "std_daily_profit_eur": float(profit.std(ddof=1)) if len(profit) > 1 else 0.0,
            "total_profit_eur": float(profit.sum()),
            "profit_tail_mean_eur": -_tail(-profit, alpha),
            "realised_cvar_eur": _tail(g["realised_loss_eur"].to_numpy(), alpha),
            "mean_predicted_cvar_eur": float(g["predicted_cvar_eur"].mean()),
            "mean_predicted_expected_profit_eur": float(g["predicted_expected_profit_eur"].mean()),
            "worst_day": str(g["day"].iloc[worst]),
            "worst_day_profit_eur": float(profit[worst]),
            "mean_daily_regret_eur": float(g["regret_eur"].mean()),
            "mean_daily_revenue_eur": float(g["realised_revenue_eur"].mean()),
            "mean_daily_cost_eur": float(g["cost_eur"].mean()),
            "cycles_per_day": float(b["cycles"].mean()),
            "fleet_loss_beyond_predicted_cvar_share": float(
                np.mean(g["realised_loss_eur"].to_numpy() > g["predicted_cvar_eur"].to_numpy())
            ),
            "battery_loss_beyond_predicted_cvar_share": float(
                np.mean(b["realised_loss_eur"].to_numpy() > b["predicted_cvar_eur"].to_numpy())
            ),
            "all_converged": bool(g["converged"].all()),
        }
    return out


class DayBatch(NamedTuple):
    """The problems of days with the same number of steps T, as one batch (leading axis B = days)."""

    fleets: Fleet  #: (B, N) the fleet on every day
    scenarios: Market  #: prices (B, K, T) EUR/MWh, probabilities (B, K)
    settings: Settings  #: dt_hours and alpha of shape (B,)
    realised: np.ndarray  #: (B, T) realised prices (EUR/MWh)
    median: np.ndarray  #: (B, T) median forecast (EUR/MWh)


def _day_batch(fleet: Fleet, recs: list[dict[str, Any]], cfg: BacktestConfig) -> DayBatch:
    B = len(recs)
    fleets = Fleet(*(jnp.broadcast_to(jnp.asarray(a, jnp.float64), (B,) + jnp.shape(a)) for a in fleet))
    scen = Market(
        prices=jnp.asarray(np.stack([r["prices"] for r in recs])),
        probabilities=jnp.asarray(np.stack([r["probabilities"] for r in recs])),
    )
    settings = Settings(
        dt_hours=jnp.asarray([r["dt"] for r in recs]), alpha=jnp.full(B, cfg.alpha), baseline=cfg.baseline
    )
    return DayBatch(
        fleets, scen, settings, np.stack([r["realised"] for r in recs]), np.stack([r["median"] for r in recs])
    )


def _known_prices(batch: DayBatch, prices: np.ndarray) -> Market:
    """Every scenario of a day replaced by one known price path (B, T): a deterministic problem of the same shape
    (the same compiled program as the scenario problems)."""
    p = batch.scenarios.prices
    return Market(
        prices=jnp.broadcast_to(jnp.asarray(prices)[:, None, :], p.shape), probabilities=batch.scenarios.probabilities
    )


def _solve_strategies(batch: DayBatch, names: list[str], theta: float, emit: Log) -> dict[str, BatchResult]:
    """Every strategy's schedules of a batch of days, one batched solve each."""
    fleets, scen, settings = batch.fleets, batch.scenarios, batch.settings
    zero_risk = fleets._replace(risk_weight=jnp.zeros_like(fleets.risk_weight))
    B, N = fleets.capacity_mwh.shape
    T = batch.realised.shape[1]
    solved: dict[str, BatchResult] = {}
    for name in names:  # in STRATEGIES order: "deterministic" before "coordinated"
        t0 = time.perf_counter()
        if name == "perfect_foresight":
            res = solve_batch(zero_risk, _known_prices(batch, batch.realised), settings)
        elif name == "deterministic":
            res = solve_batch(zero_risk, _known_prices(batch, batch.median), settings)
        elif name == "risk_neutral":
            res = solve_batch(zero_risk, scen, settings)
        elif name == "risk_aware":
            res = solve_batch(fleets, scen, settings)
        elif name.startswith("risk_aware_"):
            w = float(name.removeprefix("risk_aware_"))
            res = solve_batch(fleets._replace(risk_weight=jnp.full_like(fleets.risk_weight, w)), scen, settings)
        else:  # coordinated: the target rule of jaxvpp run, theta x the fleet's deterministic schedule
            det = solved.get("deterministic") or solve_batch(zero_risk, _known_prices(batch, batch.median), settings)
            res = solve_batch(fleets, scen, settings, theta * det.net_mw.sum(axis=1))
        if not (np.all(np.isfinite(res.charge_mw)) and np.all(np.isfinite(res.discharge_mw))):
            raise NumericalError(f"the {name} schedules have non-finite values (numerical error); nothing written")
        emit(
            f"  {name:<18} {B} days x {N} batteries ({T} steps) in one batched solve: {time.perf_counter() - t0:.1f} s"
            + ("" if res.converged.all() else f"; {int((~res.converged).sum())} days not converged")
        )
        solved[name] = res
    return solved


_batched_metrics = jax.jit(jax.vmap(fleet_metrics))


def _evaluate(batch: DayBatch, res: BatchResult) -> dict[str, np.ndarray]:
    """Per (day, battery) of a batch: realised revenue and loss, cost, predicted expected profit and CVaR, cycles."""
    charge, discharge = res.charge_mw, res.discharge_mw
    met = _batched_metrics(batch.fleets, batch.scenarios, batch.settings, jnp.asarray(charge), jnp.asarray(discharge))
    dt = np.asarray(batch.settings.dt_hours)[:, None]
    revenue = dt * np.einsum("bnt,bt->bn", discharge - charge, batch.realised)
    cost = np.asarray(met["degradation_eur"])
    expected = np.asarray(met["expected_revenue_eur"])
    loss = (expected - revenue) if batch.settings.baseline == "expected" else -revenue
    return {
        "realised_revenue_eur": revenue,
        "cost_eur": cost,
        "realised_profit_eur": revenue - cost,
        "predicted_expected_profit_eur": expected - cost,
        "predicted_cvar_eur": np.asarray(met["cvar_eur"]),
        "realised_loss_eur": loss,
        "cycles": dt * discharge.sum(axis=-1) / np.asarray(batch.fleets.capacity_mwh),
    }


def _given_forecasts(
    forecasts: pd.DataFrame, series: PreparedSeries, forecast_days: list[pd.Timestamp], days: list[pd.Timestamp]
) -> tuple[pd.DataFrame, tuple[float, ...]]:
    """A caller's issued forecasts arranged as :func:`rolling_forecasts` returns them (with ``day`` and ``realised``)."""
    qcols = [c for c in forecasts.columns if str(c).startswith("q")]
    try:
        levels = tuple(float(c[1:]) for c in qcols)
    except ValueError:
        raise InputError("forecast columns must be quantile levels q<level>, e.g. q0.05", column="forecasts") from None
    if len(levels) < 2 or np.any(np.diff(levels) <= 0) or TIMESTAMP not in forecasts.columns:
        raise InputError(
            "forecasts need a timestamp column and increasing quantile columns q<level>", column="forecasts"
        )
    fr = series.frame
    need = fr[fr["day"].isin(forecast_days)]
    given = forecasts.set_index(pd.DatetimeIndex(forecasts[TIMESTAMP]))[qcols]
    q = given.reindex(pd.DatetimeIndex(need[TIMESTAMP]))
    have = q.notna().all(axis=1).to_numpy()
    out = pd.DataFrame({TIMESTAMP: need[TIMESTAMP].to_numpy(), "day": need["day"].to_numpy()})
    out["realised"] = need[PRICE].to_numpy()
    out[qcols] = np.sort(q.to_numpy(dtype=float), axis=1)
    complete = pd.Series(have).groupby(out["day"].to_numpy()).all()
    missing = [d for d in days if not complete.get(d, False)]
    if missing:
        raise InputError(f"the forecasts do not cover every step of {_day_label(missing[0])}", column="forecasts")
    ok = complete[complete].index
    out = out[out["day"].isin(ok)].reset_index(drop=True)
    out.insert(1, "origin", [issue_time(d, series.tz) for d in out["day"]])
    return out, levels


def backtest(
    prices: pd.DataFrame,
    fleet: Fleet,
    battery_ids: Sequence[str] | None = None,
    *,
    first_day: str | pd.Timestamp | None = None,
    last_day: str | pd.Timestamp | None = None,
    config: BacktestConfig = BacktestConfig(),
    forecasts: pd.DataFrame | None = None,
    log: Log | None = print,
) -> BacktestResult:
    """Backtest the strategies on every delivery day from ``first_day`` to ``last_day`` (local dates, inclusive).

    Args:
        prices: a validated price frame (:func:`jaxvpp.market.ingress.read_price_file`), EUR/MWh, with every
            price of the range known.
        fleet: the batteries (fields of shape (N,)).
        battery_ids: names of the batteries in ``batteries.csv`` (default ``battery_1`` ...).
        first_day: first scheduled day; default the first day with ``config.copula_days`` issued forecasts
            before it, all of them with the weekly lags (five weeks of history before the first).
        last_day: last scheduled day; default the last complete day of ``prices``.
        config: strategies, risk, scenario and forecaster settings.
        forecasts: issued quantile forecasts to judge instead of the built-in forecaster's (``timestamp`` and
            level columns ``q0.05`` ... as in ``forecasts.csv``, EUR/MWh), covering every step of the scheduled
            days and of the ``copula_days`` before them that the prices hold; the caller vouches that each was
            issued without look-ahead.
        log: called with each progress line (``None`` = silent).

    Raises:
        InputError: a day outside the history, too little history before ``first_day``, bad settings.
        NumericalError: a solver produced non-finite values.
    """
    cfg = config
    emit = log or (lambda _line: None)
    t_all = time.perf_counter()
    times: dict[str, float] = {}
    fc_cfg = cfg.forecast
    series = prepare_series(prices, tz=fc_cfg.tz)
    history = series.history_days
    earliest = earliest_forecast_day(series, fc_cfg)
    if first_day is None:  # the first day whose forecasts (and copula window) have the weekly lags
        start = max(earliest, history[min(WEEKLY_MIN_DAYS, len(history) - 1)])
        first = start + pd.Timedelta(days=cfg.copula_days)
    else:
        first = pd.Timestamp(first_day)
    last = pd.Timestamp(last_day) if last_day is not None else history[-1]
    if first > last:
        raise InputError(f"--from {_day_label(first)} is after --to {_day_label(last)}", column="--from")
    if last > history[-1]:
        raise InputError(
            f"--to {_day_label(last)}: the prices end with {_day_label(history[-1])} (the last complete day)",
            column="--to",
        )
    if first < earliest:
        raise InputError(
            f"--from {_day_label(first)}: the forecaster needs history before the first day; the earliest "
            f"possible day of this price file is {_day_label(earliest)}",
            column="--from",
        )
    days = [d for d in history if first <= d <= last]
    if len(days) != (last - first).days + 1:
        missing = sorted(set(pd.date_range(first, last, freq="D")) - set(days))
        raise InputError(f"no complete prices for {_day_label(missing[0])}", column=PRICE)
    warm_start = max(earliest, first - pd.Timedelta(days=cfg.copula_days))
    forecast_days = [d for d in history if warm_start <= d <= last]
    N = fleet.size
    ids = list(battery_ids) if battery_ids is not None else [f"battery_{i + 1}" for i in range(N)]
    emit(
        f"backtest {_day_label(first)} .. {_day_label(last)}: {len(days)} days, {N} batteries, "
        f"strategies {', '.join(cfg.strategy_names())}"
    )

    # --------------------------------------------------------------------------------- 1. forecasts
    t = time.perf_counter()
    if forecasts is None:
        fc = rolling_forecasts(series, forecast_days, fc_cfg, log=lambda line: emit(f"  {line}"))
        levels = tuple(fc_cfg.levels)
    else:
        fc, levels = _given_forecasts(forecasts, series, forecast_days, days)
    qcols = level_columns(levels)
    fc_day = pd.DatetimeIndex(fc["day"])
    times["forecast"] = time.perf_counter() - t
    emit(f"forecasts: {len(forecast_days)} days in {times['forecast']:.1f} s")

    # --------------------------------------------------------------------------------- 2. scenarios
    t = time.perf_counter()
    per_day: list[dict[str, Any]] = []
    for i, d in enumerate(days):
        rows = fc[fc_day == d]
        past = fc[(fc_day >= d - pd.Timedelta(days=cfg.copula_days)) & (fc_day < d)]
        red = scenario_set(
            rows,
            levels,
            past if len(past) else None,
            samples=cfg.samples,
            k=cfg.scenarios,
            alpha=cfg.alpha,
            reduction=cfg.reduction,
            seed=cfg.seed,
            tz=fc_cfg.tz,
        )
        q = rows[qcols].to_numpy(dtype=float)
        step_times = pd.DatetimeIndex(rows[TIMESTAMP])
        dts = np.diff(step_times.as_unit("ns").asi8) / 3.6e12
        per_day.append(
            dict(
                day=d,
                prices=red.prices,
                probabilities=red.probabilities,
                median=quantile_function(levels, q, np.full((len(q), 1), 0.5))[:, 0],
                realised=rows["realised"].to_numpy(dtype=float),
                dt=float(np.median(dts)) if len(dts) else 1.0,
            )
        )
        if (i + 1) % 30 == 0 or i + 1 == len(days):
            emit(f"  scenarios: {i + 1}/{len(days)} days ({time.perf_counter() - t:.1f} s)")
    times["scenarios"] = time.perf_counter() - t

    # ------------------------------------------------------------------------- 3-4. solve, evaluate
    t = time.perf_counter()
    names = cfg.strategy_names()
    day_parts: list[pd.DataFrame] = []
    battery_parts: list[pd.DataFrame] = []
    schedules: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    by_steps: dict[int, list[dict[str, Any]]] = {}
    for rec in per_day:
        by_steps.setdefault(len(rec["realised"]), []).append(rec)
    for recs in sorted(by_steps.values(), key=len, reverse=True):
        batch = _day_batch(fleet, recs, cfg)
        solved = _solve_strategies(batch, names, cfg.theta, emit)
        evals = {n: _evaluate(batch, solved[n]) for n in names}
        labels = np.array([_day_label(r["day"]) for r in recs])
        B = len(recs)
        for name in names:
            schedules[name].update(zip(labels, solved[name].net_mw))
            ev = evals[name]
            ev["regret_eur"] = evals["perfect_foresight"]["realised_profit_eur"] - ev["realised_profit_eur"]
            day_parts.append(
                pd.DataFrame(
                    {
                        "day": labels,
                        "strategy": name,
                        **{c: ev[c].sum(axis=1) for c in DAY_COLUMNS[2:-2]},
                        "cycles": ev["cycles"].mean(axis=1),
                        "converged": np.asarray(solved[name].converged, dtype=bool),
                    }
                )
            )
            battery_parts.append(
                pd.DataFrame(
                    {
                        "day": np.repeat(labels, N),
                        "strategy": name,
                        "battery_id": np.tile(np.asarray(ids, dtype=object), B),
                        **{c: ev[c].ravel() for c in DAY_COLUMNS[2:-1]},
                    }
                )
            )
    times["solve"] = time.perf_counter() - t

    order = {n: i for i, n in enumerate(names)}

    def arrange(frame: pd.DataFrame) -> pd.DataFrame:
        key = frame["strategy"].map(order)
        return frame.assign(_k=key).sort_values(["_k", "day"], kind="stable").drop(columns="_k").reset_index(drop=True)

    days_frame = arrange(pd.concat(day_parts, ignore_index=True))
    batteries_frame = arrange(pd.concat(battery_parts, ignore_index=True))

    # forecast quality over the scheduled days, against the better seasonal-naive lag
    sched = fc[fc_day.isin(days)].reset_index(drop=True)
    y = sched["realised"].to_numpy()
    fq = score(y, sched[qcols].to_numpy(), levels)
    base = {}
    for lag in (1, 7):
        sn = seasonal_naive(series, days, lag, fc_cfg.baseline_window_days, levels)
        qb = np.vstack([sn[d] for d in days])
        if np.isfinite(qb).all():
            base[lag] = score(y, qb, levels)
    best_lag = min(base, key=lambda k: base[k]["pinball_loss"]) if base else None
    summary: dict[str, Any] = {
        "first_day": _day_label(first),
        "last_day": _day_label(last),
        "days": len(days),
        "batteries": N,
        "strategies": names,
        "strategy_descriptions": {n: STRATEGIES["risk_aware" if n.startswith("risk_aware") else n] for n in names},
        "alpha": cfg.alpha,
        "baseline": cfg.baseline,
        "scenarios": cfg.scenarios,
        "samples": cfg.samples,
        "reduction": cfg.reduction,
        "theta": cfg.theta if "coordinated" in names else None,
        "resolution_minutes": series.resolution,
        "forecast": {
            "model": fc_cfg.model,
            "pinball_loss": fq["pinball_loss"],
            "coverage_90": fq.get("coverage_90"),
            "baseline_lag_days": best_lag,
            "baseline_pinball_loss": base[best_lag]["pinball_loss"] if best_lag else None,
            "pinball_improvement": 1 - fq["pinball_loss"] / base[best_lag]["pinball_loss"] if best_lag else None,
        },
        "by_strategy": strategy_summary(days_frame, batteries_frame, cfg.alpha),
        "units": "EUR (sums over the fleet per day unless stated); cycles: discharged energy / capacity per day",
    }
    times["total"] = time.perf_counter() - t_all
    summary["phase_wall_time_s"] = {k: round(v, 3) for k, v in times.items()}
    return BacktestResult(
        days=days_frame,
        batteries=batteries_frame,
        forecasts=fc[[TIMESTAMP, "origin", "realised"] + qcols],
        summary=summary,
        net_mw={n: dict(sorted(v.items())) for n, v in schedules.items()},
        phase_times_s=times,
    )


def backtest_files(result: BacktestResult, *, plots: bool = True, dpi: int = 110, tz: str = "Europe/Berlin") -> dict:
    """The files of a backtest (name -> text or bytes), as :func:`write_backtest` writes them."""
    qcols = [c for c in result.forecasts.columns if c.startswith("q")]
    files: dict[str, str | bytes] = {
        "days.csv": result.days.to_csv(index=False, float_format="%.6g", lineterminator="\n"),
        "batteries.csv": result.batteries.to_csv(index=False, float_format="%.6g", lineterminator="\n"),
        "forecasts.csv": quantile_frame_text(result.forecasts, [TIMESTAMP, "origin", "realised"] + qcols),
        "summary.json": json.dumps(result.summary, indent=2) + "\n",
    }
    if plots:
        from jaxvpp import plots as figures

        s = result.summary
        sub = f"{s['days']} days {s['first_day']} .. {s['last_day']}, {s['batteries']} batteries"
        files["cumulative_profit.png"] = figures.png_bytes(figures.backtest_cumulative(result.days, subtitle=sub), dpi)
        files["daily_profit.png"] = figures.png_bytes(
            figures.backtest_distribution(result.days, alpha=s["alpha"], subtitle=sub), dpi
        )
        files["cvar.png"] = figures.png_bytes(figures.backtest_cvar(result.days, alpha=s["alpha"], subtitle=sub), dpi)
    return files


def write_backtest(
    result: BacktestResult, out_dir: str | Path, *, plots: bool = True, dpi: int = 110, option: str | None = "--out"
) -> None:
    """Write :data:`BACKTEST_FILES` into ``out_dir``, whole or not at all (:func:`jaxvpp.files.write_folder`)."""
    write_folder(out_dir, backtest_files(result, plots=plots, dpi=dpi), owned=BACKTEST_FILES, option=option)


__all__ = [
    "BACKTEST_FILES",
    "DAY_COLUMNS",
    "DEFAULT_STRATEGIES",
    "STRATEGIES",
    "BacktestConfig",
    "BacktestResult",
    "DayBatch",
    "backtest",
    "backtest_files",
    "strategy_summary",
    "write_backtest",
]
