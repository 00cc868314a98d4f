"""jaxvpp: JAX-accelerated, differentiable risk-aware coordination of battery fleets (virtual power plants).

The data flow: :mod:`jaxvpp.market` (prices, forecasts, scenarios) -> :mod:`jaxvpp.battery` (every
battery's risk-aware schedule) -> :mod:`jaxvpp.coordination` (the fleet to a community target), with
:mod:`jaxvpp.studies` (sensitivities, sweeps, the backtest), :mod:`jaxvpp.pipeline` (the main job) and the command line
at the edge.

Importing the package turns on float64 in JAX (``jax_enable_x64``): the solvers target 1e-6 relative
accuracy, which float32 cannot give. It imports neither matplotlib, cvxpy nor scikit-learn.
"""

from __future__ import annotations

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from jaxvpp.battery import BatterySolution, solve_batteries  # noqa: E402
from jaxvpp.coordination import ALADINWarmStart, CoordinationResult, Status, check_target, coordinate  # noqa: E402
from jaxvpp.errors import InfeasibleTargetError, InputError, NumericalError  # noqa: E402
from jaxvpp.pipeline import RunResult, run  # noqa: E402
from jaxvpp.problem import (  # noqa: E402
    DEFAULTS,
    FLEET_COLUMNS,
    Fleet,
    Market,
    Settings,
    make_fleet,
    random_fleet,
    synthetic_market,
)
from jaxvpp.studies import BacktestConfig, BacktestResult, Sensitivities, backtest, sensitivities, sweep  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "ALADINWarmStart",
    "BacktestConfig",
    "BacktestResult",
    "FLEET_COLUMNS",
    "BatterySolution",
    "CoordinationResult",
    "Fleet",
    "InfeasibleTargetError",
    "InputError",
    "Market",
    "NumericalError",
    "RunResult",
    "Sensitivities",
    "Settings",
    "Status",
    "backtest",
    "check_target",
    "coordinate",
    "make_fleet",
    "random_fleet",
    "run",
    "sensitivities",
    "solve_batteries",
    "synthetic_market",
    "sweep",
]
