"""``coordinate``: the one entry point that coordinates a fleet to a community target by ALADIN, ADMM
or the centralized reference, and its :class:`CoordinationResult`.
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
from jaxvpp.coordination.admm import ADMMCarry, admm
from jaxvpp.coordination.aladin import ALADINWarmStart, Status, aladin_ipm, live_log
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
    status: Status  #: how the run ended (a ``str``: ``result.status == "converged"``; ``status.message`` says more)
    converged: bool
    iterations: int
    solution: BatterySolution  #: per-battery schedules and economics (leading battery axis)
    coupling_price_eur_per_mwh: np.ndarray  #: (T,) the price adjustment the community pays per MWh injected
    coupling_residual_mw: float  #: max_t |sum_i p_it - target_t|
    objective_eur: float  #: the fleet's minimised objective (sum over batteries)
    wall_time_s: float
    #: per-iteration diagnostics (the :class:`~jaxvpp.coordination.aladin.History` fields and ``elapsed_s``, the
    #: seconds from the call to each iteration when a live log was given, NaN otherwise)
    history: dict[str, np.ndarray] = field(default_factory=dict)
    infeasible_steps: list[tuple[int, str]] = field(default_factory=list)
    #: ALADIN: the largest relative measure (primal, dual, gap, coupling / (1 + max|target|)) of the reported
    #: iterate; <= tol normally, up to ACCEPTABLE_TOL when the end game stopped at the acceptable level
    accuracy: float = float("nan")
    #: what a later run of the same method starts from: ``coordinate(..., warm_start=result.warm_start)``
    #: (None for the centralized method and an infeasible target)
    warm_start: ALADINWarmStart | ADMMCarry | None = None


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
    warm_start: ALADINWarmStart | ADMMCarry | None = None,
    devices: int = 1,
) -> CoordinationResult:
    """Coordinate the fleet so that ``sum_i p_it = target_mw[t]`` (MW) for every step.

    Args:
        fleet, market, settings: the problem (see :mod:`jaxvpp.problem`).
        target_mw: (T,) the required fleet net injection per step (MW).
        method: ``"aladin"`` (interior-point ALADIN, default), ``"admm"`` or ``"centralized"`` (cvxpy + Clarabel).
        tol: relative tolerance on primal, dual, coupling residuals and gap (ALADIN); MW for ADMM.
        max_iter: iteration limit (default 100 for ALADIN, 300 for ADMM).
        log: called with one line per iteration (a live log), e.g. ``print``. Any callable: a new one does not
            recompile the solver, and runs at the same time each send their lines to their own ``log``.
        warm_start: ``result.warm_start`` of an earlier run of the same method (an
            :class:`~jaxvpp.coordination.aladin.ALADINWarmStart` for ALADIN, an
            :class:`~jaxvpp.coordination.admm.ADMMCarry` for ADMM) to start from.
        devices: ALADIN only: split the fleet over the first ``devices`` of ``jax.devices()`` (the same answer;
            see :mod:`jaxvpp.coordination.distributed`). In a multi-process run, every device of every process.

    Returns:
        A :class:`CoordinationResult`; ``status`` says whether it converged. Infeasible targets found
        before the solve return ``status="infeasible_target"`` and the offending steps, without solving.

    Raises:
        ValueError: an unknown ``method``, ``devices`` other than 1 for ADMM or the centralized method, a
            target of the wrong length, or a ``warm_start`` of another method.
    """
    target = np.asarray(target_mw, dtype=float)
    T = market.horizon
    if devices != 1 and method != "aladin":
        raise ValueError(f"devices={devices}: only method='aladin' runs on several devices")
    if target.shape != (T,):
        raise ValueError(f"target has {target.shape} entries, the scenarios have {T} steps")
    if isinstance(warm_start, ADMMCarry) and method != "admm":
        raise ValueError(f"warm_start comes from an ADMM run and cannot start method={method!r}")
    if warm_start is not None and method == "admm" and not isinstance(warm_start, ADMMCarry):
        raise ValueError("warm_start for method='admm' must be the warm_start of an earlier ADMM result (ADMMCarry)")
    t0 = time.perf_counter()
    bad = check_target(fleet, target, settings)
    if bad:
        return CoordinationResult(
            method=method,
            status=Status.INFEASIBLE_TARGET,
            converged=False,
            iterations=0,
            solution=None,
            coupling_price_eur_per_mwh=np.full(T, np.nan),  # type: ignore[arg-type]
            coupling_residual_mw=float("nan"),
            objective_eur=float("nan"),
            wall_time_s=time.perf_counter() - t0,
            infeasible_steps=bad,
        )
    if method in ("aladin", "admm"):
        with live_log(log, t0) as run_log:
            st = _solve_iteratively(
                fleet, market, target, settings, method, tol, max_iter, warm_start, devices, run_log
            )
        it = int(st.iteration)
        power = fleet.power_mw[:, None]  # the solver's power scale (Scales.power)
        status = Status.from_code(st.status)
        hist = {k: np.asarray(v)[:it] for k, v in st.history._asdict().items()}
        hist["elapsed_s"] = run_log.elapsed(it)
        if method == "aladin":
            x = st.local.x
            lam = np.asarray(st.lam)
            warm = ALADINWarmStart(local=st.local, lam=st.lam)
            shortfall = np.asarray(st.elastic.u) - np.asarray(st.elastic.w)  # MW the fleet does not deliver
            accuracy = float(st.best_merit) * tol
            if log is not None and status == Status.CONVERGED and accuracy > tol:
                log(
                    f"  stopped at the acceptable level: relative accuracy {accuracy:.1e} (tolerance {tol:.0e} not "
                    f"reached: the end game ran into round-off)"
                )
        else:
            x = st.carry.warm[0]
            lam = np.asarray(st.carry.price)
            warm = st.carry
            accuracy = float("nan")
        charge, discharge = x.c * power, x.d * power
        sol = _solution_from_schedule(fleet, market, settings, charge, discharge, it, status == Status.CONVERGED)
        if method == "aladin":
            cres = float(st.coupling_residual_mw)
        else:
            cres = float(np.max(np.abs(np.asarray(jnp.sum(sol.net_mw, axis=0)) - target)))
    elif method == "centralized":
        from jaxvpp.reference import solve_fleet_reference

        try:
            ref = solve_fleet_reference(fleet, market, settings, target)
        except InfeasibleTargetError as exc:
            return CoordinationResult(
                method=method,
                status=Status.INFEASIBLE_TARGET,
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
        ok = ref["status"] in ("optimal", "optimal_inaccurate")
        status = Status.CONVERGED if ok else Status.NUMERICAL_ERROR
        if ref["status"] == "optimal_inaccurate" and log is not None:
            log("  Clarabel: optimal_inaccurate (solved to its reduced tolerances)")
        it = int(ref.get("iterations", 0) or 0)
        sol = _solution_from_schedule(fleet, market, settings, charge, discharge, it, ok)
        lam = -np.asarray(ref["coupling_price_eur_per_mwh"]) * settings.dt_hours
        hist = {}
        warm = None
        accuracy = float("nan")
        cres = float(np.max(np.abs(np.asarray(jnp.sum(sol.net_mw, axis=0)) - target)))
    else:
        raise ValueError(f"unknown method {method!r}: use 'aladin', 'admm' or 'centralized'")
    if status == Status.CONVERGED and not bool(np.all(np.isfinite(np.asarray(sol.net_mw)))):
        status = Status.NUMERICAL_ERROR
    infeasible: list[tuple[int, str]] = []
    if status == Status.INFEASIBLE_TARGET:
        warm = None  # an iterate that misses the target is no place to start from
        reach = tol * (1.0 + float(np.max(np.abs(target))))
        for t in np.flatnonzero(np.abs(shortfall) > reach):
            side = "below" if shortfall[t] > 0 else "above"
            infeasible.append(
                (
                    int(t),
                    f"the fleet stays {abs(shortfall[t]):.3g} MW {side} the target: it cannot meet it with its "
                    "power, ramp and energy limits",
                )
            )
    return CoordinationResult(
        method=method,
        status=status,
        converged=status == Status.CONVERGED,
        iterations=it,
        solution=sol,
        coupling_price_eur_per_mwh=-lam / settings.dt_hours,
        coupling_residual_mw=cres,
        objective_eur=float(np.sum(np.asarray(sol.objective_eur))),
        wall_time_s=time.perf_counter() - t0,
        history=hist,
        infeasible_steps=infeasible,
        accuracy=accuracy,
        warm_start=warm,
    )


def _solve_iteratively(fleet, market, target, settings, method, tol, max_iter, warm_start, devices, run_log):
    """The final state of ALADIN (on one device or sharded) or ADMM, logging to ``run_log``."""
    log_id = None if run_log.call_id is None else np.int64(run_log.call_id)
    if method == "admm":
        st = admm(
            fleet,
            market,
            jnp.asarray(target),
            settings,
            tol=max(tol, 1e-9),
            max_iter=max_iter or 300,
            warm_start=warm_start,
            log_id=log_id,
        )
    elif devices == 1 and jax.process_count() == 1:
        st = aladin_ipm(
            fleet,
            market,
            jnp.asarray(target),
            settings,
            tol=tol,
            max_iter=max_iter or 100,
            warm_start=warm_start,
            log_id=log_id,
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
            warm_start=warm_start,
            log_id=log_id,
        )
    return jax.block_until_ready(st)
