"""Scale-out: the fleet split over devices and processes gives the single-device answer.

The multi-device runs happen in fresh processes (``tests/sharded_worker.py``): JAX fixes its device count
when it starts, and this process has started it with one CPU device.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxvpp.cli import main
from jaxvpp.coordination import distributed
from jaxvpp.problem import make_fleet, random_fleet

WORKER = Path(__file__).resolve().parent / "sharded_worker.py"
ROOT = Path(__file__).resolve().parent.parent
RTOL = 1e-8


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)  # the worker asks JAX for its devices itself
    return env


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


DUAL_RTOL = 1e-7  #: the Lagrangian dual value at a reported price against the primal optimum (relative)


def _dual_gap(n: int, price) -> float:
    """How far the coupling price is from an optimal multiplier: ``|g(lambda) - f*| / |f*|`` with the dual
    function ``g(lambda) = sum_i min_x (f_i(x) + lambda'p_i(x)) - lambda'target`` (every battery solved alone
    with the price, one device) and ``f*`` the coordinated optimum. Weak duality makes ``g <= f*`` for any
    ``lambda``; a gap near 0 shows ``lambda`` optimal whether or not the multiplier is unique."""
    import jax.numpy as jnp
    from sharded_worker import instance

    from jaxvpp.battery.solution import solve_batteries
    from jaxvpp.coordination.api import coordinate

    fleet, market, settings, target = instance(n)
    lam = -np.asarray(price, float) * settings.dt_hours  # coupling price (EUR/MWh) -> multiplier (EUR/MW)
    sol = solve_batteries(fleet, market, settings, linear_price=jnp.broadcast_to(jnp.asarray(lam), (n, lam.size)))
    g = float(np.sum(sol.objective_eur) + np.sum(np.asarray(sol.net_mw) @ lam) - lam @ target)
    f = coordinate(fleet, market, target, settings).objective_eur
    return abs(g - f) / abs(f)


def _same_answer(got: dict, ref: dict, n: int) -> None:
    """Schedules and objective within 1e-8 relative, the same iterations, and the coupling price an optimal
    multiplier (dual value within DUAL_RTOL of the optimum).

    The prices are compared by optimality rather than entry by entry: on these LP-like fleets the optimal
    multiplier is not unique (every battery blocked at a step leaves its price free in an interval). The same
    one-device run at tol 1e-8 and 1e-10 gave prices 1-7 % apart, a target changed by 1 part in 1e15 moved
    them by up to 5e-4, yet every one of those prices had a dual value within 1e-8 of the optimum."""
    assert got["status"] == ref["status"] == "converged"
    assert got["iterations"] == ref["iterations"]
    assert _rel(got["net_mw"], ref["net_mw"]) <= RTOL
    assert abs(got["objective"] - ref["objective"]) <= RTOL * abs(ref["objective"])
    assert _dual_gap(n, got["price"]) <= DUAL_RTOL


def test_padding_replicates_the_last_battery_with_weight_zero():
    fleet = random_fleet(7, seed=1)
    padded, w = distributed.pad_fleet(fleet, 4)
    assert w.tolist() == [1.0] * 7 + [0.0]
    for a, b in zip(padded, fleet):
        assert a.shape == (8,) and np.array_equal(a[:7], np.asarray(b)) and a[7] == np.asarray(b)[-1]
    same, w = distributed.pad_fleet(fleet, 7)
    assert w.size == 7 and all(np.array_equal(a, np.asarray(b)) for a, b in zip(same, fleet))


def test_more_devices_than_jax_has_is_a_clear_error():
    with pytest.raises(ValueError, match="XLA_FLAGS"):
        distributed.fleet_mesh(64)


def test_cli_refuses_devices_it_cannot_have(tmp_path, capsys):
    """This process's JAX has started with one CPU device: --devices 2 cannot be honoured (exit 2)."""
    import jax

    jax.devices()  # make sure the backend has started
    assert main(["coordinate", "--devices", "0", "--out", str(tmp_path)]) == 2
    assert "--devices must be at least 1" in capsys.readouterr().err
    assert main(["coordinate", "--devices", "2", "--out", str(tmp_path)]) == 2  # no --target
    assert "--target" in capsys.readouterr().err
    assert main(["coordinate", "--target", str(tmp_path / "t.csv"), "--devices", "2", "--out", str(tmp_path)]) == 2
    assert "2 devices requested but JAX sees 1 (cpu)" in capsys.readouterr().err
    assert main(["run", "--devices", "2", "--out", str(tmp_path / "r"), "--quiet"]) == 2  # [coordination] devices
    assert "2 devices requested" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_coordinate_devices_only_for_aladin():
    from jaxvpp.coordination.api import coordinate
    from jaxvpp.problem import synthetic_market

    with pytest.raises(ValueError, match="aladin"):
        coordinate(make_fleet(2), synthetic_market(2, 24), np.zeros(24), method="admm", devices=2)


@pytest.fixture(scope="module")
def four_devices() -> dict:
    """The worker's answers for N = 10 and 7 on 1 and 4 forced host devices, and its HLO report."""
    proc = _run(["devices"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sharded_equals_single_device_on_four_host_devices(four_devices):
    """N = 10 and N = 7 (not divisible by 4: padded) on 4 forced host devices against 1 device: schedules,
    coupling prices and objective within 1e-8 relative, the same iterations."""
    for n in ("10", "7"):
        _same_answer(four_devices[n]["4"], four_devices[n]["1"], int(n))


@pytest.mark.slow
def test_sharded_warm_start_and_live_log(four_devices):
    """A warm start (the one-device result's ``warm_start``, padded for 4 devices) and a live log on the
    sharded run: the one-device answer, and one logged line per iteration."""
    warm = four_devices["warm"]
    _same_answer(warm["4"], warm["1"], 7)
    for d in ("1", "4"):
        assert warm[d]["lines"] == warm[d]["iterations"] > 0
    assert warm["1"]["iterations"] < four_devices["7"]["1"]["iterations"]


@pytest.mark.slow
def test_xla_partitions_the_fleet_and_only_sums_communicate(four_devices):
    """In the compiled sharded program every per-battery array has N/4 batteries, and the only collectives
    are all-reduces of scalars, T-vectors and the T x T curvature (no all-gather of battery data)."""
    hlo = four_devices["hlo"]
    assert hlo["all_reduce"] > 0 and hlo["all_gather"] == 0 and hlo["all_to_all"] == 0
    assert hlo["global_shapes"] == 0 and hlo["local_shapes"] > 0
    dims = {d for s in hlo["all_reduce_shapes"] for d in re.findall(r"\w+\[([^\]]*)\]", s)}
    assert dims <= {"", "24", "24,24"}, hlo["all_reduce_shapes"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(cache_dir: Path) -> dict:
    addr = f"127.0.0.1:{_free_port()}"
    env = dict(_env(), JAXVPP_TEST_CACHE_DIR=str(cache_dir))
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "process", addr, "2", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    if any(p.returncode for p in procs):
        err = "\n".join(o[1][-2000:] for o in outs)
        if "gloo" in err.lower() and "not" in err.lower():
            pytest.skip(f"no gloo CPU collectives in this jaxlib: {err[-300:]}")
        raise AssertionError(err)
    return json.loads(outs[0][0].strip().splitlines()[-1])


@pytest.mark.slow
def test_two_processes_equal_one(four_devices, tmp_path):
    """Two processes on this machine (2 host devices each, gloo collectives over TCP) coordinate N = 7 over
    the 4 devices and give the single-device answer, twice with one compilation cache directory (a CPU
    program with collectives loaded from that cache would hang: the second run must compile afresh)."""
    for _ in range(2):
        got = _two_processes(tmp_path / "xla")
        assert (got["devices"], got["local_devices"], got["processes"]) == (4, 2, 2)
        _same_answer(got, four_devices["7"]["1"], 7)
