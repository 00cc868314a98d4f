"""Scale-out: the fleet split across devices (and hosts) with JAX's own distribution.

The batteries of interior-point ALADIN are independent except for the aggregator's sums (curvature,
gradient and net power; objective, duality gap and mu for reporting) and the fleet-wide step length and
residual measures (min and max). So the fleet's arrays are split along the battery axis over a
one-axis device mesh (``jax.sharding.Mesh``, axis ``"batteries"``, ``NamedSharding(mesh, P("batteries"))``)
and the SAME jitted :func:`jaxvpp.coordination.aladin.aladin_ipm` runs on them: XLA's SPMD partitioner keeps the
per-battery work on the device that holds the battery and turns the battery-axis reductions into
all-reduces; the aggregator's T x T solve is replicated. Nothing else crosses devices.

A fleet whose size is not a multiple of the device count is padded with replicas of its last battery,
weight 0 in every sum over batteries (:func:`pad_fleet`); a replica receives the same multiplier as its
original and follows its trajectory exactly, so the min/max reductions do not see it either, and the
padding is stripped from the result.

Several hosts: :func:`initialize` (``jax.distributed.initialize``) in every process before anything else
touches JAX; then ``jax.devices()`` lists the devices of every process and the mesh spans them (on CPU the
cross-process all-reduces go through gloo). Every process passes the same fleet; each one places only its
own shard on its devices and gathers the result at the end.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvpp.coordination.aladin import ALADINState, ALADINWarmStart, LocalState, aladin_ipm

AXIS = "batteries"  #: the mesh axis the fleet is split along
CPU_HINT = (
    "on a CPU, JAX shows several devices only when told before it starts: `jaxvpp coordinate --devices N` "
    "does so itself; in Python call jaxvpp.coordination.distributed.use_cpu_devices(N) right after importing "
    "jaxvpp, or set XLA_FLAGS=--xla_force_host_platform_device_count=N in the environment"
)


def use_cpu_devices(n: int) -> bool:
    """Ask JAX for ``n`` CPU devices (``jax_num_cpu_devices``), which works only before its backend starts.

    Returns True if set, False if JAX had already started (then ``jax.devices()`` stays as it is). Harmless
    on a GPU machine: the GPUs remain the default devices.
    """
    if n < 1:
        raise ValueError(f"the number of devices must be at least 1, got {n}")
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError:  # the backend is initialised; the setting can no longer change
        return False
    return True


def initialize(coordinator_address: str, num_processes: int, process_id: int, local_devices: int | None = None) -> None:
    """Join a multi-process (multi-host) run: ``jax.distributed.initialize`` with gloo collectives on CPU.

    Call it in every process before any JAX computation. ``coordinator_address`` is ``host:port`` of
    process 0 (the same in every process); ``local_devices`` CPU devices per process (default: JAX's).
    On CPU it switches the persistent compilation cache off for this process (see the comment below).
    """
    if num_processes < 1 or not (0 <= process_id < num_processes):
        raise ValueError(f"process id {process_id} must lie in [0, {num_processes})")
    if local_devices is not None and not use_cpu_devices(local_devices):
        raise RuntimeError("initialize() must run before JAX starts (before any array is created)")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    if jax.default_backend() == "cpu":
        # A CPU program with gloo collectives loaded from the persistent compilation cache waits forever
        # in its first collective (jaxlib 0.12; both processes load it, neither returns), so such a run
        # compiles its programs afresh every time.
        jax.config.update("jax_enable_compilation_cache", False)


def fleet_mesh(devices: int) -> Mesh:
    """A one-axis mesh (axis ``"batteries"``) over the first ``devices`` of ``jax.devices()``.

    Raises ValueError when fewer are available (with the hint for CPUs), or when, in a multi-process run,
    ``devices`` is not every device of every process.
    """
    if not isinstance(devices, (int, np.integer)) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    have = jax.devices()
    if devices > len(have):
        kind = have[0].platform
        raise ValueError(
            f"{devices} devices requested but JAX sees {len(have)} ({kind})"
            + (f"; {CPU_HINT}" if kind == "cpu" else "")
        )
    if jax.process_count() > 1 and devices != len(have):
        raise ValueError(
            f"a run over {jax.process_count()} processes must use all their {len(have)} devices, got devices={devices}"
        )
    return Mesh(np.asarray(have[:devices]), (AXIS,))


def pad_fleet(tree, multiple: int):
    """Pad every leaf's leading (battery) axis to a multiple of ``multiple`` with copies of the last battery.

    Returns the padded tree (numpy leaves) and the weights (1.0 real, 0.0 padding), shape (N_padded,).
    """
    leaves = [np.asarray(a) for a in jax.tree.leaves(tree)]
    n = leaves[0].shape[0]
    extra = (-n) % multiple
    weight = np.concatenate([np.ones(n), np.zeros(extra)])
    return pad_batteries(tree, extra), weight


def pad_batteries(tree, extra: int):
    """``tree`` with ``extra`` copies of the last battery appended along every leaf's leading axis (numpy)."""

    def pad(a):
        a = np.asarray(a)
        return a if extra == 0 else np.concatenate([a, np.repeat(a[-1:], extra, axis=0)], axis=0)

    return jax.tree.map(pad, tree)


def place(tree, mesh: Mesh, split: bool):
    """Put every leaf on the mesh: split along the battery axis (``P("batteries")``) or replicated (``P()``).

    Built shard by shard (``jax.make_array_from_callback``), so in a multi-process run each process
    transfers only the part its devices hold.
    """

    def put(a):
        a = np.asarray(a)
        sharding = NamedSharding(mesh, P(AXIS) if split else P())
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(put, tree)


def to_host(tree):
    """Every leaf as a numpy array on this process (gathered from every process in a multi-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def aladin_sharded(
    fleet,
    market,
    target_mw,
    settings,
    devices: int,
    *,
    tol: float,
    max_iter: int,
    warm_start: ALADINWarmStart | None = None,
    log_id=None,
) -> ALADINState:
    """:func:`jaxvpp.coordination.aladin.aladin_ipm` with the fleet split over ``devices`` devices.

    Pads the fleet (and a warm start) to a multiple of ``devices``, places it on the mesh, runs the jitted
    loop and returns its final state on the host (numpy leaves) with the padding stripped. ``log_id``: the
    call id of a :func:`~jaxvpp.coordination.aladin.live_log` (each process passes its own; the lines are
    written by the process that holds the mesh's first device).
    """
    mesh = fleet_mesh(devices)
    n = fleet.size
    padded, weight = pad_fleet(fleet, devices)
    extra = weight.size - n
    args = dict(
        fleet=place(padded, mesh, True),
        weight=place(weight, mesh, True),
        market=place(market, mesh, False),
        target_mw=place(np.asarray(target_mw, float), mesh, False),
    )
    if warm_start is not None:
        local, lam = warm_start
        args["warm_start"] = ALADINWarmStart(
            local=place(pad_batteries(LocalState(*local), extra), mesh, True), lam=place(lam, mesh, False)
        )
    if log_id is not None:
        args["log_id"] = place(np.asarray(log_id), mesh, False)
    st = aladin_ipm(settings=settings, tol=tol, max_iter=max_iter, **args)
    st = to_host(st)
    cut = lambda t: jax.tree.map(lambda a: a[:n], t)  # noqa: E731
    return ALADINState(**{**st._asdict(), "local": cut(st.local), "best_local": cut(st.best_local)})


def partition_report(fleet, market, target_mw, settings, devices: int, tol: float = 1e-8, max_iter: int = 100) -> dict:
    """What XLA made of the sharded program: its collectives and whether the per-battery work is split.

    Compiles :func:`aladin_ipm` for the fleet split over ``devices`` and counts, in the optimised HLO,
    the all-reduce, all-gather and all-to-all instructions (and the shapes the all-reduces carry), and the
    array shapes (of any element type) that lead with the per-device battery count ``N / devices`` against
    those that lead with the whole padded ``N``.
    """
    mesh = fleet_mesh(devices)
    padded, weight = pad_fleet(fleet, devices)
    n = weight.size
    compiled = aladin_ipm.lower(
        place(padded, mesh, True),
        place(market, mesh, False),
        place(np.asarray(target_mw, float), mesh, False),
        settings,
        tol=tol,
        max_iter=max_iter,
        weight=place(weight, mesh, True),
    ).compile()
    hlo = compiled.as_text()
    count = lambda op: len(re.findall(rf"\b{op}(?:-start)?\(", hlo))  # noqa: E731
    payload = sorted(set(re.sub(r"\{[0-9,]*\}", "", m) for m in re.findall(r"= ([^=]*?) all-reduce(?:-start)?\(", hlo)))
    return dict(
        devices=devices,
        batteries=n,
        all_reduce=count("all-reduce"),
        all_reduce_shapes=payload,
        all_gather=count("all-gather"),
        all_to_all=count("all-to-all"),
        collective_permute=count("collective-permute"),
        reduce_scatter=count("reduce-scatter"),
        local_shapes=len(re.findall(rf"\b\w+\[{n // devices}[,\]]", hlo)),
        global_shapes=len(re.findall(rf"\b\w+\[{n}[,\]]", hlo)) if devices > 1 else None,
        memory=compiled.memory_analysis(),
    )
