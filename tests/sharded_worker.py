"""Subprocess side of tests/test_distributed.py: runs that need several JAX devices or processes.

JAX fixes its device count when it starts, and the test process has started it with one CPU device, so
these run in fresh processes:

    python tests/sharded_worker.py devices            # 4 forced host devices: N = 10 and 7, 1 vs 4 devices
                                                      # (and N = 7 warm-started, with a live log)
    python tests/sharded_worker.py process ADDR P I   # process I of P (2 host devices each), N = 7 on all devices

Prints one JSON line (process 0 only, for ``process``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPE_K, SHAPE_T = 6, 24


def instance(n: int):
    """The first ``n`` (<= 10) batteries of one heterogeneous fleet (the last without a
    ramp limit) and a binding, feasible target (half their uncoordinated profile). One batched solve serves
    every ``n``, so that only the coordination programs are compiled."""
    import jax.numpy as jnp
    import numpy as np

    from jaxvpp.battery.solution import solve_batteries
    from jaxvpp.problem import Settings, fleet_take, random_fleet, synthetic_market

    fleet = random_fleet(10, seed=3)
    fleet = fleet._replace(ramp_mw_per_h=fleet.ramp_mw_per_h.at[n - 1].set(jnp.inf))
    market = synthetic_market(SHAPE_K, SHAPE_T, seed=3)
    free = np.asarray(solve_batteries(fleet, market).net_mw)
    return fleet_take(fleet, np.arange(n)), market, Settings(), 0.5 * free[:n].sum(axis=0)


def _cache() -> None:
    import jax

    cache = os.environ.get(
        "JAXVPP_TEST_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "jax-tests")
    )
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def answer(res) -> dict:
    import numpy as np

    return dict(
        status=res.status,
        iterations=res.iterations,
        objective=res.objective_eur,
        net_mw=np.asarray(res.solution.net_mw).tolist(),
        price=np.asarray(res.coupling_price_eur_per_mwh).tolist(),
    )


def devices() -> dict:
    from jaxvpp.coordination import distributed

    assert distributed.use_cpu_devices(4)
    _cache()
    from jaxvpp.coordination.api import coordinate

    out = {}
    for n in (10, 7):
        fleet, market, settings, target = instance(n)
        out[n] = {d: answer(coordinate(fleet, market, target, settings, devices=d)) for d in (1, 4)}
    # N = 7 again, warm-started from the one-device answer, with a live log
    cold = coordinate(fleet, market, target, settings)
    out["warm"] = {}
    for d in (1, 4):
        lines: list[str] = []
        res = coordinate(fleet, market, target, settings, devices=d, warm_start=cold.warm_start, log=lines.append)
        out["warm"][d] = dict(answer(res), lines=len(lines))
    rep = distributed.partition_report(fleet, market, target, settings, 4)
    rep.pop("memory")
    out["hlo"] = rep
    return out


def process(addr: str, nproc: int, pid: int) -> dict:
    from jaxvpp.coordination import distributed

    distributed.initialize(addr, nproc, pid, local_devices=2)
    _cache()
    import jax

    from jaxvpp.coordination.api import coordinate

    fleet, market, settings, target = instance(7)
    res = coordinate(fleet, market, target, settings, devices=jax.device_count())
    return dict(
        devices=jax.device_count(), local_devices=jax.local_device_count(), processes=jax.process_count(), **answer(res)
    )


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "devices":
        result = devices()
    else:
        result = process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    if mode == "devices" or int(sys.argv[4]) == 0:
        print(json.dumps(result))
