"""Necessary conditions for a community target, checked before any solve (MW, MWh)."""

from __future__ import annotations

import jax
import numpy as np

from jaxvpp.problem import Fleet, Settings

# --------------------------------------------------------------------------------------------------
# Feasibility of a target (necessary conditions, checked before the solve)
# --------------------------------------------------------------------------------------------------


def check_target(fleet: Fleet, target_mw: np.ndarray, settings: Settings) -> list[tuple[int, str]]:
    """Steps at which no fleet schedule can meet ``target_mw`` (0-based step, reason); empty if none found.

    Checks, per step, the fleet's power range and, cumulatively, the energy the fleet can deliver so
    far, and over the whole horizon the end-of-day energy floor ``e_T >= e_0`` (which forbids a
    positive net injection over the day). These are necessary conditions; an infeasibility they miss is
    detected during the solve by the diverging coupling price.
    """
    dt = settings.dt_hours
    b = jax.tree.map(np.asarray, fleet)
    target = np.asarray(target_mw, dtype=float)
    out: list[tuple[int, str]] = []
    p_max = float(np.sum(b.power_mw))
    for t, v in enumerate(target):
        if v > p_max * (1 + 1e-9) + 1e-9:
            out.append((t, f"target {v:.4g} MW exceeds the fleet's discharge power {p_max:.4g} MW"))
        elif v < -p_max * (1 + 1e-9) - 1e-9:
            out.append((t, f"target {v:.4g} MW exceeds the fleet's charge power {p_max:.4g} MW"))
    e0 = b.soc_initial * b.capacity_mwh
    can_deliver = float(np.sum(b.eta_discharge * np.maximum(e0 - b.soc_min * b.capacity_mwh, 0.0)))
    cum = np.cumsum(target) * dt
    flagged = {t for t, _ in out}
    for t, v in enumerate(cum):
        if t in flagged:
            continue
        # (no such bound on withdrawal: charging and discharging at once burns energy in the losses)
        if v > can_deliver * (1 + 1e-9) + 1e-9:
            out.append(
                (
                    t,
                    f"cumulative net injection {v:.4g} MWh by this step exceeds the {can_deliver:.4g} MWh "
                    "the fleet can deliver",
                )
            )
    if not out and cum[-1] > 1e-9 * max(1.0, p_max):
        out.append(
            (
                len(target) - 1,
                f"net injection over the horizon {cum[-1]:.4g} MWh > 0 is impossible: every "
                "battery must end at least as full as it started",
            )
        )
    return out
