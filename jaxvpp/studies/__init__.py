"""Studies built on the solvers: sensitivities of the optimum (implicit differentiation) and parameter
sweeps (many problems in one batched call)."""

from jaxvpp.studies.sensitivity import Sensitivities, sensitivities
from jaxvpp.studies.sweeps import BatchResult, solve_batch, sweep

__all__ = ["BatchResult", "Sensitivities", "sensitivities", "solve_batch", "sweep"]
