"""``coordinate``: the one entry point that coordinates a fleet to a community target by ALADIN, ADMM
or the centralized reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxvpp.battery.solution import BatterySolution, fleet_metrics
from jaxvpp.coordination.admm import admm
from jaxvpp.coordination.aladin import LIVE_LOG, STATUSES, aladin_ipm
from jaxvpp.coordination.distributed import aladin_sharded
from jaxvpp.coordination.feasibility import check_target
from jaxvpp.errors import InfeasibleTargetError
from jaxvpp.problem import Fleet, Market, Settings

# --------------------------------------------------------------------------------------------------
# The Python API
# --------------------------------------------------------------------------------------------------


@dataclass
class CoordinationResult:
    """Outcome of coordinating a fleet (numpy arrays; schedules in MW and MWh, prices in EUR/MWh)."""

    method: str
    status: str  #: one of STATUSES
    converged: bool
    iterations: int
    solution: BatterySolution  #: per-battery schedules and economics (leading battery axis)
    coupling_price_eur_per_mwh: np.ndarray  #: (T,) the price adjustment the community pays per MWh injected
    coupling_residual_mw: float  #: max_t |sum_i p_it - target_t|
    objective_eur: float  #: the fleet's minimised objective (sum over batteries)
    wall_time_s: float
    history: dict[str, np.ndarray] = field(default_factory=dict)  #: per-iteration diagnostics
    infeasible_steps: list[tuple[int, str]] = field(default_factory=list)
    #: ALADIN: the largest relative measure (primal, dual, gap, coupling / (1 + max|target|)) of the reported
    #: iterate; <= tol normally, up to ACCEPTABLE_TOL when the end game stopped at the acceptable level
    accuracy: float = float("nan")


def _solution_from_schedule(fleet, market, settings, charge, discharge, iterations, converged) -> BatterySolution:
    met = fleet_metrics(fleet, market, settings, charge, discharge)
    z = jnp.zeros(fleet.size)
    return BatterySolution(
        charge_mw=charge,
        discharge_mw=discharge,
        net_mw=met["net_mw"],
        soc_mwh=met["soc_mwh"],
        objective_eur=met["objective_eur"],
        expected_revenue_eur=met["expected_revenue_eur"],
        cvar_eur=met["cvar_eur"],
        degradation_eur=met["degradation_eur"],
        iterations=jnp.full(fleet.size, iterations),
        converged=jnp.full(fleet.size, converged),
        primal_residual=z,
        dual_residual=z,
        gap=z,
    )


def coordinate(
    fleet: Fleet,
    market: Market,
    target_mw: np.ndarray | Array,
    settings: Settings = Settings(),
    *,
    method: str = "aladin",
    tol: float = 1e-8,
    max_iter: int | None = None,
    log: Callable[[str], None] | None = None,
    warm_start: tuple | None = None,
    devices: int = 1,
) -> CoordinationResult:
    """Coordinate the fleet so that ``sum_i p_it = target_mw[t]`` (MW) for every step.

    Args:
        fleet, market, settings: the problem (see :mod:`jaxvpp.problem`).
        target_mw: (T,) the required fleet net injection per step (MW).
        method: ``"aladin"`` (interior-point ALADIN, default), ``"admm"`` or ``"centralized"`` (cvxpy + Clarabel).
        tol: relative tolerance on primal, dual, coupling residuals and gap (ALADIN); MW for ADMM.
        max_iter: iteration limit (default 100 for ALADIN, 300 for ADMM).
        log: called with one line per iteration (a live log), e.g. ``print``.
        warm_start: ``result.history["_state"]`` of an earlier run of the same method: ``(LocalState, lam)``
            for ALADIN, an :class:`ADMMCarry` for ADMM.
        devices: ALADIN only: split the fleet over the first ``devices`` of ``jax.devices()`` (the same answer;
            see :mod:`jaxvpp.coordination.distributed`). In a multi-process run, every device of every process.

    Returns:
        A :class:`CoordinationResult`; ``status`` says whether it converged. Infeasible targets found
        before the solve return ``status="infeasible_target"`` and the offending steps, without solving.
    """
    target = np.asarray(target_mw, dtype=float)
    T = market.horizon
    if devices != 1 and method != "aladin":
        raise ValueError(f"devices={devices}: only method='aladin' runs on several devices")
    if target.shape != (T,):
        raise ValueError(f"target has {target.shape} entries, the scenarios have {T} steps")
    t0 = time.perf_counter()
    bad = check_target(fleet, target, settings)
    if bad:
        return CoordinationResult(
            method=method,
            status="infeasible_target",
            converged=False,
            iterations=0,
            solution=None,
            coupling_price_eur_per_mwh=np.full(T, np.nan),  # type: ignore[arg-type]
            coupling_residual_mw=float("nan"),
            objective_eur=float("nan"),
            wall_time_s=time.perf_counter() - t0,
            infeasible_steps=bad,
        )
    LIVE_LOG.update(t0=t0, sink=log, times=[])
    if method == "aladin":
        if devices == 1 and jax.process_count() == 1:
            st = aladin_ipm(
                fleet,
                market,
                jnp.asarray(target),
                settings,
                tol=tol,
                max_iter=max_iter or 100,
                verbose=log is not None,
                warm_start=warm_start,
            )
        else:
            st = aladin_sharded(
                fleet,
                market,
                target,
                settings,
                devices,
                tol=tol,
                max_iter=max_iter or 100,
                verbose=log is not None,
                warm_start=warm_start,
            )
        jax.block_until_ready(st)
        it = int(st.iteration)
        power = fleet.power_mw[:, None]  # the solver's power scale (Scales.power)
        charge, discharge = st.local.x.c * power, st.local.x.d * power
        status = STATUSES[int(st.status)]
        sol = _solution_from_schedule(fleet, market, settings, charge, discharge, it, status == "converged")
        lam = np.asarray(st.lam)
        hist = {k: np.asarray(v)[:it] for k, v in st.history._asdict().items()}
        hist["_state"] = (st.local, st.lam)  # type: ignore[assignment]
        cres = float(st.coupling_residual_mw)
        accuracy = float(st.best_merit) * tol
        if log is not None and status == "converged" and accuracy > tol:
            log(
                f"  stopped at the acceptable level: relative accuracy {accuracy:.1e} (tolerance {tol:.0e} not "
                f"reached: the end game ran into round-off)"
            )
    elif method == "admm":
        st = admm(
            fleet,
            market,
            jnp.asarray(target),
            settings,
            tol=max(tol, 1e-9),
            max_iter=max_iter or 300,
            verbose=log is not None,
            warm_start=warm_start,
        )
        jax.block_until_ready(st)
        it = int(st.iteration)
        x = st.carry.warm[0]
        power = fleet.power_mw[:, None]
        charge, discharge = x.c * power, x.d * power
        status = "converged" if bool(st.converged) else "max_iter"
        sol = _solution_from_schedule(fleet, market, settings, charge, discharge, it, status == "converged")
        lam = np.asarray(st.carry.price)
        hist = {k: np.asarray(v)[:it] for k, v in st.history._asdict().items()}
        hist["_state"] = st.carry  # type: ignore[assignment]
        cres = float(np.max(np.abs(np.asarray(jnp.sum(sol.net_mw, axis=0)) - target)))
    elif method == "centralized":
        from jaxvpp.reference import solve_fleet_reference

        try:
            ref = solve_fleet_reference(fleet, market, settings, target)
        except InfeasibleTargetError as exc:
            return CoordinationResult(
                method=method,
                status="infeasible_target",
                converged=False,
                iterations=0,
                solution=None,  # type: ignore[arg-type]
                coupling_price_eur_per_mwh=np.full(T, np.nan),
                coupling_residual_mw=float("nan"),
                objective_eur=float("nan"),
                wall_time_s=time.perf_counter() - t0,
                infeasible_steps=[(int(t), "Clarabel found the target infeasible") for t in (exc.steps or [])],
            )
        charge, discharge = jnp.asarray(ref["charge"]), jnp.asarray(ref["discharge"])
        # Clarabel's "optimal_inaccurate" (its reduced tolerances met, not the full ones) is an answer: at
        # N = 1000 it matched ALADIN's objective to 9e-10. Treating it as an error made `jaxvpp coordinate
        # --method centralized` write nothing after a 20 s solve.
        status = "converged" if ref["status"] in ("optimal", "optimal_inaccurate") else "numerical_error"
        if ref["status"] == "optimal_inaccurate" and log is not None:
            log("  Clarabel: optimal_inaccurate (solved to its reduced tolerances)")
        it = int(ref.get("iterations", 0) or 0)
        sol = _solution_from_schedule(fleet, market, settings, charge, discharge, it, status == "converged")
        lam = -np.asarray(ref["coupling_price_eur_per_mwh"]) * settings.dt_hours
        hist = {}
        cres = float(np.max(np.abs(np.asarray(jnp.sum(sol.net_mw, axis=0)) - target)))
    else:
        raise ValueError(f"unknown method {method!r}: use 'aladin', 'admm' or 'centralized'")
    if hist:
        times = np.asarray(LIVE_LOG.get("times") or [], dtype=float)
        hist["elapsed_s"] = times[:it] if times.size >= it else np.full(it, np.nan)
    if status == "converged" and not bool(np.all(np.isfinite(np.asarray(sol.net_mw)))):
        status = "numerical_error"
    infeasible: list[tuple[int, str]] = []
    if method != "aladin":
        accuracy = float("nan")
    if status == "infeasible_target":
        price = np.abs(lam) / settings.dt_hours
        for t in np.flatnonzero(price >= 1e-3 * np.max(price)):
            infeasible.append(
                (
                    int(t),
                    f"the coupling price diverged ({price[t]:.3g} EUR/MWh): the fleet cannot "
                    "meet the target with its power, ramp and energy limits",
                )
            )
    return CoordinationResult(
        method=method,
        status=status,
        converged=status == "converged",
        iterations=it,
        solution=sol,
        coupling_price_eur_per_mwh=-lam / settings.dt_hours,
        coupling_residual_mw=cres,
        objective_eur=float(np.sum(np.asarray(sol.objective_eur))),
        wall_time_s=time.perf_counter() - t0,
        history=hist,
        infeasible_steps=infeasible,
        accuracy=accuracy,
    )
