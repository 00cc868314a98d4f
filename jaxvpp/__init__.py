"""jaxvpp: JAX-accelerated, differentiable risk-aware coordination of battery fleets (virtual power plants).

Importing the package turns on float64 in JAX (``jax_enable_x64``): the solvers target 1e-6 relative
accuracy, which float32 cannot give.
"""

from __future__ import annotations

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from jaxvpp.problem import DEFAULTS, FLEET_COLUMNS, Fleet, Market, Settings, make_fleet, random_fleet, synthetic_market  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "FLEET_COLUMNS",
    "Fleet",
    "Market",
    "Settings",
    "make_fleet",
    "random_fleet",
    "synthetic_market",
]
