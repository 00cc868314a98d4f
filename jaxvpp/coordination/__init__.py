"""Coordinating the fleet to a community target without sharing private data.

Every battery ``i`` minimises its own risk-aware cost subject to its private constraints, and the fleet must
meet ``sum_i p_it = target_t`` (MW) at every step. The modules:

* :mod:`~jaxvpp.coordination.aggregator`: what a battery sends (:class:`AgentMessage`) and the aggregator's
  T x T coupling KKT solve, which sees messages only;
* :mod:`~jaxvpp.coordination.feasibility`: necessary conditions on a target, checked before any solve;
* :mod:`~jaxvpp.coordination.aladin`: interior-point ALADIN (and the :class:`Status` of a run);
* :mod:`~jaxvpp.coordination.admm`: the ADMM baseline;
* :mod:`~jaxvpp.coordination.distributed`: the fleet split over devices and processes;
* :mod:`~jaxvpp.coordination.api`: :func:`coordinate`, the one entry point.
"""

from jaxvpp.coordination.aggregator import AgentMessage, StepMessage
from jaxvpp.coordination.aladin import ALADINWarmStart, Status
from jaxvpp.coordination.api import CoordinationResult, coordinate
from jaxvpp.coordination.feasibility import check_target

__all__ = [
    "ALADINWarmStart",
    "AgentMessage",
    "CoordinationResult",
    "Status",
    "StepMessage",
    "check_target",
    "coordinate",
]
