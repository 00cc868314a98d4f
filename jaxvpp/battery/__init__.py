"""The local agent: every battery's risk-aware problem, solved for the whole fleet at once.

Each battery solves the convex quadratic program of :mod:`jaxvpp.problem` (expected profit minus a CVaR
penalty) by a primal-dual interior-point method written in JAX: float64, ``jit``-compiled, batched with
``vmap`` over batteries and differentiable by implicit differentiation. The modules follow the solver:

* :mod:`~jaxvpp.battery.qp`: the problem in the solver's scaled form and its structured operators;
* :mod:`~jaxvpp.battery.kernel`: the Newton kernel (condensed matrix, blocked inverse Cholesky, directions);
* :mod:`~jaxvpp.battery.ipm`: the interior-point method (start, step, and the fleet's queue of slots);
* :mod:`~jaxvpp.battery.implicit`: the differentiable fleet solve (``custom_vjp``);
* :mod:`~jaxvpp.battery.solution`: physical results and :func:`solve_batteries`, the entry point.
"""

from jaxvpp.battery.implicit import solve_fleet_qp
from jaxvpp.battery.ipm import IPMState, ipm_solve_fleet, ipm_start, ipm_step
from jaxvpp.battery.qp import BatteryQP, Primal, Scales, build_qp
from jaxvpp.battery.solution import (
    BatterySolution,
    cvar,
    fleet_metrics,
    schedule_metrics,
    solve_batteries,
)

__all__ = [
    "BatteryQP",
    "BatterySolution",
    "IPMState",
    "Primal",
    "Scales",
    "build_qp",
    "cvar",
    "fleet_metrics",
    "ipm_solve_fleet",
    "ipm_start",
    "ipm_step",
    "schedule_metrics",
    "solve_batteries",
    "solve_fleet_qp",
]
