"""``jaxvpp run``: the main job, every phase in data-flow order.

1. **market**: a synthetic day-ahead price history (or a price file); the delivery day's realised prices
   are held out (synthetic history only) to judge the forecast and the schedules afterwards;
2. **forecast**: calibrated quantile forecast of the delivery day, scored by a rolling backtest;
3. **scenarios**: copula-sampled price paths reduced to K weighted scenarios;
4. **fleet**: a heterogeneous fleet of prosumer batteries (or a fleet.csv);
5. **uncoordinated**: every battery's own risk-aware optimum (one batched solve), and the risk-neutral
   schedules under the median forecast that the target is built from (same compiled program);
6. **target**: the community target, the aggregator's committed day-ahead schedule
   ``theta x`` the fleet's point-forecast schedule (or a target.csv);
7. **ALADIN**: the fleet coordinated to the target, with a live per-iteration log;
8. **ADMM**: the baseline, for the convergence comparison;
9. **frontier**: expected profit against CVaR over risk weights, ONE batched solve of the fleet tiled
   over the risk-weight grid;
10. **outputs**: summary, tables and figures.

The output folders (results, ``data/raw`` and ``data/processed``) are checked before phase 1, and nothing
is written until every phase has succeeded: the files are built in memory and written at the end, all
folders together, each whole or not at all (:func:`jaxvpp.files.write_folders`). A failed or interrupted
run leaves the folders as they were. The run owns the files it writes in each folder: a file of an
earlier run that this one does not write (e.g. ``frontier.png`` after ``--no-plots``) is removed; other
files in the folders are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from jaxvpp import io
from jaxvpp.battery.solution import solve_batteries
from jaxvpp.config import DEFAULT, RunConfig, default_config_text
from jaxvpp.coordination.api import coordinate
from jaxvpp.coordination.feasibility import check_target
from jaxvpp.errors import InfeasibleTargetError, NumericalError
from jaxvpp.files import FolderWrite, check_folders, write_folders
from jaxvpp.market.forecasting import (
    level_columns,
    quantile_frame_text,
    quantile_function,
    run_forecast,
)
from jaxvpp.market.ingress import (
    PRICE,
    TIMESTAMP,
    Gap,
    format_timestamps,
    gap_counts,
    gap_lines,
    local_day,
    price_file_text,
    read_price_file,
    synthetic_prices,
)
from jaxvpp.market.scenarios import REDUCTIONS, build_scenarios, scenarios_text
from jaxvpp.problem import Fleet, Market, Settings, random_fleet

Log = Callable[[str], None]

#: Every file a run may write into its results folder (the run owns them: one it does not write is removed).
RESULT_FILES: tuple[str, ...] = (
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
#: The files of ``data/processed`` (forecast and scenarios).
PROCESSED_FILES: tuple[str, ...] = (
    "quantiles.csv",
    "backtest.csv",
    "baseline_backtest.csv",
    "forecast_metrics.json",
    "scenarios.csv",
    "scenario_samples.csv",
    "scenario_metrics.json",
    *(f"scenarios_{m}.csv" for m in REDUCTIONS),
)
#: The files of ``data/raw`` (the synthetic history and the delivery day's realised prices).
RAW_FILES: tuple[str, ...] = ("prices.csv", "realised.csv")


@dataclass
class RunResult:
    """What :func:`run` computed (numpy arrays; MW, MWh, EUR/MWh, EUR) and where it wrote it."""

    summary: dict[str, Any]
    results_dir: Path
    data_dir: Path
    files: list[str]  #: names written into results_dir
    battery_ids: list[str]
    step_labels: list[str]  #: UTC ISO timestamps of the delivery day's steps
    fleet: Any  #: :class:`jaxvpp.problem.Fleet`
    market: Any  #: :class:`jaxvpp.problem.Market` (the reduced scenarios)
    target_mw: np.ndarray
    uncoordinated: Any  #: :class:`jaxvpp.battery.BatterySolution`
    coordinated: Any  #: :class:`jaxvpp.coordination.CoordinationResult` (ALADIN)
    admm: Any | None
    frontier: pd.DataFrame | None
    realised_prices: np.ndarray | None
    phase_times_s: dict[str, float] = field(default_factory=dict)


class Progress:
    """One line per finished phase (``[k/n] phase  detail  (seconds)``); phases with a live log announce
    themselves first. ``log=None`` is silent."""

    def __init__(self, log: Log | None, total: int) -> None:
        self.log, self.total, self.k = log, total, 0
        self.t0 = time.perf_counter()
        self.times: dict[str, float] = {}

    def emit(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def start(self, name: str, announce: str | None = None) -> float:
        self.k += 1
        if announce:
            self.emit(f"[{self.k:>{len(str(self.total))}}/{self.total}] {name}: {announce}")
        return time.perf_counter()

    def done(self, name: str, t_start: float, detail: str) -> None:
        dt = time.perf_counter() - t_start
        self.times[name] = dt
        total = time.perf_counter() - self.t0
        self.emit(
            f"[{self.k:>{len(str(self.total))}}/{self.total}] {name:<14} {detail}  ({dt:.1f} s, total {total:.1f} s)"
        )


def _median(levels: tuple[float, ...], q: np.ndarray) -> np.ndarray:

    return quantile_function(levels, q, np.full((q.shape[0], 1), 0.5))[:, 0]


def _fleet_totals(sol) -> dict[str, float]:
    """Fleet sums of a BatterySolution's economics (EUR)."""
    rev = float(np.sum(np.asarray(sol.expected_revenue_eur)))
    deg = float(np.sum(np.asarray(sol.degradation_eur)))
    return dict(
        objective_eur=float(np.sum(np.asarray(sol.objective_eur))),
        expected_revenue_eur=rev,
        degradation_eur=deg,
        expected_profit_eur=rev - deg,
        cvar_eur=float(np.sum(np.asarray(sol.cvar_eur))),
    )


def _finite(name: str, *arrays) -> None:
    for a in arrays:
        if not np.all(np.isfinite(np.asarray(a))):
            raise NumericalError(f"the {name} has non-finite values (numerical error); nothing written")


def check_outputs(config: RunConfig, out_dir: str | Path | None = None, data_dir: str | Path | None = None) -> None:
    """Check the folders a run writes (results, ``data/processed`` and, for a synthetic history, ``data/raw``)
    before any work; raises :class:`jaxvpp.files.OutputError` naming the folder that cannot be written."""
    results_dir = Path(out_dir if out_dir is not None else config.output.results_dir)
    data_root = Path(data_dir if data_dir is not None else config.output.data_dir)
    outputs = [FolderWrite(results_dir, {}, RESULT_FILES), FolderWrite(data_root / "processed", {}, PROCESSED_FILES)]
    if not config.market.prices_file:
        outputs.append(FolderWrite(data_root / "raw", {}, RAW_FILES))
    check_folders(outputs)


def run(
    config: RunConfig = DEFAULT,
    out_dir: str | Path | None = None,
    log: Log | None = print,
    *,
    data_dir: str | Path | None = None,
) -> RunResult:
    """Run the whole job and write its files (see the module docstring for the phases).

    Args:
        config: the run's parameters (:func:`jaxvpp.config.load_config`).
        out_dir: results folder; default ``config.output.results_dir``.
        log: called with each progress and ALADIN log line (``None`` = silent).
        data_dir: data folder (``raw/`` and ``processed/``); default ``config.output.data_dir``.

    Raises:
        InputError: bad input (a price, fleet or target file; too short a history), or an output folder that
            cannot be written (:class:`jaxvpp.files.OutputError`, found before phase 1 where the path shows it).
        InfeasibleTargetError: the fleet cannot meet the target.
        NumericalError: a solver produced non-finite values.
    Nothing is written when an exception is raised.
    """
    import jax.numpy as jnp

    from jaxvpp import plots

    cfg = config
    results_dir = Path(out_dir if out_dir is not None else cfg.output.results_dir)
    data_root = Path(data_dir if data_dir is not None else cfg.output.data_dir)
    tz = cfg.market.time_zone
    check_outputs(cfg, results_dir, data_root)  # before any work
    n_phases = 9 + int(cfg.coordination.admm) - int(not cfg.frontier.risk_weights)
    prog = Progress(log, n_phases)
    raw_files: dict[str, str] = {}
    processed: dict[str, str] = {}
    results: dict[str, str | bytes] = {}

    # ------------------------------------------------------------------------------------ 1. market
    t = prog.start("market")
    realised = None
    gaps: list[Gap] = []
    if cfg.market.prices_file:
        notes: list[str] = []
        history = read_price_file(
            cfg.market.prices_file, allow_future=True, notes=notes, fill_gaps=cfg.market.fill_gaps, gaps=gaps
        )
        for note in notes + gap_lines(gaps, file=cfg.market.prices_file):
            prog.emit(f"      note: {note}")
        source = f"price file {cfg.market.prices_file}"
    else:
        full = synthetic_prices(
            cfg.market.history_days + 1, cfg.market.resolution_minutes, cfg.market.seed, start=cfg.market.start, tz=tz
        )
        day = local_day(full[TIMESTAMP], tz)
        held = np.asarray(day == day.max())
        realised_frame = full.loc[held, [TIMESTAMP, PRICE]].reset_index(drop=True)
        history = full.copy()
        history.loc[held, PRICE] = np.nan  # the delivery day: only its renewable-share forecast is known
        raw_files["prices.csv"] = price_file_text(history)
        raw_files["realised.csv"] = price_file_text(realised_frame)
        source = f"synthetic, seed {cfg.market.seed}"
    have = history[PRICE].notna()
    prog.done(
        "market",
        t,
        f"{int(have.sum())} steps of history ({source}), "
        f"{history.loc[have, PRICE].min():.0f} to {history.loc[have, PRICE].max():.0f} EUR/MWh",
    )

    # ---------------------------------------------------------------------------------- 2. forecast
    t = prog.start("forecast")
    fc = run_forecast(history, cfg.forecast.forecaster(tz))
    for note in fc.notes:
        prog.emit(f"      note: {note}")
    levels = tuple(fc.metrics["levels"])
    qcols = level_columns(levels)
    q = fc.quantiles[qcols].to_numpy(dtype=float)
    step_times = pd.DatetimeIndex(fc.quantiles[TIMESTAMP])
    if not cfg.market.prices_file:
        rt = pd.DatetimeIndex(realised_frame[TIMESTAMP])
        if len(rt) == len(step_times) and bool(np.all(rt == step_times)):
            realised = realised_frame[PRICE].to_numpy(dtype=float)
    m = fc.metrics
    prog.done(
        "forecast",
        t,
        f"{m['forecast_day']} ({len(step_times)} steps): pinball {m['pinball_loss']:.2f} vs "
        f"{m['baseline_pinball_loss']:.2f} EUR/MWh seasonal naive, 90 % coverage "
        f"{m['coverage_90']:.2f} over a {m['backtest_days']}-day backtest",
    )

    # --------------------------------------------------------------------------------- 3. scenarios
    t = prog.start("scenarios")
    sc = build_scenarios(
        fc.quantiles,
        levels,
        fc.backtest,
        samples=cfg.scenarios.samples,
        k=cfg.scenarios.count,
        alpha=cfg.risk.alpha,
        reduction=cfg.scenarios.reduction,
        seed=cfg.scenarios.seed,
        tz=tz,
    )
    red = sc.reductions[sc.chosen]
    market = Market(prices=jnp.asarray(red.prices), probabilities=jnp.asarray(red.probabilities))
    dt = float(sc.metrics["dt_hours"])
    settings = Settings(dt_hours=dt, alpha=cfg.risk.alpha, baseline=cfg.risk.baseline)
    steps = format_timestamps(step_times)
    err = sc.metrics["reductions"][sc.chosen]["relative_error"]
    prog.done(
        "scenarios",
        t,
        f"{cfg.scenarios.samples} sampled paths -> {market.num_scenarios} weighted scenarios "
        f"({sc.chosen}; CVaR error {100 * err:+.1f} % on the reference schedule)",
    )

    # ------------------------------------------------------------------------------------- 4. fleet
    t = prog.start("fleet")
    if cfg.fleet.file:
        ids, fleet = io.read_fleet(cfg.fleet.file)
        fleet_src = cfg.fleet.file
    else:
        fleet = random_fleet(cfg.fleet.batteries, seed=cfg.fleet.seed, spread=cfg.fleet.spread)
        width = max(3, len(str(cfg.fleet.batteries)))
        ids = [f"prosumer_{i + 1:0{width}d}" for i in range(cfg.fleet.batteries)]
        fleet_src = f"random, seed {cfg.fleet.seed}, spread {cfg.fleet.spread:g}"
    N = len(ids)
    fl = jax.tree.map(np.asarray, fleet)
    prog.done(
        "fleet",
        t,
        f"{N} prosumer batteries ({fleet_src}): {fl.capacity_mwh.sum():.0f} MWh, "
        f"{fl.power_mw.sum():.0f} MW, risk weights {fl.risk_weight.min():.2f}-{fl.risk_weight.max():.2f}",
    )

    # ----------------------------------------------------------------------------- 5. uncoordinated
    t = prog.start("uncoordinated")
    free = solve_batteries(fleet, market, settings)
    median = _median(levels, q)
    point_market = Market(
        prices=jnp.broadcast_to(jnp.asarray(median), market.prices.shape), probabilities=market.probabilities
    )  # same shapes: the same compiled program
    point = solve_batteries(fleet._replace(risk_weight=jnp.zeros(N)), point_market, settings)
    jax.block_until_ready((free, point))
    _finite("uncoordinated schedule", free.net_mw, free.soc_mwh, point.net_mw)
    free_net = np.asarray(free.net_mw)
    not_conv = [ids[i] for i in np.flatnonzero(~np.asarray(free.converged))]
    if not_conv:
        prog.emit(f"      warning: {len(not_conv)} batteries did not converge alone: {', '.join(not_conv[:5])}")
    unc = _fleet_totals(free)
    prog.done(
        "uncoordinated",
        t,
        f"each battery alone: objective {unc['objective_eur']:.0f} EUR, expected revenue "
        f"{unc['expected_revenue_eur']:.0f} EUR, CVaR {unc['cvar_eur']:.0f} EUR",
    )

    # ------------------------------------------------------------------------------------ 6. target
    t = prog.start("target")
    if cfg.target.file:
        target = io.read_target(cfg.target.file, len(steps), step_labels=steps)
        target_kind = f"file {cfg.target.file}"
    else:
        target = cfg.target.theta * np.asarray(jnp.sum(point.net_mw, axis=0))
        target_kind = f"committed: {cfg.target.theta:g} x the point-forecast schedule"
    bad = check_target(fleet, target, settings)
    if bad:
        where = "; ".join(f"step {steps[s]} (#{s + 1}): {why}" for s, why in bad[:5])
        raise InfeasibleTargetError(f"infeasible target ({target_kind}): {where}", [s for s, _ in bad])
    miss = free_net.sum(axis=0) - target
    deviation_mwh = float(np.sum(np.abs(miss)) * dt)
    prog.done(
        "target",
        t,
        f"{target_kind}; the uncoordinated fleet misses it by {deviation_mwh:.1f} MWh "
        f"(up to {np.max(np.abs(miss)):.1f} MW)",
    )

    # ------------------------------------------------------------------------------------ 7. ALADIN
    t = prog.start("ALADIN", f"coordinating {N} batteries to the target (live log)")
    res = coordinate(
        fleet,
        market,
        target,
        settings,
        method="aladin",
        tol=cfg.coordination.tol,
        max_iter=cfg.coordination.max_iter,
        log=log,
        devices=cfg.coordination.devices,
    )
    if res.status == "infeasible_target":
        where = "; ".join(f"step {steps[s]} (#{s + 1}): {why}" for s, why in res.infeasible_steps[:5])
        raise InfeasibleTargetError(f"infeasible target: {where}", [s for s, _ in res.infeasible_steps])
    coord_summary = io.coordination_summary(res)
    if res.status == "numerical_error":
        raise NumericalError("numerical error in the ALADIN coordination (non-finite iterates); nothing written")
    sol = res.solution
    _finite("coordinated schedule", sol.charge_mw, sol.discharge_mw, sol.soc_mwh)
    coord = _fleet_totals(sol)
    state = "converged" if coord_summary["converged"] else f"NOT converged ({res.status})"
    prog.done(
        "ALADIN",
        t,
        f"{state} in {res.iterations} iterations: coupling residual {res.coupling_residual_mw:.1e} "
        f"MW, objective {coord['objective_eur']:.0f} EUR "
        f"(+{coord['objective_eur'] - unc['objective_eur']:.0f} EUR for meeting the target)",
    )

    # -------------------------------------------------------------------------------------- 8. ADMM
    admm_res = None
    if cfg.coordination.admm:
        every = max(1, cfg.coordination.admm_max_iter // 6)
        t = prog.start(
            "ADMM", f"the baseline, {cfg.coordination.admm_max_iter} iterations at most (one log line in {every})"
        )
        count = {"n": 0}

        def admm_log(line: str) -> None:
            count["n"] += 1
            if count["n"] % every == 0:
                prog.emit(line)

        admm_res = coordinate(
            fleet,
            market,
            target,
            settings,
            method="admm",
            tol=cfg.coordination.admm_tol_mw,
            max_iter=cfg.coordination.admm_max_iter,
            log=admm_log if log else None,
        )
        if admm_res.status == "numerical_error" or not np.all(np.isfinite(np.asarray(admm_res.solution.net_mw))):
            prog.emit("      warning: ADMM produced non-finite values; left out of the comparison")
            admm_res = None
        else:
            prog.done(
                "ADMM",
                t,
                f"{admm_res.status} after {admm_res.iterations} iterations: coupling residual "
                f"{admm_res.coupling_residual_mw:.1e} MW, objective {admm_res.objective_eur:.0f} EUR",
            )

    # ---------------------------------------------------------------------------------- 9. frontier
    frontier = None
    if cfg.frontier.risk_weights:
        t = prog.start("frontier")
        lam = np.asarray(cfg.frontier.risk_weights, dtype=float)
        R = len(lam)
        tiled = Fleet(*(jnp.tile(jnp.asarray(a), R) for a in fleet))._replace(
            risk_weight=jnp.repeat(jnp.asarray(lam), N)
        )  # point r = batteries r*N .. r*N + N - 1
        fsol = solve_batteries(tiled, market, settings)
        _finite("frontier", fsol.expected_revenue_eur, fsol.cvar_eur)

        def per_point(a) -> np.ndarray:
            return np.asarray(a).reshape(R, N).sum(axis=1)

        rev, deg = per_point(fsol.expected_revenue_eur), per_point(fsol.degradation_eur)
        frontier = pd.DataFrame(
            {
                "risk_weight": lam,
                "expected_revenue_eur": rev,
                "degradation_eur": deg,
                "expected_profit_eur": rev - deg,
                "cvar_eur": per_point(fsol.cvar_eur),
                "converged": np.asarray(fsol.converged).reshape(R, N).all(axis=1),
            }
        )
        frontier = frontier.sort_values("risk_weight").reset_index(drop=True)
        prog.done(
            "frontier",
            t,
            f"{R} risk weights x {N} batteries in one batched solve: expected profit "
            f"{frontier.expected_profit_eur.iloc[0]:.0f} -> {frontier.expected_profit_eur.iloc[-1]:.0f} "
            f"EUR, CVaR {frontier.cvar_eur.iloc[0]:.0f} -> {frontier.cvar_eur.iloc[-1]:.0f} EUR",
        )

    # ----------------------------------------------------------------------------------- 10. outputs
    t = prog.start("outputs")
    coord_net = np.asarray(sol.net_mw)
    if realised is not None:
        unc["realised_revenue_eur"] = float(dt * np.sum(free_net @ realised))
        coord["realised_revenue_eur"] = float(dt * np.sum(coord_net @ realised))
    unc.update(
        target_deviation_mwh=deviation_mwh,
        target_max_deviation_mw=float(np.max(np.abs(miss))),
        converged=bool(np.all(np.asarray(free.converged))),
        iterations=int(np.max(np.asarray(free.iterations))),
    )
    prog.times.setdefault("outputs", 0.0)
    summary: dict[str, Any] = dict(
        method="aladin",
        **coord_summary,
        coordination_wall_time_s=res.wall_time_s,
        devices=cfg.coordination.devices,
        coordinated=coord,
        uncoordinated=unc,
        cost_of_meeting_target_eur=coord["objective_eur"] - unc["objective_eur"],
        target=dict(
            kind="file" if cfg.target.file else "committed_point_forecast_schedule",
            theta=None if cfg.target.file else cfg.target.theta,
            file=cfg.target.file or None,
            target_mw=[float(v) for v in target],
            net_energy_mwh=float(np.sum(target) * dt),
        ),
        admm=None
        if admm_res is None
        else dict(
            status=admm_res.status,
            converged=bool(admm_res.converged),
            iterations=admm_res.iterations,
            coupling_residual_mw=admm_res.coupling_residual_mw,
            objective_eur=admm_res.objective_eur,
            wall_time_s=admm_res.wall_time_s,
        ),
        forecast={
            k: fc.metrics[k]
            for k in (
                "forecast_day",
                "model",
                "pinball_loss",
                "baseline_pinball_loss",
                "pinball_improvement",
                "coverage_90",
                "width_90",
                "crps",
                "backtest_days",
            )
        },
        scenarios=dict(
            samples=cfg.scenarios.samples, count=int(market.num_scenarios), reduction=sc.chosen, cvar_relative_error=err
        ),
        frontier=None if frontier is None else frontier.to_dict(orient="list"),
        realised_prices_known=realised is not None,
        market_source=source,
        filled_gaps=gap_counts(gaps),
        num_batteries=N,
        num_steps=len(steps),
        num_scenarios=int(market.num_scenarios),
        alpha=cfg.risk.alpha,
        dt_hours=dt,
        baseline=cfg.risk.baseline,
        delivery_day=fc.metrics["forecast_day"],
        steps=steps,
    )

    # tables
    results["schedules.csv"] = io.schedules_frame(
        ids, np.asarray(sol.charge_mw), np.asarray(sol.discharge_mw), np.asarray(sol.soc_mwh), steps
    ).to_csv(index=False)
    results["schedules_uncoordinated.csv"] = io.schedules_frame(
        ids, np.asarray(free.charge_mw), np.asarray(free.discharge_mw), np.asarray(free.soc_mwh), steps
    ).to_csv(index=False)
    conv_a = io.convergence_frame(res)
    results["convergence.csv"] = conv_a.to_csv(index=False)
    conv_b = io.convergence_frame(admm_res) if admm_res is not None else None
    if conv_b is not None:
        results["convergence_admm.csv"] = conv_b.to_csv(index=False)
    if frontier is not None:
        results["frontier.csv"] = frontier.to_csv(index=False)
    results["fleet.csv"] = io.fleet_csv(ids, fleet)
    results["target.csv"] = io.target_csv(steps, target)
    results["scenarios.csv"] = scenarios_text(steps, red.prices, red.probabilities)
    results["quantiles.csv"] = quantile_frame_text(fc.quantiles, [TIMESTAMP] + qcols)
    results["forecast_metrics.json"] = json.dumps(fc.metrics, indent=2) + "\n"
    results["config.toml"] = default_config_text(cfg)
    processed.update(
        {
            "quantiles.csv": results["quantiles.csv"],
            "backtest.csv": quantile_frame_text(fc.backtest, [TIMESTAMP, "origin", "realised"] + qcols),
            "baseline_backtest.csv": quantile_frame_text(fc.baseline, [TIMESTAMP, "origin", "realised"] + qcols),
            "forecast_metrics.json": results["forecast_metrics.json"],
            "scenarios.csv": results["scenarios.csv"],
            "scenario_samples.csv": scenarios_text(steps, sc.samples, np.full(len(sc.samples), 1.0 / len(sc.samples))),
            "scenario_metrics.json": json.dumps(sc.metrics, indent=2) + "\n",
            **{
                f"scenarios_{k}.csv": scenarios_text(steps, r.prices, r.probabilities) for k, r in sc.reductions.items()
            },
        }
    )

    # figures
    if cfg.output.plots:
        dpi = cfg.output.dpi
        day = fc.metrics["forecast_day"]
        w = np.asarray(red.probabilities)
        results["risk_bands.png"] = plots.png_bytes(
            plots.risk_bands(
                fc.quantiles,
                fc.backtest,
                realised,
                tz=tz,
                subtitle=f"delivery day {day}; {fc.metrics['model']} quantile regression, 90 % coverage "
                f"{m['coverage_90']:.2f} in a {m['backtest_days']}-day backtest",
            ),
            dpi,
        )
        results["scenarios.png"] = plots.png_bytes(
            plots.scenario_paths(
                step_times,
                sc.samples,
                red.prices,
                w,
                realised=realised,
                tz=tz,
                subtitle=f"{day}: {len(sc.samples)} copula samples reduced to {len(w)} ({sc.chosen})",
            ),
            dpi,
        )
        band = None
        if "q0.05" in qcols and "q0.95" in qcols:
            band = (fc.quantiles["q0.05"].to_numpy(), fc.quantiles["q0.95"].to_numpy())
        results["schedule.png"] = plots.png_bytes(
            plots.fleet_schedule(
                step_times,
                target,
                coord_net.sum(axis=0),
                free_net.sum(axis=0),
                w @ np.asarray(red.prices),
                np.asarray(res.coupling_price_eur_per_mwh),
                price_band=band,
                tz=tz,
                subtitle=f"{N} batteries, {day}; {target_kind}",
            ),
            dpi,
        )
        results["soc.png"] = plots.png_bytes(
            plots.state_of_charge(
                step_times,
                np.asarray(sol.soc_mwh),
                np.asarray(free.soc_mwh),
                fl.capacity_mwh,
                fl.soc_initial * fl.capacity_mwh,
                tz=tz,
                subtitle=f"State of charge, {N} batteries, {day}",
            ),
            dpi,
        )
        results["convergence.png"] = plots.png_bytes(
            plots.convergence(
                conv_a,
                conv_b,
                res.objective_eur,
                subtitle=f"{N} batteries, {len(steps)} steps, {market.num_scenarios} scenarios",
            ),
            dpi,
        )
        if frontier is not None:
            results["frontier.png"] = plots.png_bytes(
                plots.frontier(
                    frontier,
                    fleet_points={
                        "uncoordinated": (unc["cvar_eur"], unc["expected_profit_eur"]),
                        "coordinated": (coord["cvar_eur"], coord["expected_profit_eur"]),
                    },
                    alpha=cfg.risk.alpha,
                    subtitle=f"{N} batteries, {market.num_scenarios} scenarios, {day}",
                ),
                dpi,
            )

    prog.times["outputs"] = time.perf_counter() - t
    summary["phase_wall_time_s"] = {k: round(v, 3) for k, v in prog.times.items()}
    summary["wall_time_s"] = time.perf_counter() - prog.t0
    summary["config"] = cfg.to_dict()
    results["summary.json"] = json.dumps(summary, indent=2) + "\n"

    # write: the data folders and the results together, each whole or not at all
    writes = [FolderWrite(data_root / "processed", processed, PROCESSED_FILES)]
    if raw_files:
        writes.append(FolderWrite(data_root / "raw", raw_files, RAW_FILES))
    writes.append(FolderWrite(results_dir, results, RESULT_FILES))
    write_folders(writes)
    prog.done("outputs", t, f"{len(results)} files in {results_dir}/, data in {data_root}/")
    return RunResult(
        summary=summary,
        results_dir=results_dir,
        data_dir=data_root,
        files=sorted(results),
        battery_ids=ids,
        step_labels=steps,
        fleet=fleet,
        market=market,
        target_mw=target,
        uncoordinated=free,
        coordinated=res,
        admm=admm_res,
        frontier=frontier,
        realised_prices=realised,
        phase_times_s=dict(prog.times),
    )
