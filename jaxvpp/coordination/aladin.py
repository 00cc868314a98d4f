"""Interior-point ALADIN: coordinating the fleet to a community target without sharing private data.

**The problem.** Every battery ``i`` minimises its own risk-aware cost ``f_i(x_i)`` (a convex QP, see
:mod:`jaxvpp.battery`) subject to its private constraints ``G_i x_i + s_i = h_i, s_i >= 0``, and the fleet must
meet the community target at every step: ``sum_i p_it = target_t`` (MW), where ``p_i = S_i x_i`` is the
battery's net power. The coupling constraint has a multiplier ``lam`` (T,), EUR per MW of ``p_t``; the
coupling price the community pays is ``-lam / dt`` (EUR/MWh).

**One iteration.** ALADIN (augmented Lagrangian based alternating direction inexact Newton) alternates work
the batteries do on their own with a small coupled solve at an aggregator that sees only what they send.
In this interior-point form every battery takes ONE primal-dual Newton step on its own barrier KKT system
(the inexact local solve): it factors its condensed KKT matrix ``K_i`` (with the barrier weights
``W_i = Z_i / S_i``), and sends the aggregator an :class:`~jaxvpp.coordination.aggregator.AgentMessage`: the
curvature ``M_i = S_i K_i^-1 S_i'`` (T x T: how its net power answers a price step), the net-power step
``v_i`` it would take at the current multiplier, and its current net power. The aggregator solves the
T x T system ``(sum_i M_i) dlam = (sum_i p_i - target) + sum_i v_i`` for the multiplier step and sends
``dlam`` back; each battery recovers its own step from it with the SAME factor. Together this is exactly
one Newton step on the whole coupled KKT system (the aggregator's system is its Schur complement on the
coupling rows), computed without any battery revealing its parameters, constraints or prices.

**Step control.** The direction is Mehrotra's predictor-corrector: an affine (predictor) solve, then a
corrector with centring, where every battery sets its own centring from its own affine step (a
weighted central path: batteries' scaled units differ), then Gondzio's centrality correctors, each a full
coupled solve with the same factorisations. The corrector's coupled solve (the direction taken) is refined
iteratively against the residuals of the whole coupled system; a second centrality corrector is solved only
where the first lengthened the step. One fleet-wide step length moves the multiplier and the batteries:
far from the optimum it is the longest step that all but a small share of the batteries can take
(fraction to the boundary), and those few stragglers each take their own shorter one, so the fleet does not
wait for its slowest battery; near the optimum it is the step every battery can take. The iteration
stops when the largest relative primal and dual residual, the fleet's relative duality gap and the
coupling residual (relative to ``1 + max|target|``) are all below ``tol``. Near the end, where the
factorisations lose the accuracy the coupled solve needs, a step that makes an almost converged iterate
much worse is rejected and retried with stronger centring, and a run that stops improving at an acceptable
accuracy ends there; the best iterate seen is what is reported.

**Elastic coupling.** The aggregator solves the coupling in elastic form, ``sum_i p_i + u - w = target``
with its own variables ``u, w >= 0`` priced at ``rho`` per MW (an exact penalty, see
:mod:`jaxvpp.coordination.aggregator`): the multiplier then stays in ``|lam| < rho``. Without it, a target
that leaves the fleet no slack (a target scaled from the fleet's own schedule, for batteries that all
have the same efficiencies and must end the day as full as they began) has an unbounded set of
multipliers, along which the iterates drifted until the batteries' factorisations lost all accuracy.
``rho`` is ten times the largest marginal value of a MW that any battery reports (once, before the first
iteration: a bound from its prices, efficiencies, risk weight and costs), so on a feasible target the
elastic variables vanish and the answer is the plain problem's. A target the fleet cannot meet ends with
the elastic problem solved and the coupling violated (``u - w != 0`` at the steps concerned).

**The code.** :func:`aladin_problem` builds the :class:`ALADINProblem` once (the fleet's QPs and scales,
the target, the tolerances, the padding weights of a sharded run, the live log's call id);
:func:`aladin_start` gives the first :class:`ALADINState` (cold, or from an :class:`ALADINWarmStart`);
:func:`aladin_step` is exactly one iteration; :func:`aladin_finish` picks the iterate to report and the
final :class:`Status`; :func:`aladin_run` is the ``lax.while_loop`` over :func:`aladin_step` followed by
:func:`aladin_finish`; and :func:`aladin_ipm` is the jitted entry point that does all four. All are pure
functions of arrays; batteries are a ``vmap`` axis, so the same program also runs with the fleet split over
devices (:mod:`jaxvpp.coordination.distributed`).

**The live log.** :func:`live_log` registers a sink (``print``, a logger's method, ...) for one run and
hands out an integer call id; passed as ``log_id``, it travels into the jitted loop as an ordinary traced
integer, and a debug callback in every iteration looks the sink up by it. A new sink therefore does not
recompile the program, and two runs at the same time, each with its own id, never mix their lines.

ADMM (:mod:`jaxvpp.coordination.admm`, exchange form) is the baseline; ``coordinate(method="centralized")``
solves the same problem with cvxpy + Clarabel (:mod:`jaxvpp.reference`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from jaxvpp.battery.ipm import initial_point, ipm_start, ipm_step, kkt_measures
from jaxvpp.battery.kernel import (
    NetFactor,
    NetSolve,
    condense_rhs,
    factor_net,
    kkt_residuals,
    max_step,
    net_curvature,
    net_solve_finish,
    net_solve_start,
    recover_u,
)
from jaxvpp.battery.qp import (
    FLEET_QP_AXES,
    BatteryQP,
    Primal,
    Scales,
    apply_G,
    apply_GT,
    apply_Q,
    build_qp,
    max_abs,
    objective,
    primal_map,
)
from jaxvpp.coordination import aggregator as agg
from jaxvpp.problem import Fleet, Market, Settings

GONDZIO_CORRECTORS = 2  #: multiple-centrality correctors per iteration
COUPLED_REFINE = 2  #: most refinement rounds of a coupled Newton solve
#: the coupled solves of an iteration that are refined (0 predictor, 1 corrector, 2+ centrality correctors).
#: Only the corrector's direction is the step taken; the predictor only sets the centring and the
#: second-order term, and a centrality corrector is kept only where it lengthens the step. Refining only
#: the corrector kept 43 iterations on the benchmark fleet at N = 1000 (with the corrector rule of
#: aladin_step: 56 against 55 at N = 10000) and saved a large part of an iteration's solves
REFINED_SOLVES = (1,)
REFINE_RTOL = 1e-3  #: a coupled solve is refined until its residual is below this fraction of its right-hand side
#: static regularisation of each battery's condensed matrix (added before the equilibration; the kernel's
#: relative regularisation comes on top). Larger than the battery solver's (1e-9): in the end game (W = z/s
#: over twenty orders of magnitude) the coupled solve's refinement contracted at 0.5 per round, or not at
#: all, with 1e-9 (first error 1e6 times the right-hand side on a T = 96 fleet), and by 0.02 or better per
#: round with 1e-7; the refinement removes the bias
FACTOR_REGULARISATION = 1e-7
#: regularisation of each battery's condensed matrix relative to its diagonal: 1e-14 on the unit diagonal of the
#: equilibrated matrix, the size of the Cholesky pivot floor. In the end game W = z/s spans thirty orders of
#: magnitude and the absolute regularisation is lost on rows weighted 1e15, where an equilibrated matrix can be
#: semidefinite up to rounding (an eigenvalue of -7e-16 was seen) and its inverse factor overflow. On the
#: warm-started 7-battery fleet of the distributed tests one run stopped at the acceptable level without it (one
#: device at 4.6e-8, or, after a change that only moved the round-off, four devices at 4.2e-8) and both converged
#: with it (1.8e-9). Larger values cost iterations: on lp at N = 1000, 35 without it and with 1e-14, 36 with
#: 1e-13, 40 with 1e-12 (qp: 33 and 39 at N = 1000 and 10000 with 1e-14, as without)
FACTOR_RELATIVE_REGULARISATION = 1e-14
#: smallest centring parameter of Mehrotra's corrector: keeps the end game centred. With 0.01 the end point moved
#: with round-off: the same fleet on one device and on four (sums in another order) ended 4e-8 apart in the
#: schedules and up to 5e-4 in the (non-unique) prices; with 0.03, 1e-13 and 2e-10 (N = 1000: 41 iterations).
#: 0.05 broke the end game of a 2-battery fleet (a coupled solve off by 4e8 times its right-hand side)
SIGMA_MIN = 3e-2
#: power of Mehrotra's centring rule ``sigma_i = (mu_aff,i / mu_i) ** SIGMA_POWER`` (Mehrotra's own is 3). The
#: fleet's step waits for its shortest battery, so centring the batteries harder lengthens it: on the
#: benchmark fleets 43 / 56 / 75 iterations at N = 1000 / 10000 / 100000 with 3, 39 / 47 / 62 with 1.5
#: (2: 36 / 53; 1.25: 51 at N = 10000), the same objectives to 3e-9 relative
SIGMA_POWER = 1.5
#: the share of the fleet's batteries that may fall behind the fleet's step while the iterate is far from the
#: optimum: the fleet steps as far as all but ``min(floor(STRAGGLER_SHARE * N), STRAGGLERS_MAX)`` batteries
#: can, and those few stragglers each take their own fraction-to-boundary step (the residuals they leave, in
#: their own dual rows and in the coupling, the next steps remove). With one step for all, the fleet waits for
#: its slowest battery, and a larger fleet has slower ones: on the benchmark fleets 39 / 47 / 62 iterations at
#: N = 1000 / 10000 / 100000 with one step, 33 / 38 / 50 with these settings. Below 50 batteries every battery
#: takes the fleet's step
STRAGGLER_SHARE = 0.02
#: the most stragglers, whatever the fleet's size: with 500 or more of them the end game's first steps (every
#: battery on the fleet's step again) fell to a few hundredths, and the runs took longer than with one step
#: (at N = 10000: 37 iterations with 300 stragglers, 38 with 200, 40 with 100, 57 with 500, 63 with 1000;
#: at N = 100000: 50 with 200, 49 with 300, 66 with 2000)
STRAGGLERS_MAX = 200.0
#: below this relative accuracy (the best iterate's merit times ``tol``) every battery takes the fleet's step,
#: so the end game is a plain interior-point one (at N = 10000 with a share of 0.01: 40 iterations with 1e-2,
#: 41 with 1e-3; at N = 1000 without a switch the end game broke down; letting the share fall with the
#: accuracy instead of a switch: 42 at N = 10000)
STRAGGLER_LEVEL = 1e-2
ACCEPTABLE_TOL = 1e-6  #: relative accuracy accepted when the end game breaks down numerically before ``tol``
STALL_ITERATIONS = 3  #: iterations without progress, once at the acceptable level, that end the loop
RECOVERY_LEVEL = 1e-4  #: below this relative accuracy a step that worsens the best iterate 100x is rejected
RECOVERY_SIGMA = 0.5  #: centring of the retried step after a rejection
MAX_REJECTIONS = 3  #: consecutive rejections that end the loop at the best iterate
START_TOL = 0.3  #: relative accuracy to which each battery solves its own problem for the cold start
START_MAX_ITER = 10  #: most battery-solver iterations of the cold start
WARM_TOL = 1e-2  #: relative accuracy of each battery's response to a warm start's multiplier
WARM_MAX_ITER = 20  #: most battery-solver iterations of a warm start
INTERIOR_FLOOR = 1e-4  #: least slack and multiplier of a starting point (scaled units)


class Status(enum.StrEnum):
    """How a coordination run ended (ALADIN and ADMM).

    A ``str`` (``Status.CONVERGED == "converged"``), with :attr:`code`, the integer the jitted loops carry
    (``ALADINState.status``, ``ADMMState.status``; :meth:`from_code` maps it back), and :attr:`message`, a
    sentence for people. Inside the ALADIN loop the code 0 means "no reason to stop yet";
    :func:`aladin_finish` turns it into the final status.
    """

    CONVERGED = (
        "converged",
        "every optimality measure met the tolerance (ALADIN: or, where round-off ended the end game first, the "
        "acceptable level ACCEPTABLE_TOL; see CoordinationResult.accuracy)",
    )
    MAX_ITER = "max_iter", "the iteration limit was reached before the tolerance was met"
    INFEASIBLE_TARGET = (
        "infeasible_target",
        "the fleet cannot meet the target: a necessary condition fails, or the coupling price diverged",
    )
    NUMERICAL_ERROR = (
        "numerical_error",
        "the iteration broke down numerically (a non-finite step, or repeated rejected steps) before reaching "
        "an acceptable accuracy",
    )

    code: int
    message: str

    def __new__(cls, value: str, message: str) -> Status:
        member = str.__new__(cls, value)
        member._value_ = value
        member.code = len(cls.__members__)
        member.message = message
        return member

    @classmethod
    def from_code(cls, code: int | Array | np.ndarray) -> Status:
        """The status whose :attr:`code` is ``code`` (a Python or array integer)."""
        return list(cls)[int(code)]


# --------------------------------------------------------------------------------------------------
# The per-battery side of an ALADIN iteration (vmapped)
# --------------------------------------------------------------------------------------------------


def coupling_map(sc: Scales, x: Primal) -> Array:
    """``S_i x_i``: the battery's net power p (MW) from its scaled variables."""
    return sc.power * (x.d - x.c)


def coupling_dual(qp: BatteryQP, sc: Scales, lam: Array) -> Primal:
    """``S~_i' lam``: the multiplier's term in the battery's scaled dual residual."""
    v = lam * sc.power / sc.money
    return Primal(-v, v, jnp.zeros_like(qp.f_eta), jnp.zeros_like(qp.fu))


def coupling_curvature(fac: NetFactor, sc: Scales) -> Array:
    """``M_i = S_i K_i^-1 S~_i'`` (T x T, MW per EUR/MW): the (p, p) block of the inverse of the battery's
    Newton matrix in its net-power coordinates (:func:`~jaxvpp.battery.kernel.net_curvature`)."""
    return (sc.power**2 / sc.money) * net_curvature(fac)


class LocalSolve(NamedTuple):
    """A battery's Newton step half done (:func:`local_solve_start`): what it needs to finish the step once the
    aggregator's multiplier step is known (:func:`local_solve_finish`)."""

    part: NetSolve  #: the forward half of the condensed solve
    r_u: Array  #: (K,) the u rows' right-hand side
    r_p: Array  #: (m,) primal residual
    r_c: Array  #: (m,) complementarity residual


def local_solve_start(
    qp: BatteryQP, fac: NetFactor, s: Array, inv_s: Array, z: Array, r_d: Primal, r_p: Array, r_c: Array
) -> tuple[LocalSolve, Array]:
    """The first half of the battery's Newton step ``Q dx + G'dz + S~' dlam = -r_d``, ``G dx + ds = -r_p``,
    ``Z ds + S dz = -r_c`` (``inv_s = 1 / s``), done before the multiplier step ``dlam`` is known.

    Returns the half-done step and the net-power part of the step at ``dlam = 0`` (scaled units), which is
    what the battery sends the aggregator (times its power scale). :func:`local_solve_finish` adds the
    multiplier's term in the same solve: the step is one condensed solve with ``K_i``'s factor, not two.
    """
    ghat = primal_map(jnp.add, r_d, apply_GT(qp, (z * r_p - r_c) * inv_s))
    r = primal_map(jnp.negative, ghat)
    part = net_solve_start(fac, condense_rhs(qp, fac.w_loss, fac.d_u, r))
    return LocalSolve(part=part, r_u=r.u, r_p=r_p, r_c=r_c), part.p


def local_solve_finish(
    qp: BatteryQP, fac: NetFactor, sc: Scales, z: Array, inv_s: Array, st: LocalSolve, dlam: Array
) -> tuple[Primal, Array, Array]:
    """The battery's Newton step ``(dx, ds, dz)`` for the aggregator's multiplier step ``dlam`` (T,), from
    :func:`local_solve_start`'s half. The multiplier enters the right-hand side as ``-S~' dlam = -E v`` with
    ``v = dlam P / money``."""
    v = dlam * sc.power / sc.money
    y = net_solve_finish(fac, st.part, -v)
    dx = recover_u(qp, fac.w_loss, fac.d_u, st.r_u, y)
    ds = -st.r_p - apply_G(qp, dx)
    return dx, ds, -(st.r_c + z * ds) * inv_s


class LocalState(NamedTuple):
    """The batteries' iterate (scaled units, leading battery axis N)."""

    x: Primal  #: primal variables
    s: Array  #: (N, m) slacks of the inequality rows
    z: Array  #: (N, m) multipliers of the inequality rows


class ALADINWarmStart(NamedTuple):
    """What a later ALADIN run needs to start from an earlier one's answer (``CoordinationResult.warm_start``)."""

    local: LocalState  #: the batteries' reported iterate (a warm start re-solves each battery's response to ``lam``)
    lam: Array  #: (T,) coupling multiplier (EUR per MW of p_t)


class History(NamedTuple):
    """Per-iteration diagnostics (arrays of length ``max_iter``; NaN after the last iteration)."""

    primal_residual: Array
    dual_residual: Array
    coupling_residual_mw: Array
    mu: Array  #: mean complementarity (ALADIN; NaN for ADMM)
    step: Array  #: step length (ALADIN: the fleet's; a few stragglers may take less); ADMM: its rho (EUR/MW^2)
    objective_eur: Array
    gap: Array  #: relative duality gap (ALADIN; NaN for ADMM)


class Measures(NamedTuple):
    """The convergence measures of one iterate."""

    primal_residual: Array  #: largest relative primal residual over the batteries
    dual_residual: Array  #: largest relative dual residual over the batteries (coupling term included)
    coupling_residual_mw: Array  #: max_t |sum_i p_it - target_t| (MW)
    gap: Array  #: the fleet's relative duality gap


class ALADINState(NamedTuple):
    """The iterate and bookkeeping of an ALADIN run (what :func:`aladin_step` maps to the next)."""

    local: LocalState  #: per battery (leading axis N)
    lam: Array  #: (T,) coupling multiplier (EUR per MW of p_t)
    iteration: Array  #: iterations taken
    status: Array  #: a :attr:`Status.code`; in the loop, 0 while there is no reason to stop
    converged: Array  #: bool: the iterate meets ``tol``
    primal_residual: Array
    dual_residual: Array
    coupling_residual_mw: Array
    gap: Array
    history: History
    best_local: LocalState  #: the iterate with the smallest merit so far (what is reported)
    best_lam: Array
    best_merit: Array  #: max(relative measures) / tol of the best iterate
    best_measures: Measures  #: the measures of the best iterate
    since_best: Array  #: iterations since the best iterate
    rejections: Array  #: consecutive rejected steps (end-game recovery)
    elastic: agg.Elastic  #: the aggregator's elastic variables (MW)
    best_elastic: agg.Elastic  #: those of the best iterate


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["qp", "sc", "target", "scale_target", "dt_hours", "rho", "weight", "n_real", "log_id"],
    meta_fields=["tol", "max_iter"],
)
@dataclasses.dataclass(frozen=True)
class ALADINProblem:
    """Everything an ALADIN iteration reads that does not change between iterations (a pytree; ``tol`` and
    ``max_iter`` are static). Built by :func:`aladin_problem`."""

    qp: BatteryQP  #: the fleet's QPs (:data:`~jaxvpp.battery.qp.FLEET_QP_AXES`: the market's matrix is shared)
    sc: Scales  #: (N,) each battery's scales between physical and solver units
    target: Array  #: (T,) the community target (MW)
    scale_target: Array  #: 1 + max|target| (MW): the coupling residual's reference
    dt_hours: Array  #: step length (hours)
    rho: Array  #: (T,) the elastic penalty (EUR per MW of p_t), :func:`~jaxvpp.coordination.aggregator.elastic_penalty`
    weight: Array | None  #: (N,) 1 a battery, 0 a padding replica (sharded run); None: all 1
    n_real: Array | None  #: sum(weight) (batteries that count); None without weights
    log_id: Array | None  #: call id of a sink registered by :func:`live_log`; None: no live log
    tol: float  #: relative tolerance of every convergence measure
    max_iter: int  #: iteration limit (the length of the history)

    @property
    def batteries(self) -> int | Array:
        """How many batteries count (N, or the real ones of a padded fleet)."""
        return self.sc.power.shape[0] if self.n_real is None else self.n_real


def aladin_problem(
    fleet: Fleet,
    market: Market,
    target_mw: Array,
    settings: Settings,
    *,
    tol: float = 1e-8,
    max_iter: int = 100,
    weight: Array | None = None,
    log_id: Array | None = None,
) -> ALADINProblem:
    """The :class:`ALADINProblem` of coordinating ``fleet`` to ``target_mw`` (T,) MW.

    ``weight`` (N,): 1 for a battery, 0 for a padding replica of one (a fleet padded to a multiple of the
    device count, :mod:`jaxvpp.coordination.distributed`); it multiplies every contribution to a sum over
    batteries, so a replica, which follows its original's trajectory exactly, changes no sum, min or max.
    ``log_id``: the call id of a :func:`live_log` (one line per iteration to its sink).
    """
    # A stays the market's one (K, T) matrix: its products with the fleet's vectors are single matrix products
    qp, sc = jax.vmap(lambda b: build_qp(b, market, settings), out_axes=(FLEET_QP_AXES, 0))(fleet)
    target = jnp.asarray(target_mw)
    bounds = jax.vmap(lambda b: marginal_value_bound(b, market, settings))(fleet)
    return ALADINProblem(
        qp=qp,
        sc=sc,
        target=target,
        scale_target=1.0 + jnp.max(jnp.abs(target)),
        dt_hours=settings.dt_hours,
        rho=agg.elastic_penalty(bounds),
        weight=weight,
        n_real=None if weight is None else jnp.sum(weight),
        log_id=log_id,
        tol=tol,
        max_iter=max_iter,
    )


def marginal_value_bound(battery: Fleet, market: Market, settings: Settings) -> Array:
    """An upper bound (T,), EUR per MW of p_t, on what one more MW of net power at a step is worth to one
    battery: the highest scenario price, scaled up by its risk weight and round-trip losses, plus its
    throughput and quadratic costs at full power (``(1 + lambda) max_k pi_kt dt / (eta_c eta_d) +
    (deg + 2 q P) dt``). What the battery sends the aggregator once, for its elastic penalty."""
    dt = settings.dt_hours
    price = jnp.max(jnp.abs(market.prices), axis=0)
    losses = battery.eta_charge * battery.eta_discharge
    costs = (battery.degradation_eur_per_mwh + 2.0 * battery.quadratic_cost_eur_per_mw2h * battery.power_mw) * dt
    return (1.0 + battery.risk_weight) * price * dt / losses + costs


def _over_fleet(f, *axes):
    """``f`` vmapped over the fleet's QP (:data:`FLEET_QP_AXES`) and further arguments with ``axes``."""
    return jax.vmap(f, in_axes=(FLEET_QP_AXES, *axes))


def _weighted(weight: Array | None, a: Array) -> Array:
    """``a`` (leading battery axis) times each battery's weight (1 real, 0 a padding replica); ``a`` itself
    without weights. Applied to every contribution to a sum over batteries."""
    return a if weight is None else a * jnp.reshape(weight, weight.shape + (1,) * (a.ndim - 1))


def _local_measures(qp, sc, st: LocalState, lam):
    pres, dres, gap = kkt_measures(qp, st.x, st.s, st.z, extra_dual=coupling_dual(qp, sc, lam))
    return pres, dres, gap


def _net_powers(pb: ALADINProblem, x: Primal) -> Array:
    """Every battery's net power (N, T) MW, weighted (only ever summed over the batteries)."""
    return _weighted(pb.weight, jax.vmap(coupling_map)(pb.sc, x))


def _fleet_objective(pb: ALADINProblem, local: LocalState) -> Array:
    """The fleet's objective (EUR)."""
    return jnp.sum(_weighted(pb.weight, pb.sc.money * _over_fleet(objective, 0)(pb.qp, local.x)))


def _measures(pb: ALADINProblem, local: LocalState, lam: Array, el: agg.Elastic):
    """Largest relative primal and dual residuals over the batteries, the fleet's relative duality gap
    (EUR, with the elastic rows', against the fleet objective: a battery with an objective near zero need not
    resolve its own relative gap to 1e-8), the coupling residual (MW, of the plain coupling) and the fleet
    objective (EUR)."""
    pres, dres, _ = _over_fleet(_local_measures, 0, 0, None)(pb.qp, pb.sc, local, lam)
    r = agg.coupling_residual(_net_powers(pb, local.x), pb.target)
    cres = jnp.max(jnp.abs(r))
    gap_eur = jnp.sum(_weighted(pb.weight, pb.sc.money * jnp.sum(local.s * local.z, axis=1)))
    gap_eur = gap_eur + sum(jnp.sum(c) for c in agg.elastic_complementarity(el, pb.rho, lam))
    obj = _fleet_objective(pb, local)
    return jnp.max(pres), jnp.max(dres), gap_eur / (1.0 + jnp.abs(obj)), cres, obj


def _elastic_residual_mw(pb: ALADINProblem, local: LocalState, el: agg.Elastic) -> Array:
    """The largest residual of the elastic coupling ``sum_i p_i + u - w = target`` (MW)."""
    return jnp.max(jnp.abs(agg.coupling_residual(_net_powers(pb, local.x), pb.target) + el.u - el.w))


def _merit(pb: ALADINProblem, pres, dres, gap, cres) -> Array:
    """The largest measure relative to its tolerance (<= 1: converged)."""
    return jnp.maximum(jnp.maximum(pres, dres), jnp.maximum(gap, cres / pb.scale_target)) / pb.tol


def _direction(pb: ALADINProblem, fac, M, cfac, local, r_d, r_p, r_c, net, tgt, D, rounds=COUPLED_REFINE):
    """Newton direction of the coupled system, refined as a whole.

    Solves, for every battery, ``Q dx + G'dz + S~' dlam = -r_d``, ``G dx + ds = -r_p``,
    ``Z ds + S dz = -r_c``, and for the fleet ``sum_i (net_i + S_i dx_i) = tgt + D dlam`` (``D``: the elastic
    variables' curvature; ``tgt`` carries their part of the right-hand side). The approximate
    solve (local step with the battery's factor, aggregator solve, local recovery with the SAME
    factor) is consistent with the curvatures ``M_i`` the batteries sent, so the recovered steps meet
    the linearised coupling exactly; iterative refinement against the residuals of the whole coupled
    system then removes the factorisation error, until the residual is below ``REFINE_RTOL`` times
    the right-hand side (at most ``rounds`` rounds, ``COUPLED_REFINE`` for the solves in
    ``REFINED_SOLVES``, none for the others; the residual is evaluated only where a further round may
    follow). (Recovering with a refined local
    solve instead was inconsistent with ``M_i``: where ``sum_i M_i`` is nearly singular the mismatch was
    amplified to tens of MW in the end game.)
    """
    qp, sc = pb.qp, pb.sc
    s, z = local.s, local.z
    inv_s = 1.0 / s
    v_start = _over_fleet(local_solve_start, 0, 0, 0, 0, 0, 0, 0)
    v_finish = _over_fleet(local_solve_finish, 0, 0, 0, 0, 0, None)
    v_dual = _over_fleet(coupling_dual, 0, None)

    def approx(rd, rp, rc, n, shift):
        half, p0 = v_start(qp, fac, s, inv_s, z, rd, rp, rc)
        msgs = agg.AgentMessage(curvature=M, gradient=_weighted(pb.weight, sc.power[:, None] * p0), net_mw=n)
        dl, _ = agg.solve_coupling(cfac, msgs, tgt + shift)
        dx, ds, dz = v_finish(qp, fac, sc, z, inv_s, half, dl)
        return dx, ds, dz, dl

    def residual(d):
        dx, ds, dz, dl = d
        e_d = primal_map(
            lambda a, b, c, e: a + b + c + e,
            r_d,
            _over_fleet(apply_Q, 0)(qp, dx),
            _over_fleet(apply_GT, 0)(qp, dz),
            v_dual(qp, sc, dl),
        )
        e_p = r_p + _over_fleet(apply_G, 0)(qp, dx) + ds
        e_c = r_c + z * ds + s * dz
        return e_d, e_p, e_c, net + _net_powers(pb, dx), D * dl

    def size(e_d, e_p, e_c, e_n, shift):
        return jnp.maximum(
            jnp.maximum(max_abs(e_d), max_abs(e_p)),
            jnp.maximum(max_abs(e_c), jnp.max(jnp.abs(jnp.sum(e_n, axis=0) - tgt - shift)) / pb.scale_target),
        )

    rhs = (r_d, r_p, r_c, net, jnp.zeros_like(tgt))
    # the norms only where they are used: a solve without refinement (rounds = 0) stops after round 0.
    # Computed in every solve, they were a dozen reductions over every battery's rows each, 3.8 of the 41 ms
    # of an iteration at N = 1000 in a profiler trace
    zero = jnp.zeros((), r_p.dtype)
    goal = lax.cond(rounds > 0, lambda: REFINE_RTOL * size(*rhs), lambda: zero)

    def more(carry):
        k, _, e = carry
        return (k == 0) | lax.cond(k <= rounds, lambda: size(*e) > goal, lambda: jnp.asarray(False))

    def refine(carry):
        # round 0 is the plain solve (from d = 0 the residual is the right-hand side); one traced copy
        # of the solve serves all rounds, which keeps the compiled program small
        k, d, e = carry
        c = approx(*e)
        d = (primal_map(jnp.add, d[0], c[0]), d[1] + c[1], d[2] + c[2], d[3] + c[3])
        # the residual only where a further round may follow
        return k + 1, d, lax.cond(k < rounds, residual, lambda _: e, d)

    d_zero = (jax.tree.map(jnp.zeros_like, r_d), jnp.zeros_like(r_p), jnp.zeros_like(r_c), jnp.zeros_like(tgt))
    return lax.while_loop(more, refine, (jnp.asarray(0), d_zero, rhs))[1]


def priced_start(
    qp: BatteryQP, sc: Scales, lam: Array, tol: float = START_TOL, max_iter: int = START_MAX_ITER
) -> LocalState:
    """Every battery's own problem at the coupling multiplier ``lam`` (T,) (its response to that price, no
    coupling) solved loosely: at most ``max_iter`` iterations of the battery solver
    (:func:`~jaxvpp.battery.ipm.ipm_step`) from its cold start (:func:`~jaxvpp.battery.ipm.initial_point`),
    a battery stopping once its relative residuals and gap are below ``tol``. ``qp`` has :data:`FLEET_QP_AXES`.

    The batteries step in lock-step (``max_iter`` is small and the loop has no gathers, so it runs as it is on
    a fleet split over devices); a finished battery keeps its iterate."""
    v = jax.vmap(coupling_dual, in_axes=(FLEET_QP_AXES, 0, None))(qp, sc, lam)
    qp = qp._replace(fc=qp.fc + v.c, fd=qp.fd + v.d)
    x0, s0, z0 = _over_fleet(initial_point)(qp)
    st = jax.vmap(ipm_start, in_axes=(FLEET_QP_AXES, 0, 0, 0, None))(qp, x0, s0, z0, tol)
    v_step = jax.vmap(lambda q, st_, r, a: ipm_step(q, st_, tol, max_iter, r, a), in_axes=(FLEET_QP_AXES, 0, None, 0))

    def live(st_):
        return ~st_.converged & (st_.iterations < max_iter)

    def body(st_):
        on = live(st_)
        return v_step(qp, st_, jnp.any(on & st_.refine), on)

    st = lax.while_loop(lambda st_: jnp.any(live(st_)), body, st)
    return LocalState(x=st.x, s=st.s, z=st.z)


def aladin_start(pb: ALADINProblem, warm_start: ALADINWarmStart | None = None) -> ALADINState:
    """The state before the first iteration: a multiplier and every battery's loosely solved response to it
    (:func:`priced_start`), slacks and multipliers floored at :data:`INTERIOR_FLOOR`.

    Cold, the multiplier is zero and each battery solves its own problem to :data:`START_TOL` (the
    uncoordinated schedule); the fleet begins near its batteries' central paths instead of at the battery
    solver's cold start (:func:`~jaxvpp.battery.ipm.initial_point`), whose first steps waited for the
    batteries that start far from theirs. With ``warm_start`` the multiplier is the earlier run's and each
    battery solves its response to it to :data:`WARM_TOL`: a centred point next to the earlier optimum. The
    earlier optimum itself, floored into the interior, is a poor interior-point start (its complementarity
    is far off centre): on the benchmark's 1000-battery fleet it took more iterations than the cold start."""
    T = pb.target.shape[0]
    if warm_start is None:
        lam0 = jnp.zeros(T)
        x0, s0, z0 = priced_start(pb.qp, pb.sc, lam0)
    else:
        lam0 = jnp.clip(warm_start.lam, -0.5 * pb.rho, 0.5 * pb.rho)  # inside the elastic bounds |lam| < rho
        x0, s0, z0 = priced_start(pb.qp, pb.sc, lam0, tol=WARM_TOL, max_iter=WARM_MAX_ITER)
    s0, z0 = jnp.maximum(s0, INTERIOR_FLOOR), jnp.maximum(z0, INTERIOR_FLOOR)
    local0 = LocalState(x=x0, s=s0, z=z0)
    el0 = agg.elastic_start(agg.coupling_residual(_net_powers(pb, x0), pb.target), pb.scale_target)
    pres, dres, gap, cres, _ = _measures(pb, local0, lam0, el0)
    nan = jnp.full(pb.max_iter, jnp.nan)
    m0 = _merit(pb, pres, dres, gap, cres)
    return ALADINState(
        local=local0,
        lam=lam0,
        iteration=jnp.asarray(0),
        status=jnp.asarray(0),
        converged=jnp.asarray(False),
        primal_residual=pres,
        dual_residual=dres,
        coupling_residual_mw=cres,
        gap=gap,
        history=History(
            primal_residual=nan,
            dual_residual=nan,
            coupling_residual_mw=nan,
            mu=nan,
            step=nan,
            objective_eur=nan,
            gap=nan,
        ),
        best_local=local0,
        best_lam=lam0,
        best_merit=jnp.where(jnp.isfinite(m0), m0, jnp.inf),
        best_measures=Measures(primal_residual=pres, dual_residual=dres, coupling_residual_mw=cres, gap=gap),
        since_best=jnp.asarray(0),
        rejections=jnp.asarray(0),
        elastic=el0,
        best_elastic=el0,
    )


def battery_factor(qp: BatteryQP, W: Array) -> NetFactor:
    """One battery's Newton matrix for row weights ``W = z / s`` factored in its net-power coordinates, with
    coordination's regularisations (:data:`FACTOR_REGULARISATION`, :data:`FACTOR_RELATIVE_REGULARISATION`)."""
    return factor_net(qp, W, FACTOR_REGULARISATION, relative=FACTOR_RELATIVE_REGULARISATION)


def aladin_step(pb: ALADINProblem, state: ALADINState) -> ALADINState:
    """One ALADIN iteration (see the module docstring): the coupled predictor, corrector and centrality
    correctors from one factorisation per battery, one fleet-wide step, the end-game guard, the history
    entry and, with ``pb.log_id``, one line of the live log.

    The iteration is taken whatever ``state.status`` says; :func:`aladin_run` decides when to stop.
    """
    qp, sc = pb.qp, pb.sc
    local, lam = state.local, state.lam
    s, z = local.s, local.z
    N = s.shape[0]
    v_dual = _over_fleet(coupling_dual, 0, None)
    r_d, r_p = _over_fleet(kkt_residuals, 0, 0, 0)(qp, local.x, s, z)
    r_d = primal_map(jnp.add, r_d, v_dual(qp, sc, lam))
    fac = _over_fleet(battery_factor, 0)(qp, z / s)
    M = _weighted(pb.weight, jax.vmap(coupling_curvature)(fac, sc))
    p_now = _net_powers(pb, local.x)
    el, rho = state.elastic, pb.rho
    D = agg.elastic_curvature(el, rho, lam)
    cfac = agg.factor_coupling(
        agg.AgentMessage(curvature=M, gradient=jnp.zeros_like(p_now), net_mw=p_now), elastic_curvature=D
    )
    comp_e = sum(agg.elastic_complementarity(el, rho, lam))  # (T,) EUR
    comp = jnp.sum(s * z, axis=1)
    rows = s.shape[1]
    mu = jnp.sum(_weighted(pb.weight, comp)) / (pb.batteries * rows)
    # after a rejected step the retry from the same point is centred harder
    sigma_min = jnp.where(state.rejections > 0, RECOVERY_SIGMA, SIGMA_MIN)
    zero_d = jax.tree.map(jnp.zeros_like, r_d)
    zero_p = jnp.zeros_like(r_p)

    def fleet_steps(ds_, dz_):
        return agg.StepMessage(jax.vmap(max_step)(s, ds_), jax.vmap(max_step)(z, dz_), comp, jnp.full(N, rows))

    def own_len(ds_, dz_):
        """Each battery's own fraction-to-boundary step (N,), used to set its centring."""
        return agg.battery_bounds(fleet_steps(ds_, dz_))

    # far from the optimum (and not retrying a rejected step) a few batteries may fall behind the fleet's step
    far = (state.best_merit * pb.tol > STRAGGLER_LEVEL) & (state.rejections == 0)
    stragglers = jnp.where(far, jnp.minimum(jnp.floor(STRAGGLER_SHARE * pb.batteries), STRAGGLERS_MAX), 0.0)

    def step_len(steps, del_, dl_, behind):
        """The fleet's step from the batteries' ``StepMessage``: as far as all but ``behind`` batteries can go
        (fraction to the boundary), and the aggregator's own elastic rows."""
        a = agg.fleet_step(steps, behind, pb.weight)
        return jnp.minimum(a, 0.99 * agg.elastic_max_step(el, rho, lam, del_, dl_))

    # One loop over the coupled solves of an iteration, so that the solve is compiled once:
    # k = 0 predictor (affine), k = 1 Mehrotra corrector, k >= 2 Gondzio's centrality correctors.
    # Each is a full coupled solve with the same factorisations: local step, aggregator, recovery.
    def solve_k(k, carry):
        dirn, aff, target_c = carry
        dx, ds, dz, dlam, d_el = dirn
        ds_a, dz_a, del_a, dl_a = aff

        # Mehrotra's centring target, per battery: batteries' scaled units differ, and one fleet-wide
        # mu over-centres some and under-centres others (a weighted central path). The affine step
        # that sets a battery's sigma is its OWN: with the fleet-wide step (the shortest over all
        # batteries) every battery was centred as hard as the one that blocked (51 instead of 43
        # iterations at N = 1000); sigma >= SIGMA_MIN keeps batteries whose affine step is full
        # from running off the central path in the end game.
        def mehrotra_target(_):
            a_aff = own_len(ds_a, dz_a)[:, None]
            trial = jnp.sum((s + a_aff * ds_a) * (z + a_aff * dz_a), axis=1)
            return (jnp.clip((trial / comp) ** SIGMA_POWER, sigma_min, 1.0) * comp / rows)[:, None]

        # (lax.cond: each solve computes only its own kind's bookkeeping, which at N = 1000 was a third
        # of a solve's time when all three were formed and selected with where)
        target_c = lax.cond(k == 1, mehrotra_target, lambda _: target_c, None)

        # a centrality corrector is judged by the common step, the slowest battery's, which is where it helps:
        # judged by the fleet's step with stragglers, 36 / 39 iterations at N = 1000 / 10000 against 33 / 38
        def gondzio_rc(_):
            a_cur = step_len(fleet_steps(ds, dz), d_el, dlam, 0.0)
            a_try = jnp.minimum(1.0, 1.5 * a_cur + 0.1)
            v = (s + a_try * ds) * (z + a_try * dz)
            lo, hi = 0.1 * target_c, 10.0 * target_c
            t_v = jnp.clip(v, lo, hi) - v
            t_v = jnp.where(t_v > hi, hi, t_v)  # cap large corrections (Gondzio's safeguard)
            return -t_v, a_cur

        def newton_rc(_):
            return jnp.where(k == 0, s * z, s * z + ds_a * dz_a - target_c), jnp.asarray(0.0, s.dtype)

        r_c, a_cur = lax.cond(k >= 2, gondzio_rc, newton_rc, None)
        # the aggregator's elastic rows: Mehrotra's corrector with their own affine step and no centring floor
        # (a floor of SIGMA_MIN kept u and w from vanishing as fast as the batteries' gaps on some fleets:
        # 11 of 12 equal-efficiency fleets converged against 12); no centrality correctors for them
        a_e = jnp.minimum(1.0, 0.99 * agg.elastic_max_step(el, rho, lam, del_a, dl_a))
        zu, zw = agg.elastic_duals(rho, lam)
        trial_e = jnp.sum((el.u + a_e * del_a.u) * (zu + a_e * dl_a) + (el.w + a_e * del_a.w) * (zw - a_e * dl_a))
        sigma_e = jnp.clip((trial_e / jnp.sum(comp_e)) ** 3, jnp.where(state.rejections > 0, RECOVERY_SIGMA, 0.0), 1.0)
        mu_e = jnp.sum(comp_e) / (2 * comp_e.shape[0])
        cu, cw = agg.elastic_complementarity(el, rho, lam)
        r_cu = jnp.where(k == 0, cu, jnp.where(k == 1, cu + del_a.u * dl_a - sigma_e * mu_e, 0.0))
        r_cw = jnp.where(k == 0, cw, jnp.where(k == 1, cw - del_a.w * dl_a - sigma_e * mu_e, 0.0))
        g_e = agg.elastic_gradient(el, rho, lam, r_cu, r_cw)
        use_res = k <= 1
        rd_k = jax.tree.map(lambda a, b: jnp.where(use_res, a, b), r_d, zero_d)
        rp_k = jnp.where(use_res, r_p, zero_p)
        # correctors (k >= 2) carry no residuals: the coupling mismatch is priced once, by k <= 1
        new = _direction(
            pb,
            fac,
            M,
            cfac,
            local,
            rd_k,
            rp_k,
            r_c,
            jnp.where(use_res, p_now, 0.0),
            jnp.where(use_res, pb.target - el.u + el.w, 0.0) - g_e,
            D,
            jnp.where(jnp.isin(k, jnp.asarray(REFINED_SOLVES)), COUPLED_REFINE, 0),
        )
        new = (*new, agg.elastic_step(el, rho, lam, new[3], r_cu, r_cw))

        # combine: k <= 1 replaces the direction; k >= 2 adds the correction if it lengthens the step
        def add_if_longer(_):
            cx, cs, cz, cl, ce = new
            summed = (primal_map(jnp.add, dx, cx), ds + cs, dz + cz, dlam + cl, jax.tree.map(jnp.add, d_el, ce))
            better = step_len(fleet_steps(summed[1], summed[2]), summed[4], summed[3], 0.0) >= 1.01 * a_cur
            return jax.tree.map(lambda n, o: jnp.where(better, n, o), summed, dirn), better

        new_dir, longer = lax.cond(k <= 1, lambda _: (new, jnp.asarray(True)), add_if_longer, None)
        new_aff = lax.cond(k == 0, lambda _: (new[1], new[2], new[4], new[3]), lambda _: aff, None)
        return new_dir, new_aff, target_c, longer

    def solve_or_stop(k, carry):
        # a centrality corrector follows only one that lengthened the step (k = 2 is the first): one that
        # did not is, nearly always, followed by another that does not, so its solve is skipped
        go = (k <= 2) | carry[3]
        return lax.cond(go, lambda c: solve_k(k, c[:3]), lambda c: c, carry)

    zero_el = jax.tree.map(jnp.zeros_like, el)
    zdir = (jax.tree.map(jnp.zeros_like, local.x), jnp.zeros_like(s), jnp.zeros_like(z), jnp.zeros_like(lam), zero_el)
    init = (zdir, (jnp.zeros_like(s), jnp.zeros_like(z), zero_el, jnp.zeros_like(lam)), jnp.zeros((N, 1), s.dtype))
    (dx, ds, dz, dlam, d_el), _, _, _ = lax.fori_loop(
        0, 2 + GONDZIO_CORRECTORS, solve_or_stop, (*init, jnp.asarray(True))
    )
    # one step length for primal and dual: with Q != 0 separate ones stalled the dual residual. The fleet's
    # step moves the multiplier and the elastic rows; a battery that cannot take it (a straggler) takes its own
    # bound. The bounds are computed once for both
    steps = fleet_steps(ds, dz)
    alpha = step_len(steps, d_el, dlam, stragglers)
    a_i = jnp.minimum(alpha, agg.battery_bounds(steps))  # (N,)
    new_local = LocalState(
        x=primal_map(lambda a, b: a + jnp.reshape(a_i, a_i.shape + (1,) * (b.ndim - 1)) * b, local.x, dx),
        s=jnp.maximum(s + a_i[:, None] * ds, 1e-300),
        z=jnp.maximum(z + a_i[:, None] * dz, 1e-300),
    )
    new_lam = lam + alpha * dlam
    new_el = jax.tree.map(lambda v, dv: jnp.maximum(v + alpha * dv, 1e-300), el, d_el)
    pres, dres, gap, cres, obj = _measures(pb, new_local, new_lam, new_el)
    finite = jnp.isfinite(pres + dres + gap + cres) & jnp.all(jnp.isfinite(new_lam))
    m_new = jnp.where(finite, _merit(pb, pres, dres, gap, cres), jnp.inf)
    conv = m_new <= 1.0
    # End-game guard: near mu -> 0 the factorisations lose the accuracy the coupled solve needs, and a
    # step can throw a converging iterate away (the dual residual jumping from 1e-13 to 1e-4). A step
    # that worsens an iterate already below RECOVERY_LEVEL a hundredfold is rejected: the iterate stays
    # and the next iteration retries from it with a strongly centred direction (sigma >= RECOVERY_SIGMA).
    # A step that is not finite (the factorisation overflowed: a retry from the same point would repeat
    # it), MAX_REJECTIONS in a row, or STALL_ITERATIONS without improvement once at the acceptable
    # level end the loop at the best iterate, which counts as converged if it meets ACCEPTABLE_TOL (as
    # IPOPT's "solved to acceptable level").
    reject = (~finite) | ((m_new > 1e2 * state.best_merit) & (state.best_merit * pb.tol <= RECOVERY_LEVEL))
    rejections = jnp.where(reject, state.rejections + 1, 0)
    better = (m_new < state.best_merit) & ~reject
    since_best = jnp.where(better, 0, state.since_best + 1)
    at_acceptable = state.best_merit * pb.tol <= ACCEPTABLE_TOL
    breakdown = (~finite) | (rejections >= MAX_REJECTIONS) | (at_acceptable & (since_best >= STALL_ITERATIONS))
    # the elastic problem solved while the plain coupling is not met: the target is out of the fleet's reach
    elastic_done = finite & (_merit(pb, pres, dres, gap, _elastic_residual_mw(pb, new_local, new_el)) <= 1.0)
    out_of_reach = elastic_done & (cres / pb.scale_target > pb.tol)
    status = jnp.where(
        breakdown, Status.NUMERICAL_ERROR.code, jnp.where(out_of_reach, Status.INFEASIBLE_TARGET.code, 0)
    )
    it = state.iteration
    row = History(
        primal_residual=pres,
        dual_residual=dres,
        coupling_residual_mw=cres,
        mu=mu,
        step=alpha,
        objective_eur=obj,
        gap=gap,
    )
    hist = jax.tree.map(lambda h, v: h.at[it].set(v), state.history, row)
    if pb.log_id is not None:
        # JAX supports ordered effects on one device only; in the sharded run (weights) the unordered
        # callback runs once per iteration, on the mesh's first device
        emit_iteration(pb.log_id, it + 1, row, ordered=pb.weight is None)
    keep = lambda new, old: jnp.where(reject, old, new)  # noqa: E731
    take = lambda new, old: jnp.where(better, new, old)  # noqa: E731
    measures = Measures(primal_residual=pres, dual_residual=dres, coupling_residual_mw=cres, gap=gap)
    return ALADINState(
        local=jax.tree.map(keep, new_local, local),
        lam=keep(new_lam, lam),
        iteration=it + 1,
        status=status,
        converged=conv,
        primal_residual=pres,
        dual_residual=dres,
        coupling_residual_mw=cres,
        gap=gap,
        history=hist,
        best_local=jax.tree.map(take, new_local, state.best_local),
        best_lam=take(new_lam, state.best_lam),
        best_merit=jnp.minimum(m_new, state.best_merit),
        best_measures=jax.tree.map(take, measures, state.best_measures),
        since_best=since_best,
        rejections=rejections,
        elastic=jax.tree.map(keep, new_el, el),
        best_elastic=jax.tree.map(take, new_el, state.best_elastic),
    )


def aladin_running(pb: ALADINProblem, state: ALADINState) -> Array:
    """Whether :func:`aladin_run` takes another iteration: not converged, below the limit, no stop reason."""
    return (~state.converged) & (state.iteration < pb.max_iter) & (state.status == 0)


def aladin_finish(pb: ALADINProblem, final: ALADINState) -> ALADINState:
    """The state to report at the end of a run: the best iterate (the last one unless the end-game guard
    stopped the loop or the limit hit; a target out of reach is reported as it stands) and its measures,
    with the final :attr:`Status.code` (an end-game breakdown at the acceptable level counts as converged, or
    as a target out of reach where the elastic problem is solved to that level and the plain coupling is not).
    """
    acceptable = final.best_merit * pb.tol <= ACCEPTABLE_TOL
    # The iterate the loop kept (a rejected step leaves it in place) with its own measures: the state's
    # measures are the last step's, which after a breakdown are not finite.
    pres, dres, gap, cres, _ = _measures(pb, final.local, final.lam, final.elastic)
    r_el = _elastic_residual_mw(pb, final.local, final.elastic)
    elastic_acceptable = _merit(pb, pres, dres, gap, r_el) * pb.tol <= ACCEPTABLE_TOL
    out_of_reach = (final.status == Status.NUMERICAL_ERROR.code) & ~acceptable & elastic_acceptable
    out_of_reach = out_of_reach & (cres / pb.scale_target > pb.tol)
    status = jnp.where(
        final.converged,
        Status.CONVERGED.code,
        jnp.where(
            final.status == Status.NUMERICAL_ERROR.code,
            jnp.where(
                acceptable,
                Status.CONVERGED.code,
                jnp.where(out_of_reach, Status.INFEASIBLE_TARGET.code, Status.NUMERICAL_ERROR.code),
            ),
            jnp.where(final.status == 0, Status.MAX_ITER.code, final.status),
        ),
    )
    use_best = (final.status != Status.INFEASIBLE_TARGET.code) & ~out_of_reach
    pick = lambda b, f: jnp.where(use_best, b, f)  # noqa: E731
    best = final.best_measures
    last = lambda kept, stepped: jnp.where(out_of_reach, kept, stepped)  # noqa: E731
    return final._replace(
        local=jax.tree.map(pick, final.best_local, final.local),
        lam=pick(final.best_lam, final.lam),
        elastic=jax.tree.map(pick, final.best_elastic, final.elastic),
        status=status,
        converged=status == Status.CONVERGED.code,
        primal_residual=pick(best.primal_residual, last(pres, final.primal_residual)),
        dual_residual=pick(best.dual_residual, last(dres, final.dual_residual)),
        coupling_residual_mw=pick(best.coupling_residual_mw, last(cres, final.coupling_residual_mw)),
        gap=pick(best.gap, last(gap, final.gap)),
    )


def aladin_run(pb: ALADINProblem, start: ALADINState) -> ALADINState:
    """:func:`aladin_step` from ``start`` while :func:`aladin_running` (a ``lax.while_loop``), then
    :func:`aladin_finish`."""
    final = lax.while_loop(functools.partial(aladin_running, pb), functools.partial(aladin_step, pb), start)
    return aladin_finish(pb, final)


@functools.partial(jax.jit, static_argnames=("tol", "max_iter"))
def aladin_ipm(
    fleet: Fleet,
    market: Market,
    target_mw: Array,
    settings: Settings,
    tol: float = 1e-8,
    max_iter: int = 100,
    warm_start: ALADINWarmStart | None = None,
    weight: Array | None = None,
    log_id: Array | None = None,
) -> ALADINState:
    """Interior-point ALADIN, jitted: :func:`aladin_problem`, :func:`aladin_start` and :func:`aladin_run`.

    Coordinates ``fleet`` to ``target_mw`` (T,) MW to the relative tolerance ``tol`` in at most ``max_iter``
    iterations, from a cold start or ``warm_start``. ``weight``: the padding weights of a sharded run
    (:func:`aladin_problem`). ``log_id``: the call id of a :func:`live_log` (None: no log); it is traced, so a
    new sink does not recompile. Returns the finished state (:func:`aladin_finish`).
    """
    pb = aladin_problem(fleet, market, target_mw, settings, tol=tol, max_iter=max_iter, weight=weight, log_id=log_id)
    return aladin_run(pb, aladin_start(pb, warm_start))


# --------------------------------------------------------------------------------------------------
# The live log: one line per iteration, from inside the jitted loops, to a sink chosen per call
# --------------------------------------------------------------------------------------------------


class LiveLog:
    """One run's live log: the sink its lines go to, the clock they are timed from (``time.perf_counter``
    seconds) and the elapsed time of every logged iteration. Made and registered by :func:`live_log`."""

    def __init__(self, sink: Callable[[str], None] | None, t0: float, call_id: int | None):
        self.sink = sink
        self.t0 = t0
        self.call_id = call_id  #: the traced ``log_id`` of the solvers; None: nothing is logged
        self.elapsed_s: list[float] = []  #: seconds from ``t0`` to each logged iteration

    def record(self, it: int, row: History) -> None:
        """Log iteration ``it`` with its measures ``row`` (one value per :class:`History` field)."""
        elapsed = time.perf_counter() - self.t0
        self.elapsed_s.append(elapsed)
        if self.sink is not None:
            self.sink(format_iteration(it, row, elapsed))

    def elapsed(self, iterations: int) -> np.ndarray:
        """The elapsed times (s) of the first ``iterations`` iterations, NaN where they were not logged."""
        t = np.asarray(self.elapsed_s, dtype=float)
        return t[:iterations] if t.size >= iterations else np.full(iterations, np.nan)


_LIVE_LOGS: dict[int, LiveLog] = {}  #: the runs in progress that log, by call id
_LIVE_LOGS_LOCK = threading.Lock()
_CALL_IDS = itertools.count(1)


@contextlib.contextmanager
def live_log(sink: Callable[[str], None] | None, t0: float | None = None) -> Iterator[LiveLog]:
    """Register ``sink`` for the duration of one run and yield its :class:`LiveLog`.

    Pass ``log.call_id`` as ``log_id`` to :func:`aladin_ipm` or :func:`~jaxvpp.coordination.admm.admm`; each
    iteration then sends one line to ``sink`` (and records its time from ``t0``, default now). With
    ``sink=None`` nothing is registered and ``call_id`` is None (no log, and the program without callbacks).
    The registration ends with the block, also when it raises.
    """
    start = time.perf_counter() if t0 is None else t0
    if sink is None:
        yield LiveLog(None, start, None)
        return
    with _LIVE_LOGS_LOCK:
        call_id = next(_CALL_IDS)
        log = LiveLog(sink, start, call_id)
        _LIVE_LOGS[call_id] = log
    try:
        yield log
    finally:
        try:
            jax.effects_barrier()  # the run's last callbacks reach the sink before its registration ends
        finally:
            with _LIVE_LOGS_LOCK:
                del _LIVE_LOGS[call_id]


def format_iteration(it: int, row: History, elapsed_s: float) -> str:
    """One line of the live log: iteration ``it``, its measures and the time since the run began (s)."""
    if np.isnan(float(row.mu)):  # ADMM: no barrier parameter; its penalty rho travels in the step slot
        tail = f"rho {float(row.step):.2e}"
    else:
        tail = f"gap {float(row.gap):.2e}  mu {float(row.mu):.2e}  step {float(row.step):.3f}"
    return (
        f"  it {int(it):3d}  primal {float(row.primal_residual):.2e}  dual {float(row.dual_residual):.2e}  "
        f"coupling {float(row.coupling_residual_mw):.2e} MW  {tail}  objective {float(row.objective_eur):.4f} EUR  "
        f"{elapsed_s:.2f} s"
    )


def _record_iteration(call_id, it, row: History) -> None:
    """Host side of :func:`emit_iteration`: the line goes to the run registered under ``call_id``."""
    log = _LIVE_LOGS.get(int(call_id))
    if log is not None:  # a run that has ended (or an id nobody registered) logs nothing
        log.record(int(it), row)


def emit_iteration(log_id: Array, it: Array, row: History, *, ordered: bool) -> None:
    """From inside a jitted loop: log iteration ``it`` with ``row`` to the :func:`live_log` ``log_id``
    (a debug callback; ``ordered`` keeps the lines in order, on one device only)."""
    jax.debug.callback(_record_iteration, log_id, it, row, ordered=ordered)
