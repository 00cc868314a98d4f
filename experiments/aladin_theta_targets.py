"""Interior-point ALADIN against centralized Clarabel on six fleets with binding targets (theta = 0.5).

The target is half the uncoordinated fleet profile (feasible and binding). Prints iterations, the relative
objective gap and the coupling residual for each fleet; the README's Status section quotes this run.

    .venv/bin/python experiments/aladin_theta_targets.py
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import jaxvpp
from jaxvpp.battery.solution import solve_batteries
from jaxvpp.coordination.api import coordinate
from jaxvpp.reference import solve_fleet_reference

CASES = [(5, 20), (30, 5), (100, 10), (10, 1), (60, 30), (200, 20)]  # (N, K), T = 24

if __name__ == "__main__":
    for seed, (n, k) in enumerate(CASES):
        fleet = jaxvpp.random_fleet(n, seed=seed)
        market = jaxvpp.synthetic_market(k, 24, seed=seed)
        target = 0.5 * np.asarray(jnp.sum(solve_batteries(fleet, market).net_mw, axis=0))
        res = coordinate(fleet, market, target)
        ref = solve_fleet_reference(fleet, market, jaxvpp.Settings(), target)
        gap = abs(res.objective_eur - ref["objective_eur"]) / abs(ref["objective_eur"])
        print(
            f"N={n:4d} K={k:2d}: {res.status} in {res.iterations} iterations, objective gap {gap:.1e}, "
            f"coupling residual {res.coupling_residual_mw:.1e} MW; Clarabel {ref['iterations']} iterations",
            flush=True,
        )
