"""Studies built on the solvers: sensitivities of the optimum (implicit differentiation), parameter sweeps
(many problems in one batched call) and the out-of-sample backtest of scheduling strategies."""

from jaxvpp.studies.backtesting import BacktestConfig, BacktestResult, backtest
from jaxvpp.studies.sensitivity import Sensitivities, sensitivities
from jaxvpp.studies.sweeps import BatchResult, solve_batch, sweep

__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "BatchResult",
    "Sensitivities",
    "backtest",
    "sensitivities",
    "solve_batch",
    "sweep",
]
