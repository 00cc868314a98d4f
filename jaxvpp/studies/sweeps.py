"""Sweeps: a batch of problems solved in one compiled, vmapped call.

A sweep varies one parameter over a grid of values and solves every resulting problem at once:

* without a target the batteries are independent: when only the fleets differ (risk weights, any fleet
  column) the B fleets are laid end to end and solved by ONE call of the battery solver
  (:func:`jaxvpp.battery.solve_batteries`, as ``jaxvpp run``'s frontier does); otherwise (alpha, prices) the
  solver is ``vmap``-ped over the problems. Batteries are independent, so each row is its separate solve;
* with a target every problem is coordinated by interior-point ALADIN (:func:`jaxvpp.coordination.aladin.aladin_ipm`)
  ``vmap``-ped over the problems: one ``while_loop`` runs until every problem has stopped, and a problem that
  has stopped is frozen (its carry is kept), so each member takes exactly the iterations it takes alone.

:func:`solve_batch` is the general form: fleets, markets, settings and targets with a leading batch axis
(risk weights, alpha values, scenario sets, targets, any fleet column). :func:`sweep` builds that batch for
one named parameter (:data:`SWEEP_PARAMS`) and returns one table row per value.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import Array, lax

from jaxvpp.battery.solution import fleet_metrics, solve_batteries
from jaxvpp.coordination.aladin import Status, aladin_ipm
from jaxvpp.coordination.feasibility import check_target
from jaxvpp.errors import InputError
from jaxvpp.problem import Fleet, Market, Settings

#: Parameters :func:`sweep` knows: what each value sets.
SWEEP_PARAMS: dict[str, str] = {
    "risk_weight": "every battery's CVaR weight lambda (dimensionless, >= 0)",
    "risk_scale": "every battery's own risk weight times the value (>= 0)",
    "alpha": "the CVaR tail probability, in (0, 1)",
    "target_scale": "the target times the value (needs a target)",
    "price_scale": "every scenario price times the value",
}

#: Columns of ``sweep.csv`` after the parameter's own column.
SWEEP_COLUMNS: tuple[str, ...] = (
    "objective_eur",
    "expected_revenue_eur",
    "degradation_eur",
    "expected_profit_eur",
    "cvar_eur",
    "converged",
    "status",
    "iterations",
    "coupling_residual_mw",
)


class BatchResult(NamedTuple):
    """Per-problem results of :func:`solve_batch` (leading axis B; numpy)."""

    objective_eur: np.ndarray  #: (B,) the fleet's objective (sum over batteries)
    expected_revenue_eur: np.ndarray  #: (B,)
    degradation_eur: np.ndarray  #: (B,)
    cvar_eur: np.ndarray  #: (B,) sum of the batteries' CVaRs
    converged: np.ndarray  #: (B,) bool
    status: list[Status]  #: (B,) how each problem ended (``str`` values: ``"converged"``, ...)
    iterations: np.ndarray  #: (B,) ALADIN iterations (coordinated) or the battery solver's largest count
    coupling_residual_mw: np.ndarray  #: (B,) max_t |sum_i p_it - target_t| (nan without a target)
    net_mw: np.ndarray  #: (B, N, T)
    coupling_price_eur_per_mwh: np.ndarray  #: (B, T) (zeros without a target)
    charge_mw: np.ndarray  #: (B, N, T)
    discharge_mw: np.ndarray  #: (B, N, T)


#: Batteries per lock-step batch of a sweep. The problems run in chunks of about this many batteries (a
#: ``lax.map`` over ``vmap``-ped chunks): a chunk of a few hundred batteries keeps its working set in the CPU's
#: cache, where chunks of a thousand or more do not, and in a small chunk a coordinated problem waits less
#: for the slowest member of its chunk.
CHUNK_BATTERIES = 128


def _problems_per_chunk(fleets: Fleet) -> int:
    B, N = fleets.capacity_mwh.shape
    return int(min(B, max(1, CHUNK_BATTERIES // N)))


def _chunked_map(f, xs, per_chunk: int):
    """``lax.map`` over chunks of ``per_chunk`` problems (vmapped within a chunk); one problem per chunk is a plain
    ``lax.map``, without a batch axis of size 1."""
    return lax.map(f, xs) if per_chunk == 1 else lax.map(f, xs, batch_size=per_chunk)


@functools.partial(jax.jit, static_argnames=("tol", "max_iter"))
def _coordinated_batch(fleets: Fleet, markets: Market, settings: Settings, targets: Array, tol: float, max_iter: int):
    def one(fleet, market, st, target):
        s = aladin_ipm(fleet, market, target, st, tol=tol, max_iter=max_iter)
        power = fleet.power_mw[:, None]
        charge, discharge = s.local.x.c * power, s.local.x.d * power
        met = fleet_metrics(fleet, market, st, charge, discharge)
        return (
            jnp.sum(met["objective_eur"]),
            jnp.sum(met["expected_revenue_eur"]),
            jnp.sum(met["degradation_eur"]),
            jnp.sum(met["cvar_eur"]),
            s.status,
            s.iteration,
            s.coupling_residual_mw,
            met["net_mw"],
            -s.lam / st.dt_hours,
            charge,
            discharge,
        )

    return _chunked_map(lambda a: one(*a), (fleets, markets, settings, targets), _problems_per_chunk(fleets))


@functools.partial(jax.jit, static_argnames=("tol", "max_iter"))
def _independent_batch(fleets: Fleet, markets: Market, settings: Settings, tol: float, max_iter: int):
    def one(fleet, market, st):
        sol = solve_batteries(fleet, market, st, tol=tol, max_iter=max_iter)
        return (
            jnp.sum(sol.objective_eur),
            jnp.sum(sol.expected_revenue_eur),
            jnp.sum(sol.degradation_eur),
            jnp.sum(sol.cvar_eur),
            jnp.all(sol.converged),
            jnp.max(sol.iterations),
            sol.net_mw,
            sol.charge_mw,
            sol.discharge_mw,
        )

    return _chunked_map(lambda a: one(*a), (fleets, markets, settings), _problems_per_chunk(fleets))


@functools.partial(jax.jit, static_argnames=("tol", "max_iter"))
def _tiled_batch(fleets: Fleet, market: Market, settings: Settings, tol: float, max_iter: int):
    B, N = fleets.capacity_mwh.shape
    sol = solve_batteries(
        Fleet(*(a.reshape(B * N) for a in fleets)),
        market,
        settings,
        tol=tol,
        max_iter=max_iter,
        chunk_size=CHUNK_BATTERIES,
    )

    def per(a):
        return a.reshape((B, N) + a.shape[1:])

    return (
        jnp.sum(per(sol.objective_eur), 1),
        jnp.sum(per(sol.expected_revenue_eur), 1),
        jnp.sum(per(sol.degradation_eur), 1),
        jnp.sum(per(sol.cvar_eur), 1),
        jnp.all(per(sol.converged), 1),
        jnp.max(per(sol.iterations), 1),
        per(sol.net_mw),
        per(sol.charge_mw),
        per(sol.discharge_mw),
    )


def _shared(tree) -> bool:
    """Whether every leaf is the same along the leading (batch) axis."""
    return all(bool(np.all(np.asarray(a) == np.asarray(a)[:1])) for a in jax.tree.leaves(tree))


def solve_batch(
    fleets: Fleet,
    markets: Market,
    settings: Settings,
    targets: Array | np.ndarray | None = None,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
) -> BatchResult:
    """Solve B problems in one compiled, vmapped call.

    Args:
        fleets: fields of shape (B, N).
        markets: prices (B, K, T) EUR/MWh, probabilities (B, K).
        settings: ``dt_hours`` and ``alpha`` of shape (B,) (the baseline is shared).
        targets: (B, T) MW, or None: every battery solved on its own.
        tol: relative tolerance: ALADIN's (default 1e-8) with targets, the battery solver's (default 1e-9)
            without.
        max_iter: iteration limit: ALADIN's (default 100) with targets, the battery solver's (default 80)
            without.

    Returns:
        A :class:`BatchResult`. A target that fails :func:`jaxvpp.coordination.check_target` gets the status
        ``infeasible_target`` (it is solved with the others but its numbers mean nothing).
    """
    B = int(np.shape(fleets.capacity_mwh)[0])
    if targets is None:
        if _shared(markets) and _shared(settings):
            # Only the fleets differ: one battery-solver call on the B fleets laid end to end (B*N batteries,
            # chunked as usual), as jaxvpp run's frontier does, instead of a vmap around the chunked solver.
            out = _tiled_batch(
                fleets,
                jax.tree.map(lambda a: a[0], markets),
                jax.tree.map(lambda a: a[0], settings),
                tol=tol or 1e-9,
                max_iter=max_iter or 80,
            )
        else:
            out = _independent_batch(fleets, markets, settings, tol=tol or 1e-9, max_iter=max_iter or 80)
        obj, rev, deg, cv, conv, it, net, charge, discharge = (np.asarray(a) for a in out)
        status = [Status.CONVERGED if c else Status.MAX_ITER for c in conv]
        T = net.shape[-1]
        return BatchResult(
            obj,
            rev,
            deg,
            cv,
            conv.astype(bool),
            status,
            it,
            np.full(B, np.nan),
            net,
            np.zeros((B, T)),
            charge,
            discharge,
        )
    targets = jnp.asarray(targets, dtype=jnp.float64)
    out = _coordinated_batch(fleets, markets, settings, targets, tol=tol or 1e-8, max_iter=max_iter or 100)
    obj, rev, deg, cv, st, it, cres, net, price, charge, discharge = (np.asarray(a) for a in out)
    status = [Status.from_code(s) for s in st]
    for b in range(B):
        fleet_b = Fleet(*(a[b] for a in fleets))
        settings_b = Settings(
            dt_hours=float(np.asarray(settings.dt_hours)[b]),
            alpha=float(np.asarray(settings.alpha)[b]),
            baseline=settings.baseline,
        )
        if check_target(fleet_b, np.asarray(targets[b]), settings_b):
            status[b] = Status.INFEASIBLE_TARGET
    conv = np.array([s == Status.CONVERGED for s in status])
    return BatchResult(obj, rev, deg, cv, conv, status, it, cres, net, price, charge, discharge)


def _stack(tree, B: int):
    return jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.float64), (B,) + jnp.shape(a)), tree)


def build_batch(
    fleet: Fleet, market: Market, settings: Settings, target: np.ndarray | None, param: str, values: np.ndarray
) -> tuple[Fleet, Market, Settings, Array | None]:
    """The batch of problems of a sweep: ``param`` set to each of ``values`` (see :data:`SWEEP_PARAMS`)."""
    check_values(param, values, has_target=target is not None)
    v = jnp.asarray(np.asarray(values, dtype=np.float64))
    B = int(v.shape[0])
    fleets, markets = _stack(fleet, B), _stack(market, B)
    dts = jnp.full(B, float(settings.dt_hours))
    alphas = jnp.full(B, float(settings.alpha))
    targets = None if target is None else _stack(jnp.asarray(target, jnp.float64), B)
    if param == "risk_weight":
        fleets = fleets._replace(risk_weight=jnp.broadcast_to(v[:, None], fleets.risk_weight.shape))
    elif param == "risk_scale":
        fleets = fleets._replace(risk_weight=fleets.risk_weight * v[:, None])
    elif param == "alpha":
        alphas = v
    elif param == "target_scale":
        targets = targets * v[:, None]
    elif param == "price_scale":
        markets = markets._replace(prices=markets.prices * v[:, None, None])
    return fleets, markets, Settings(dt_hours=dts, alpha=alphas, baseline=settings.baseline), targets


def check_values(param: str, values: np.ndarray, *, has_target: bool) -> None:
    """Reject an unknown parameter, values out of its range, or ``target_scale`` without a target (InputError)."""
    if param not in SWEEP_PARAMS:
        raise InputError(f"unknown parameter {param!r}; choose one of {', '.join(SWEEP_PARAMS)}", column="--param")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise InputError("give at least one value", column="--values")
    if not np.all(np.isfinite(v)):
        raise InputError("every value must be finite", column="--values")
    if param in ("risk_weight", "risk_scale") and np.any(v < 0):
        raise InputError(f"{param} must be >= 0, got {v[v < 0][0]:g}", column="--values")
    if param == "alpha" and np.any((v <= 0) | (v >= 1)):
        bad = v[(v <= 0) | (v >= 1)][0]
        raise InputError(f"alpha must lie in (0, 1), got {bad:g}", column="--values")
    if param == "price_scale" and np.any(v <= 0):
        raise InputError(f"price_scale must be > 0, got {v[v <= 0][0]:g}", column="--values")
    if param == "target_scale" and not has_target:
        raise InputError("target_scale needs a target (--target)", column="--param")


def parse_values(text: str) -> np.ndarray:
    """``"a:b:n"`` -> n values from a to b inclusive (``numpy.linspace``); ``"v1,v2,..."`` -> the list.

    Raises :class:`InputError` naming ``--values``.
    """
    s = text.strip()
    try:
        if ":" in s:
            parts = s.split(":")
            if len(parts) != 3:
                raise ValueError
            a, b = float(parts[0]), float(parts[1])
            n = parts[2].strip()
            if not n.isdigit() or int(n) < 1:
                raise InputError(f"the count n in a:b:n must be a positive integer, got {n!r}", column="--values")
            if not (math.isfinite(a) and math.isfinite(b)):
                raise InputError(f"the ends of {text!r} must be finite", column="--values")
            return np.linspace(a, b, int(n))
        vals = np.array([float(x) for x in s.split(",")], dtype=np.float64)
    except InputError:
        raise
    except ValueError:
        raise InputError(
            f"expected a:b:n (n values from a to b inclusive) or a comma list of numbers, got {text!r}",
            column="--values",
        ) from None
    return vals


def sweep(
    fleet: Fleet,
    market: Market,
    settings: Settings,
    target: np.ndarray | None,
    param: str,
    values: np.ndarray,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
) -> tuple[pd.DataFrame, BatchResult]:
    """Solve the problem for every value of ``param`` in one vmapped call.

    Returns the table (one row per value: ``param`` and :data:`SWEEP_COLUMNS`; ``expected_profit_eur`` =
    expected revenue - degradation) and the raw :class:`BatchResult`.
    """
    values = np.asarray(values, dtype=np.float64)
    batch = build_batch(fleet, market, settings, target, param, values)
    res = solve_batch(*batch, tol=tol, max_iter=max_iter)
    table = pd.DataFrame(
        {
            param: values,
            "objective_eur": res.objective_eur,
            "expected_revenue_eur": res.expected_revenue_eur,
            "degradation_eur": res.degradation_eur,
            "expected_profit_eur": res.expected_revenue_eur - res.degradation_eur,
            "cvar_eur": res.cvar_eur,
            "converged": res.converged,
            "status": res.status,
            "iterations": res.iterations,
            "coupling_residual_mw": res.coupling_residual_mw,
        }
    )
    return table, res
