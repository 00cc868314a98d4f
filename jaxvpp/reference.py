"""Independent reference solutions with cvxpy (Clarabel, or HiGHS for LPs), an exact discrete CVaR and a dense
OSQP-form QP.

Written directly from the model (see :mod:`jaxvpp.problem`), sharing no formulation code with the JAX
solvers, so that it can check them. For battery ``i``, steps ``t = 1..T`` of ``dt`` hours and scenarios
``k = 1..K`` with prices ``pi_kt`` (EUR/MWh) and probabilities ``w_k``:

* variables ``c_t, d_t >= 0`` (MW), ``p_t = d_t - c_t``; ``c_t, d_t <= P``; ``|p_t - p_{t-1}| <= R dt`` (t >= 2,
  only for finite ``R``);
* state-of-charge variables ``e_t`` (MWh) with the recursion ``e_t = e_{t-1} + dt (eta_c c_t - d_t / eta_d)``
  from ``e_0 = soc_initial E``, ``soc_min E <= e_t <= soc_max E``, ``e_T >= e_0`` (the recursion keeps every
  row sparse; the cumulative sum ``e_t = e_0 + dt sum_{s<=t} (...)`` would make the energy rows dense);
* ``Rev_k = dt sum_t pi_kt p_t``, ``Loss_k = -Rev_k`` (baseline "zero") or ``E[Rev] - Rev_k`` ("expected");
* ``CVaR = min_eta eta + (1/alpha) sum_k w_k max(Loss_k - eta, 0)`` with slacks ``u_k >= Loss_k - eta, u_k >= 0``;
* minimise ``-E[Rev] + lambda CVaR + deg dt sum_t (c_t + d_t) + (q/2) dt sum_t (c_t^2 + d_t^2)``.

Batteries with ``lambda = 0`` get no ``eta``/``u`` variables (they would form a cost-free unbounded ray), and
zero-probability scenarios are left out of the CVaR for the same reason; neither changes the optimum.

**Coupling price convention.** With a fleet target ``sum_i p_it = target_t`` the reported
``coupling_price_eur_per_mwh[t]`` is the price ``y_t`` (EUR/MWh) such that each battery, solving alone with the
extra objective term ``-y_t dt p_t`` (i.e. ``linear_price = -y dt``), reproduces its coupled schedule. It is
like an extra market price: positive prices ask for more injection. Equivalently
``y_t = (1/dt) d(optimal fleet objective)/d(target_t)``: the marginal cost, in EUR per MWh, of raising the
target at step ``t``.

**Solvers.** ``solver="clarabel"`` (default; interior point, LP and QP) or, for the LP case (every
``quadratic_cost_eur_per_mw2h`` zero and no proximal term), ``"highs-ipx"`` (HiGHS's interior point IPX,
with its crossover to a vertex) and ``"highs-simplex"`` (HiGHS's dual simplex), through cvxpy's HIGHS
interface. Their tolerances: :data:`CLARABEL_OPTIONS`, :data:`HIGHS_OPTIONS`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import cvxpy as cp
import numpy as np

from jaxvpp.errors import InfeasibleTargetError
from jaxvpp.problem import FLEET_COLUMNS, Fleet, Market, Settings

#: Clarabel settings used by default (tight: the reference must be accurate to well below 1e-6).
CLARABEL_OPTIONS: dict[str, float | int] = dict(
    tol_gap_abs=1e-10,
    tol_gap_rel=1e-10,
    tol_feas=1e-10,
    tol_ktratio=1e-8,
    max_iter=400,
)

#: The solvers of the reference: Clarabel (LP and QP) and HiGHS's interior point and simplex (LP only).
SOLVERS: tuple[str, ...] = ("clarabel", "highs-ipx", "highs-simplex")

#: HiGHS settings used by default for ``"highs-ipx"`` / ``"highs-simplex"`` (the ``solver`` entry is set by the
#: choice; IPX's crossover, HiGHS's default, ends at a vertex as accurate as the simplex's).
HIGHS_OPTIONS: dict[str, float | int | str] = dict(
    run_crossover="on",
    primal_feasibility_tolerance=1e-9,
    dual_feasibility_tolerance=1e-9,
    ipm_optimality_tolerance=1e-10,
)
_HIGHS_ALGORITHM = {"highs-ipx": "ipx", "highs-simplex": "simplex"}


# ----------------------------------------------------------------------------------------------- helpers
def _fleet_arrays(fleet: Fleet) -> dict[str, np.ndarray]:
    """Fleet columns as float64 numpy arrays of shape (N,)."""
    return {c: np.atleast_1d(np.asarray(getattr(fleet, c), dtype=np.float64)) for c in FLEET_COLUMNS}


def _market_arrays(market: Market) -> tuple[np.ndarray, np.ndarray]:
    prices = np.atleast_2d(np.asarray(market.prices, dtype=np.float64))
    w = np.atleast_1d(np.asarray(market.probabilities, dtype=np.float64))
    if prices.ndim != 2 or prices.shape[0] != w.shape[0]:
        raise ValueError(f"prices must be (K, T) with K = len(probabilities); got {prices.shape} and {w.shape}")
    return prices, w


def _loss_matrix(prices: np.ndarray, w: np.ndarray, settings: Settings) -> np.ndarray:
    """``G`` (T, K) with ``Loss_k = p @ G[:, k]`` (EUR, p in MW)."""
    dt = settings.dt_hours
    if settings.baseline == "expected":
        return dt * (w @ prices - prices).T
    return -dt * prices.T


def cvar(losses: np.ndarray, probabilities: np.ndarray, alpha: float) -> np.ndarray | float:
    """Exact CVaR at tail probability ``alpha`` of discrete losses (EUR), by the sorted-tail formula.

    ``losses`` has shape ``(..., K)``; ``probabilities`` ``(K,)`` (>= 0, summing to 1). The largest losses are
    taken until their probability adds up to ``alpha`` (the last one partially), divided by ``alpha``. Equals
    the Rockafellar-Uryasev minimum. Returns a float for 1-D input.
    """
    L = np.asarray(losses, dtype=np.float64)
    w = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-L, axis=-1, kind="stable")
    Ls = np.take_along_axis(L, order, axis=-1)
    ws = w[order]
    before = np.cumsum(ws, axis=-1) - ws
    take = np.clip(alpha - before, 0.0, ws)
    out = np.sum(Ls * take, axis=-1) / alpha
    return float(out) if out.ndim == 0 else out


def value_at_risk(losses: np.ndarray, probabilities: np.ndarray, alpha: float) -> np.ndarray | float:
    """The smallest loss level ``v`` with ``P(Loss >= v) >= alpha`` (EUR): a minimiser ``eta`` of the RU formula."""
    L = np.asarray(losses, dtype=np.float64)
    w = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-L, axis=-1, kind="stable")
    Ls = np.take_along_axis(L, order, axis=-1)
    cum = np.cumsum(w[order], axis=-1)
    j = np.argmax(cum >= alpha * (1 - 1e-12), axis=-1)
    out = np.take_along_axis(Ls, np.asarray(j)[..., None], axis=-1)[..., 0]
    return float(out) if out.ndim == 0 else out


def energy_mwh(fleet: Fleet, settings: Settings, charge: np.ndarray, discharge: np.ndarray) -> np.ndarray:
    """Stored energy ``e_t`` after each step (MWh), shape like ``charge`` ((N, T) or (T,))."""
    fl = _fleet_arrays(fleet)
    c, d = np.asarray(charge, dtype=np.float64), np.asarray(discharge, dtype=np.float64)
    squeeze = c.ndim == 1
    c, d = np.atleast_2d(c), np.atleast_2d(d)
    e0 = fl["soc_initial"] * fl["capacity_mwh"]
    flow = fl["eta_charge"][:, None] * c - d / fl["eta_discharge"][:, None]
    e = e0[:, None] + settings.dt_hours * np.cumsum(flow, axis=1)
    return e[0] if squeeze else e


def evaluate_schedule(
    fleet: Fleet, market: Market, settings: Settings, charge: np.ndarray, discharge: np.ndarray
) -> dict[str, np.ndarray]:
    """The model's objective terms for given schedules (numpy, exact CVaR), per battery.

    ``charge``/``discharge`` (MW) of shape (N, T). Returns arrays (N,): ``objective_eur``,
    ``expected_revenue_eur``, ``cvar_eur``, ``var_eur`` (the RU minimiser eta), ``degradation_eur``,
    ``quadratic_cost_eur``, plus ``revenue_eur`` (N, K) and ``soc`` (N, T, MWh).
    """
    fl = _fleet_arrays(fleet)
    prices, w = _market_arrays(market)
    dt = settings.dt_hours
    c, d = np.atleast_2d(np.asarray(charge, np.float64)), np.atleast_2d(np.asarray(discharge, np.float64))
    p = d - c
    rev = dt * p @ prices.T
    er = rev @ w
    loss = p @ _loss_matrix(prices, w, settings)
    cv = np.asarray(cvar(loss, w, settings.alpha)).reshape(-1)
    var = np.asarray(value_at_risk(loss, w, settings.alpha)).reshape(-1)
    deg = fl["degradation_eur_per_mwh"] * dt * np.sum(c + d, axis=1)
    quad = 0.5 * fl["quadratic_cost_eur_per_mw2h"] * dt * np.sum(c**2 + d**2, axis=1)
    obj = -er + fl["risk_weight"] * cv + deg + quad
    return dict(
        objective_eur=obj,
        expected_revenue_eur=er,
        cvar_eur=cv,
        var_eur=var,
        degradation_eur=deg,
        quadratic_cost_eur=quad,
        revenue_eur=rev,
        soc=energy_mwh(fleet, settings, c, d),
    )


def _check_solver(solver: str, fl: dict[str, np.ndarray], quadratic_terms: bool = False) -> None:
    """Refuse unknown solvers, and HiGHS on a problem that is not an LP."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}; got {solver!r}")
    if solver == "clarabel":
        return
    q = fl["quadratic_cost_eur_per_mw2h"]
    if np.any(q != 0):
        bad = np.flatnonzero(q != 0)
        raise ValueError(
            f"solver={solver!r} solves the LP case only: quadratic_cost_eur_per_mw2h must be 0, but "
            f"{bad.size} of {q.size} batteries have q != 0 (first: battery {int(bad[0])}, q = {q[bad[0]]:g} "
            "EUR/(MW^2 h)); use solver='clarabel'"
        )
    if quadratic_terms:
        raise ValueError(f"solver={solver!r} solves the LP case only: no prox_weight term; use solver='clarabel'")


def _solve(prob: cp.Problem, options: dict[str, Any] | None, solver: str = "clarabel") -> None:
    if solver == "clarabel":
        opts = dict(CLARABEL_OPTIONS)
        opts.update(options or {})
        prob.solve(solver=cp.CLARABEL, **opts)
        return
    highs = dict(HIGHS_OPTIONS)
    highs.update(options or {})
    highs["solver"] = _HIGHS_ALGORITHM[solver]
    # "solver" is also an argument of Problem.solve: cvxpy takes HiGHS's own options nested in highs_options
    prob.solve(solver=cp.HIGHS, highs_options=highs)


# ----------------------------------------------------------------------------------------------- model
class _Model:
    """The stacked cvxpy model of N batteries (vectorised: one (N, T) variable per quantity)."""

    def __init__(
        self,
        fl: dict[str, np.ndarray],
        prices: np.ndarray,
        w: np.ndarray,
        settings: Settings,
        *,
        target: np.ndarray | None = None,
        linear_price: np.ndarray | None = None,
        prox_weight: np.ndarray | None = None,
        prox_center: np.ndarray | None = None,
    ) -> None:
        n = fl["capacity_mwh"].shape[0]
        K, T = prices.shape
        dt, alpha = settings.dt_hours, settings.alpha
        col = {k: v[:, None] for k, v in fl.items()}

        def full(a: np.ndarray) -> np.ndarray:  # (N, 1) -> (N, T) constant
            return np.broadcast_to(a, (n, T)).copy()

        self.C = C = cp.Variable((n, T), nonneg=True, name="charge")
        self.D = D = cp.Variable((n, T), nonneg=True, name="discharge")
        P = D - C
        cons: list[cp.Constraint] = [C <= full(col["power_mw"]), D <= full(col["power_mw"])]
        # state of charge after each step (MWh) by the recursion e_t = e_(t-1) + dt (eta_c c_t - d_t / eta_d)
        e0 = col["soc_initial"] * col["capacity_mwh"]
        self.E = E = cp.Variable((n, T), name="soc")
        flow = cp.multiply(full(col["eta_charge"]), C) - cp.multiply(full(1.0 / col["eta_discharge"]), D)
        cons.append(E[:, :1] == e0 + dt * flow[:, :1])
        if T >= 2:
            cons.append(E[:, 1:] == E[:, :-1] + dt * flow[:, 1:])
        cons += [
            E >= full(col["soc_min"] * col["capacity_mwh"]),
            E <= full(col["soc_max"] * col["capacity_mwh"]),
            E[:, T - 1] >= e0[:, 0],
        ]
        ramp = fl["ramp_mw_per_h"]
        lim = np.flatnonzero(np.isfinite(ramp))
        if T >= 2 and lim.size:
            Pl = P[lim, :] if lim.size < n else P
            step = Pl[:, 1:] - Pl[:, :-1]
            bound = np.broadcast_to((ramp[lim] * dt)[:, None], (lim.size, T - 1)).copy()
            cons += [step <= bound, step >= -bound]

        pbar = w @ prices  # expected price (T,)
        obj_terms = [-dt * cp.sum(P @ pbar)]
        deg = fl["degradation_eur_per_mwh"]
        if np.any(deg != 0):
            obj_terms.append(cp.sum(cp.multiply(full(col["degradation_eur_per_mwh"] * dt), C + D)))
        qc = fl["quadratic_cost_eur_per_mw2h"]
        if np.any(qc != 0):
            qm = full(col["quadratic_cost_eur_per_mw2h"] * dt / 2)
            obj_terms.append(cp.sum(cp.multiply(qm, cp.square(C))) + cp.sum(cp.multiply(qm, cp.square(D))))

        # CVaR (Rockafellar-Uryasev) for batteries with lambda > 0, scenarios with w > 0.
        self.risky = risky = np.flatnonzero(fl["risk_weight"] > 0)
        pos = np.flatnonzero(w > 0)
        self.eta = None
        if risky.size:
            G = _loss_matrix(prices, w, settings)[:, pos]  # (T, K+)
            Pr = P[risky, :] if risky.size < n else P
            loss = Pr @ G  # (nr, K+)
            self.eta = eta = cp.Variable((risky.size, 1), name="eta")
            U = cp.Variable((risky.size, pos.size), nonneg=True, name="u")
            cons.append(U >= loss - eta @ np.ones((1, pos.size)))
            cvar_expr = eta[:, 0] + (1.0 / alpha) * (U @ w[pos])
            obj_terms.append(fl["risk_weight"][risky] @ cvar_expr)

        if linear_price is not None:
            obj_terms.append(cp.sum(cp.multiply(np.asarray(linear_price, np.float64).reshape(n, T), P)))
        if prox_weight is not None:
            pw = np.broadcast_to(np.asarray(prox_weight, np.float64), (n, T)).copy()
            pc = (
                np.zeros((n, T))
                if prox_center is None
                else np.broadcast_to(np.asarray(prox_center, np.float64), (n, T)).copy()
            )
            obj_terms.append(cp.sum(cp.multiply(pw / 2, cp.square(P - pc))))

        self.coupling = None
        if target is not None:
            self.coupling = cp.sum(P, axis=0) == np.asarray(target, np.float64)
            cons.append(self.coupling)
        self.problem = cp.Problem(
            cp.Minimize(cp.sum(cp.hstack(obj_terms)) if len(obj_terms) > 1 else obj_terms[0]), cons
        )


def _battery_slice(fleet: Fleet, index: int | None) -> Fleet:
    fl = _fleet_arrays(fleet)
    n = fl["capacity_mwh"].shape[0]
    if index is None:
        if n != 1:
            raise ValueError(f"the fleet has {n} batteries: pass index= to pick one")
        index = 0
    return Fleet(**{c: np.asarray(v[index], dtype=np.float64) for c, v in fl.items()})


def solve_battery_reference(
    fleet: Fleet,
    market: Market,
    settings: Settings,
    index: int | None = None,
    *,
    linear_price: np.ndarray | None = None,
    prox_weight: np.ndarray | float | None = None,
    prox_center: np.ndarray | None = None,
    solver: str = "clarabel",
    solver_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Solve ONE battery's problem with cvxpy + Clarabel (or HiGHS, see ``solver``).

    ``fleet`` is a single battery (scalar fields or shape (1,)) or a fleet with ``index`` picking one.
    Optional extra objective terms (T-vectors, from a coordination algorithm):
    ``+ linear_price @ p + sum_t (prox_weight_t / 2) (p_t - prox_center_t)^2`` with ``linear_price`` in EUR/MW
    (already multiplied by dt) and ``prox_weight`` in EUR/MW^2. ``solver`` is one of :data:`SOLVERS`
    (``"highs-ipx"`` / ``"highs-simplex"`` only for q = 0 and no ``prox_weight``: ``ValueError`` otherwise);
    ``solver_options`` override that solver's defaults (:data:`CLARABEL_OPTIONS` or :data:`HIGHS_OPTIONS`).

    Returns a dict: ``objective_eur`` (the full objective, extra terms included; EUR), ``model_objective_eur``
    (without the extra terms), ``charge``, ``discharge``, ``net`` (T,) MW, ``soc`` (T,) MWh (e_t after step t),
    ``eta`` (EUR; for lambda = 0 the value-at-risk of the solution), ``cvar_eur`` (exact CVaR of the solution's
    losses), ``expected_revenue_eur``, ``status`` (cvxpy status string), ``iterations``, ``solve_time_s``.
    """
    b = _battery_slice(fleet, index)
    fl = _fleet_arrays(b)
    _check_solver(solver, fl, quadratic_terms=prox_weight is not None)
    prices, w = _market_arrays(market)
    T = prices.shape[1]

    def row(a: Any) -> np.ndarray | None:
        return None if a is None else np.broadcast_to(np.asarray(a, np.float64), (T,)).reshape(1, T)

    t0 = time.perf_counter()
    m = _Model(
        fl,
        prices,
        w,
        settings,
        linear_price=row(linear_price),
        prox_weight=row(prox_weight),
        prox_center=row(prox_center),
    )
    t1 = time.perf_counter()
    _solve(m.problem, solver_options, solver)
    t2 = time.perf_counter()
    status = str(m.problem.status)
    if m.C.value is None:
        nan = np.full(T, np.nan)
        return dict(
            objective_eur=math.nan,
            model_objective_eur=math.nan,
            charge=nan,
            discharge=nan,
            net=nan,
            soc=nan,
            eta=math.nan,
            cvar_eur=math.nan,
            expected_revenue_eur=math.nan,
            status=status,
            iterations=_iterations(m.problem),
            solve_time_s=t2 - t1,
            build_time_s=t1 - t0,
        )
    c, d = np.asarray(m.C.value)[0], np.asarray(m.D.value)[0]
    ev = evaluate_schedule(b, market, settings, c[None], d[None])
    net = d - c
    extra = 0.0
    if linear_price is not None:
        extra += float(row(linear_price)[0] @ net)
    if prox_weight is not None:
        pc = np.zeros(T) if prox_center is None else row(prox_center)[0]
        extra += float(0.5 * row(prox_weight)[0] @ (net - pc) ** 2)
    eta = float(m.eta.value[0, 0]) if m.eta is not None else float(ev["var_eur"][0])
    return dict(
        objective_eur=float(ev["objective_eur"][0]) + extra,
        model_objective_eur=float(ev["objective_eur"][0]),
        solver_objective_eur=float(m.problem.value),
        charge=c,
        discharge=d,
        net=net,
        soc=ev["soc"][0],
        eta=eta,
        cvar_eur=float(ev["cvar_eur"][0]),
        expected_revenue_eur=float(ev["expected_revenue_eur"][0]),
        status=status,
        iterations=_iterations(m.problem),
        solve_time_s=t2 - t1,
        build_time_s=t1 - t0,
    )


def _iterations(prob: cp.Problem) -> int:
    stats = prob.solver_stats
    return int(stats.num_iters) if stats is not None and stats.num_iters is not None else 0


def _infeasible_steps(
    fl: dict[str, np.ndarray],
    prices: np.ndarray,
    w: np.ndarray,
    settings: Settings,
    target: np.ndarray,
    tol: float = 1e-6,
    solver: str = "clarabel",
) -> tuple[list[int], np.ndarray]:
    """Steps where the closest achievable fleet output (min sum_t |gap_t|) misses the target, and the gap (MW)."""
    m = _Model(fl, prices, w, settings)
    gap = cp.Variable(prices.shape[1])
    fleet_sum = cp.sum(m.D - m.C, axis=0)
    prob = cp.Problem(cp.Minimize(cp.norm1(gap)), [c for c in m.problem.constraints] + [fleet_sum + gap == target])
    _solve(prob, None, solver)  # an LP: every solver takes it
    g = np.asarray(gap.value) if gap.value is not None else np.full(prices.shape[1], np.nan)
    scale = max(1.0, float(np.max(np.abs(target))))
    steps = [int(t) for t in np.flatnonzero(~(np.abs(g) <= tol * scale))]
    return steps, g


def solve_fleet_reference(
    fleet: Fleet,
    market: Market,
    settings: Settings,
    target: np.ndarray | None = None,
    *,
    mode: str = "stacked",
    solver: str = "clarabel",
    solver_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Solve the whole fleet with cvxpy + Clarabel (or HiGHS), optionally coupled by ``sum_i p_it = target_t`` (MW).

    ``mode="stacked"``: one vectorised cvxpy problem for all batteries (with the coupling if ``target`` given);
    ``mode="loop"``: each battery solved on its own in a Python loop (no target allowed). ``solver`` is one of
    :data:`SOLVERS`; the HiGHS ones take the LP case only (every ``quadratic_cost_eur_per_mw2h`` zero, else
    ``ValueError``). ``solver_options`` override that solver's defaults.

    Returns a dict: ``charge``, ``discharge``, ``net`` (N, T) MW; ``soc`` (N, T) MWh; per battery (N,)
    ``objective_per_battery_eur``, ``expected_revenue_eur``, ``cvar_eur``, ``eta``; totals ``objective_eur``,
    ``total_net_mw`` (T,); ``coupling_price_eur_per_mwh`` (T,) when a target is given (see the module docstring
    for the sign convention), else ``None``; ``status`` ("optimal" when every solve was), ``iterations``
    (total), ``build_time_s``, ``solve_time_s`` (in the solver), ``wall_time_s`` and ``solver``.
    Raises :class:`InfeasibleTargetError` (with the 0-based offending steps) if the target cannot be met.
    """
    if mode not in ("stacked", "loop"):
        raise ValueError(f"mode must be 'stacked' or 'loop', got {mode!r}")
    t_start = time.perf_counter()
    fl = _fleet_arrays(fleet)
    _check_solver(solver, fl)
    prices, w = _market_arrays(market)
    n, T = fl["capacity_mwh"].shape[0], prices.shape[1]
    tgt = None
    if target is not None:
        tgt = np.asarray(target, dtype=np.float64).reshape(-1)
        if tgt.shape != (T,):
            raise ValueError(f"target has {tgt.size} steps, the market {T}")
        if mode == "loop":
            raise ValueError("mode='loop' solves batteries independently and cannot take a target")

    if mode == "loop":
        c, d = np.empty((n, T)), np.empty((n, T))
        eta = np.empty(n)
        statuses, iters, build, solve = [], 0, 0.0, 0.0
        for i in range(n):
            r = solve_battery_reference(fleet, market, settings, i, solver=solver, solver_options=solver_options)
            c[i], d[i], eta[i] = r["charge"], r["discharge"], r["eta"]
            statuses.append(r["status"])
            iters += r["iterations"]
            build += r["build_time_s"]
            solve += r["solve_time_s"]
        bad = [s for s in statuses if s != "optimal"]
        status = "optimal" if not bad else bad[0]
        price = None
    else:
        t0 = time.perf_counter()
        m = _Model(fl, prices, w, settings, target=tgt)
        t1 = time.perf_counter()
        _solve(m.problem, solver_options, solver)
        t2 = time.perf_counter()
        status = str(m.problem.status)
        comp = float(getattr(m.problem, "compilation_time", 0.0) or 0.0)
        build = (t1 - t0) + comp
        solve = (t2 - t1) - comp
        iters = _iterations(m.problem)
        # every battery's own problem is bounded and feasible (idling is), so "infeasible or unbounded" (HiGHS's
        # presolve) means infeasible here
        if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE, cp.settings.INFEASIBLE_OR_UNBOUNDED) and tgt is not None:
            steps, gap = _infeasible_steps(fl, prices, w, settings, tgt, solver=solver)
            worst = int(np.nanargmax(np.abs(gap))) if np.any(np.isfinite(gap)) else -1
            msg = f"the fleet cannot follow the target at {len(steps)} of {T} steps" + (
                f"; largest gap {gap[worst]:+.6g} MW at step {worst} (0-based)" if worst >= 0 else ""
            )
            raise InfeasibleTargetError(msg, steps)
        if m.C.value is None:
            nan = np.full((n, T), np.nan)
            return dict(
                charge=nan,
                discharge=nan,
                net=nan,
                soc=nan,
                objective_eur=math.nan,
                objective_per_battery_eur=np.full(n, np.nan),
                expected_revenue_eur=np.full(n, np.nan),
                cvar_eur=np.full(n, np.nan),
                eta=np.full(n, np.nan),
                total_net_mw=np.full(T, np.nan),
                coupling_price_eur_per_mwh=None if tgt is None else np.full(T, np.nan),
                status=status,
                iterations=iters,
                build_time_s=build,
                solve_time_s=solve,
                wall_time_s=time.perf_counter() - t_start,
                solver=solver,
            )
        c, d = np.asarray(m.C.value), np.asarray(m.D.value)
        eta = np.full(n, np.nan)
        if m.eta is not None:
            eta[m.risky] = np.asarray(m.eta.value)[:, 0]
        price = None
        if m.coupling is not None:
            # cvxpy's equality dual y has d f*/d target = -y (checked by a finite-difference test); our price is
            # the marginal cost (1/dt) d f*/d target = -y / dt.
            price = _COUPLING_SIGN * np.asarray(m.coupling.dual_value, dtype=np.float64).reshape(T) / settings.dt_hours
    ev = evaluate_schedule(fleet, market, settings, c, d)
    no_risk = ~np.isfinite(eta)
    eta[no_risk] = ev["var_eur"][no_risk]
    return dict(
        charge=c,
        discharge=d,
        net=d - c,
        soc=ev["soc"],
        objective_eur=float(np.sum(ev["objective_eur"])),
        objective_per_battery_eur=ev["objective_eur"],
        expected_revenue_eur=ev["expected_revenue_eur"],
        cvar_eur=ev["cvar_eur"],
        eta=eta,
        total_net_mw=np.sum(d - c, axis=0),
        coupling_price_eur_per_mwh=price,
        status=status,
        iterations=iters,
        build_time_s=build,
        solve_time_s=solve,
        wall_time_s=time.perf_counter() - t_start,
        solver=solver,
    )


_COUPLING_SIGN = -1.0  # see the coupling price convention in the module docstring


# ----------------------------------------------------------------------------------------------- dense QP
def dense_qp(fleet: Fleet, market: Market, settings: Settings, index: int | None = None) -> dict[str, Any]:
    """One battery's problem as dense matrices in OSQP form ``min 1/2 x'Px + q'x  s.t.  l <= A x <= u``.

    ``x = (c_1..c_T, d_1..d_T, eta, u_1..u_K)`` (MW, MW, EUR, EUR). Rows of ``A``: the box on ``c`` ([0, P]),
    ``d`` ([0, P]), ``eta`` (free; fixed to 0 when lambda = 0) and ``u`` ([0, inf); fixed to 0 when lambda = 0
    or w_k = 0), the energy rows ``e_t - e_0`` (t = 1..T, the last with floor 0 for ``e_T >= e_0``), the ramp rows
    ``p_t - p_{t-1}`` (only for finite R) and the CVaR rows ``u_k + eta - Loss_k >= 0``. Infinite bounds are
    ``+-inf``. The objective has no constant: ``1/2 x'Px + q'x`` is the model objective in EUR.

    Returns a dict with ``P``, ``q``, ``A``, ``l``, ``u`` (numpy), ``num_steps``, ``num_scenarios`` and what
    :func:`dense_qp_objective` needs.
    """
    b = _battery_slice(fleet, index)
    fl = {k: float(v[0]) for k, v in _fleet_arrays(b).items()}
    prices, w = _market_arrays(market)
    K, T = prices.shape
    dt, alpha = settings.dt_hours, settings.alpha
    nx = 2 * T + 1 + K
    ic, id_, ie, iu = slice(0, T), slice(T, 2 * T), 2 * T, slice(2 * T + 1, nx)
    lam, E = fl["risk_weight"], fl["capacity_mwh"]
    pbar = w @ prices
    G = _loss_matrix(prices, w, settings)

    Pm = np.zeros((nx, nx))
    Pm[np.arange(2 * T), np.arange(2 * T)] = fl["quadratic_cost_eur_per_mw2h"] * dt
    q = np.zeros(nx)
    q[ic] = dt * pbar + fl["degradation_eur_per_mwh"] * dt
    q[id_] = -dt * pbar + fl["degradation_eur_per_mwh"] * dt
    q[ie] = lam
    q[iu] = lam * w / alpha

    rows, lo, hi = [], [], []
    box = np.eye(nx)
    rows.append(box)
    u_hi = np.where((lam > 0) & (w > 0), np.inf, 0.0)
    lo.append(np.concatenate([np.zeros(2 * T), [-np.inf if lam > 0 else 0.0], np.zeros(K)]))
    hi.append(np.concatenate([np.full(2 * T, fl["power_mw"]), [np.inf if lam > 0 else 0.0], u_hi]))

    e0 = fl["soc_initial"] * E
    Lt = np.tril(np.ones((T, T)))
    Ae = np.zeros((T, nx))
    Ae[:, ic] = dt * fl["eta_charge"] * Lt
    Ae[:, id_] = -dt / fl["eta_discharge"] * Lt
    le = np.full(T, fl["soc_min"] * E - e0)
    le[-1] = max(fl["soc_min"] * E, e0) - e0
    rows.append(Ae)
    lo.append(le)
    hi.append(np.full(T, fl["soc_max"] * E - e0))

    R = fl["ramp_mw_per_h"]
    if T >= 2 and math.isfinite(R):
        Dm = np.zeros((T - 1, T))
        Dm[np.arange(T - 1), np.arange(1, T)] = 1.0
        Dm[np.arange(T - 1), np.arange(T - 1)] = -1.0
        Ar = np.zeros((T - 1, nx))
        Ar[:, ic], Ar[:, id_] = -Dm, Dm
        rows.append(Ar)
        lo.append(np.full(T - 1, -R * dt))
        hi.append(np.full(T - 1, R * dt))

    Ac = np.zeros((K, nx))
    Ac[:, ic] = G.T  # -Loss_k = -G[:, k] . (d - c)  ->  +G on c, -G on d
    Ac[:, id_] = -G.T
    Ac[:, ie] = 1.0
    Ac[np.arange(K), 2 * T + 1 + np.arange(K)] = 1.0
    active = (lam > 0) & (w > 0)
    rows.append(Ac)
    lo.append(np.where(active, 0.0, -np.inf))
    hi.append(np.full(K, np.inf))

    return dict(
        P=Pm,
        q=q,
        A=np.vstack(rows),
        l=np.concatenate(lo),
        u=np.concatenate(hi),
        num_steps=T,
        num_scenarios=K,
        battery=b,
        market=Market(prices=prices, probabilities=w),
        settings=settings,
    )


def dense_qp_split(qp: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    """Split a solution vector ``x`` of :func:`dense_qp` into ``charge``, ``discharge`` (T,) MW, ``eta``, ``u``."""
    T, K = qp["num_steps"], qp["num_scenarios"]
    x = np.asarray(x, dtype=np.float64)
    return dict(charge=x[:T], discharge=x[T : 2 * T], eta=float(x[2 * T]), u=x[2 * T + 1 : 2 * T + 1 + K])


def dense_qp_objective(qp: dict[str, Any], x: np.ndarray, *, exact: bool = True) -> float:
    """The objective in EUR of a solution ``x`` of :func:`dense_qp` (e.g. from OSQP).

    ``exact=True`` (default) evaluates the model at the schedule ``(c, d)`` in ``x`` with the exact CVaR, so an
    inexact ``eta``/``u`` does not matter; ``exact=False`` returns ``1/2 x'Px + q'x`` as is.
    """
    x = np.asarray(x, dtype=np.float64)
    if not exact:
        return float(0.5 * x @ qp["P"] @ x + qp["q"] @ x)
    s = dense_qp_split(qp, x)
    ev = evaluate_schedule(qp["battery"], qp["market"], qp["settings"], s["charge"][None], s["discharge"][None])
    return float(ev["objective_eur"][0])
