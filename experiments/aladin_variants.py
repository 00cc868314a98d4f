"""Textbook ALADIN (full local solves, barrier or active-set curvature) against interior-point ALADIN and ADMM.

    .venv/bin/python experiments/aladin_variants.py            # all four fleets, about 6-7 minutes on 2 cores
    .venv/bin/python experiments/aladin_variants.py --fleets 0 # only the first (smallest) fleet

Writes ``experiments/results/aladin_variants.md`` and ``.json`` (one table row per fleet, method and start:
iterations to tolerance or "not converged after n" with the reason, final coupling residual, final
objective gap to Clarabel, wall time after compilation and its ratio to Clarabel's solve of the same
problem) and ``experiments/results/aladin_variants.png`` if it stays small (coupling residual per battery
against iteration, log scale, one panel per fleet and cold/warm start). ``ALADIN_VARIANTS_DEBUG=1``
prints every iteration of the safeguarded textbook runs.

The fleets are ``jaxvpp.random_fleet`` with ``synthetic_market`` prices; the target is theta times the
uncoordinated fleet profile (feasible and binding). "Warm" is an intraday re-dispatch: after the cold run,
coordinate again on target x 1.03 (or x 0.97 if that fails ``check_target``), starting from the previous
solution. Stop rule for every method: coupling residual ``max_t |sum_i p_it - target_t| <= 1e-6 MW x N``
and relative objective gap to Clarabel ``<= 1e-6`` (an oracle test: it needs the centralized optimum), or
the iteration cap (100; ADMM 300), or divergence (non-finite iterates or a multiplier above 1e9 EUR/MW).

Methods:

* ``IP-ALADIN``: ``jaxvpp.coordination.coordinate(method="aladin", tol=1e-8)`` (one coupled primal-dual
  Newton step per iteration), warm-started with ``warm_start=first.warm_start``. It runs to its
  own stopping test; the table reports the first iteration of its history that met the common rule.
* ``ADMM``: the exchange ADMM of ``jaxvpp.coordination``, stepped from Python with the library's own
  ``admm_step`` (``_variants_lib.admm_iteration``) so that the experiment's stop rule can be checked every
  iteration; the warm run starts from the previous run's price, schedules, penalty and solver state. On
  the first fleet the stepped history is compared with the compiled loop of ``coordinate(method="admm")``.
* ``TB-barrier``: textbook ALADIN (``_variants_lib.textbook_iteration``, vmapped over the fleet). Local
  solves ``min f_i + lam'p_i + rho/2 |p_i - zc_i|^2`` (rho = the library ADMM's default penalty) solved
  to the central-path point ``s o z = tau`` of a fixed barrier parameter (an interior-point loop that
  stops at tau, residual < 1e-10; warm-started, cold restart where that fails), curvature
  ``M_i = S (Q_f + G' diag(z/s) G)^-1 S'`` of f_i and its barrier at that point (without the proximal
  term: with it the end game is linear instead of quadratic), gradient ``g_i = -lam - rho (p_i - zc_i)``
  from local stationarity, coupling QP ``(sum M_i) mu = sum p_i - target - sum M_i g_i``, full step
  ``zc = p + dp``, ``lam = mu``. Globalised only through the barrier schedule, tau0 = 1e-2:
  - ``notes x0.5`` / ``notes x0.1``: the coordination notes' rule, shrink tau by the factor once the
    coupling residual per battery (MW) is below tau;
  - ``safeguarded``: the same shrink test, then a tangent predictor of (lam, zc) along the barrier path
    (``_variants_lib.barrier_tangent``: the ALADIN curvatures plus one T-vector per battery); a tau
    whose iterations do not decrease the residual monotonically (or need more than 8) is rejected: back
    to the last converged tau with sigma <- sqrt(sigma); sigma <- sigma^2 (at least 0.1) when a tau needed
    at most 3 iterations. Warm runs restart from the cold run's last point at its last tau, or at 1e-6.
* ``TB-active``: the same textbook iteration with full local solves (``solve_batteries``, tol 1e-9) and
  the curvature at the converged point (``W = z/s``: the active set). Warm = from the safeguarded barrier
  run's last point.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _variants_lib import (
    admm_cold_carry,
    admm_iteration,
    barrier_tangent,
    cold_local,
    textbook_iteration,
)
from provenance import EXPERIMENT_RESULTS, save_figure, write_results

import jaxvpp
from jaxvpp.battery.solution import solve_batteries
from jaxvpp.coordination.api import coordinate
from jaxvpp.coordination.feasibility import check_target
from jaxvpp.reference import solve_fleet_reference

RES_TOL = 1e-6  #: coupling residual per battery (MW)
GAP_TOL = 1e-6  #: relative objective gap to Clarabel
CAP = 100  #: iteration cap (ALADIN variants)
ADMM_CAP = 300
LAM_DIVERGED = 1e9  #: EUR/MW
DEBUG = bool(os.environ.get("ALADIN_VARIANTS_DEBUG"))  #: print every textbook iteration

FLEETS = [
    {"n": 10, "K": 20, "T": 24, "dt": 1.0, "seed": 11, "theta": 0.5},
    {"n": 50, "K": 10, "T": 24, "dt": 1.0, "seed": 12, "theta": 0.4},
    {"n": 200, "K": 10, "T": 24, "dt": 1.0, "seed": 13, "theta": 0.6},
    {"n": 8, "K": 10, "T": 96, "dt": 0.25, "seed": 14, "theta": 0.5},
]


def fleet_label(f: dict) -> str:
    return f"N={f['n']}, T={f['T']}" + (f" (dt={f['dt']:g} h)" if f["dt"] != 1.0 else "") + f", K={f['K']}"


class Problem:
    """One fleet, its market and two targets (cold and re-dispatch), with Clarabel's optimum of each."""

    def __init__(self, f: dict):
        self.f = f
        self.fleet = jaxvpp.random_fleet(f["n"], seed=f["seed"])
        self.market = jaxvpp.synthetic_market(f["K"], f["T"], seed=f["seed"], dt_hours=f["dt"])
        self.settings = jaxvpp.Settings(dt_hours=f["dt"])
        self.N, self.T = f["n"], f["T"]
        profile = np.asarray(jnp.sum(solve_batteries(self.fleet, self.market, self.settings).net_mw, axis=0))
        self.targets = {"cold": f["theta"] * profile}
        assert not check_target(self.fleet, self.targets["cold"], self.settings)
        for factor in (1.03, 0.97):
            if not check_target(self.fleet, factor * self.targets["cold"], self.settings):
                self.targets["warm"] = factor * self.targets["cold"]
                self.warm_factor = factor
                break
        self.ref, self.ref_time = {}, {}
        for key, tgt in self.targets.items():
            t0 = time.perf_counter()
            r = solve_fleet_reference(self.fleet, self.market, self.settings, tgt)
            self.ref_time[key] = time.perf_counter() - t0
            self.ref[key] = float(r["objective_eur"])
        # the textbook proximal weight: the library ADMM's default penalty (EUR/MW^2)
        self.rho = float(0.1 * f["dt"] * jnp.mean(jnp.abs(self.market.prices)) / jnp.mean(self.fleet.power_mw))

    def gap(self, key: str, obj: float) -> float:
        return (obj - self.ref[key]) / abs(self.ref[key])

    def met(self, key: str, cres: float, obj: float) -> bool:
        return cres <= RES_TOL * self.N and abs(self.gap(key, obj)) <= GAP_TOL


class Run:
    """Per-iteration record of one method on one problem and start."""

    def __init__(self, method: str, start: str, cap: int):
        self.method, self.start, self.cap = method, start, cap
        self.cres: list[float] = []
        self.gaps: list[float] = []
        self.hit: int | None = None  # first iteration (1-based) that met the stop rule
        self.note = ""
        self.wall = float("nan")

    def add(self, pb: Problem, key: str, cres: float, obj: float) -> bool:
        self.cres.append(float(cres))
        self.gaps.append(pb.gap(key, float(obj)))
        if self.hit is None and math.isfinite(cres) and pb.met(key, cres, obj):
            self.hit = len(self.cres)
        return self.hit is not None

    def outcome(self) -> str:
        if self.hit is not None:
            return str(self.hit)
        return f"not converged after {len(self.cres)}" + (f" ({self.note})" if self.note else "")


def _diverged(cres: float, lam) -> bool:
    return (
        (not math.isfinite(cres))
        or not bool(np.all(np.isfinite(np.asarray(lam))))
        or float(np.max(np.abs(np.asarray(lam)))) > LAM_DIVERGED
    )


# --------------------------------------------------------------------------------------------------
# Textbook ALADIN drivers (the iteration itself is jitted and vectorised in _variants_lib)
# --------------------------------------------------------------------------------------------------


def _tb_call(pb, key, lam, zc, tau, local, curvature):
    return textbook_iteration(
        pb.fleet,
        pb.market,
        pb.settings,
        jnp.asarray(pb.targets[key]),
        lam,
        zc,
        pb.rho,
        tau,
        local,
        1.0,
        curvature=curvature,
        max_steps=60,
    )


def _tb_warmup(pb, curvature):
    """Compile the textbook iteration for this fleet's shapes (so wall times exclude compilation)."""
    local = cold_local(pb.fleet, pb.market, pb.settings)
    jax.block_until_ready(_tb_call(pb, "cold", jnp.zeros(pb.T), jnp.zeros((pb.N, pb.T)), 1e-2, local, curvature))
    if curvature == "barrier":
        jax.block_until_ready(
            barrier_tangent(
                pb.fleet, pb.market, pb.settings, jnp.zeros(pb.T), jnp.zeros((pb.N, pb.T)), pb.rho, local, -1e-3
            )
        )


def textbook_notes(pb: Problem, key: str, start: dict, shrink: float, name: str) -> tuple[Run, dict]:
    """Barrier curvature with the notes' schedule: shrink tau by ``shrink`` once residual/N <= tau."""
    run = Run(name, "cold" if key == "cold" else "warm", CAP)
    lam, zc, local, tau = start["lam"], start["zc"], start["local"], start["tau"]
    t0 = time.perf_counter()
    for _ in range(CAP):
        o = _tb_call(pb, key, lam, zc, tau, local, "barrier")
        cres = float(o.coupling_residual_mw)
        if run.add(pb, key, cres, float(o.objective_eur)):
            break
        if _diverged(cres, o.lam):
            run.note = f"diverged at iteration {len(run.cres)}, tau {tau:.1e}"
            break
        lam, zc, local = o.lam, o.zc, o.local
        if cres / pb.N <= tau:
            tau *= shrink
    else:
        run.note = f"tau {tau:.1e}"
    run.wall = time.perf_counter() - t0
    return run, {"lam": o.lam, "zc": o.zc, "local": o.local, "tau": tau}


def textbook_safeguarded(
    pb: Problem,
    key: str,
    start: dict,
    name: str,
    inner: float = 1e-2,
    sigma0: float = 0.5,
    sigma_min: float = 0.01,
    fast: int = 2,
    predictor: str = "secant",
) -> tuple[Run, dict]:
    """Barrier curvature; path following in tau with a secant predictor and rejected shrinks."""
    run = Run(name, "cold" if key == "cold" else "warm", CAP)
    lam, zc, local, tau = start["lam"], start["zc"], start["local"], start["tau"]
    sigma, snap, sec, phase = sigma0, None, None, []
    rejects = 0
    t0 = time.perf_counter()

    def shrink_from(snap_, sec_, sigma_):
        tau_c, lam_c, zc_c, local_c = snap_
        tau_n = max(tau_c * sigma_, 1e-14)
        if predictor == "tangent":
            dlam, dp, moved = barrier_tangent(
                pb.fleet, pb.market, pb.settings, lam_c, zc_c, pb.rho, local_c, tau_n - tau_c
            )
            return tau_n, lam_c + dlam, zc_c + dp, moved
        if sec_ is None:
            return tau_n, lam_c, zc_c, local_c
        tau_p, lam_p, zc_p = sec_
        f = (tau_n - tau_c) / (tau_c - tau_p)
        return tau_n, lam_c + f * (lam_c - lam_p), zc_c + f * (zc_c - zc_p), local_c

    for _ in range(CAP):
        o = _tb_call(pb, key, lam, zc, tau, local, "barrier")
        cres = float(o.coupling_residual_mw)
        if run.add(pb, key, cres, float(o.objective_eur)):
            break
        thresh = max(inner * tau, 1e-10) * pb.N
        if DEBUG:
            print(
                f"    it {len(run.cres):3d} tau {tau:.2e} sigma {sigma:.3f} residual {cres:.2e} gap {run.gaps[-1]:+.2e} "
                f"newton {int(o.newton_steps)} local err {float(o.local_error):.1e} |lam| {float(jnp.max(jnp.abs(o.lam))):.1e}"
            )
        bad = _diverged(cres, o.lam) or float(o.local_error) > 1e-8
        if snap is not None:
            bad = bad or (len(phase) >= 1 and cres > max(phase[-1], thresh)) or len(phase) >= 8
        if snap is None and len(run.cres) > 15 and min(run.cres[-15:]) > min(run.cres[:-15]):
            run.note = f"no progress in 15 iterations at tau {tau:.1e}"
            break
        if bad:
            if snap is None:
                if _diverged(cres, o.lam):
                    run.note = f"diverged at iteration {len(run.cres)}, tau {tau:.1e}"
                    break
            else:
                rejects += 1
                sigma = math.sqrt(sigma)
                if sigma > 0.999:
                    run.note = f"stalled at tau {snap[0]:.1e}"
                    break
                tau, lam, zc, local = shrink_from(snap, sec, sigma)
                phase = []
                continue
        lam, zc, local = o.lam, o.zc, o.local
        phase.append(cres)
        if cres <= thresh:  # converged at this tau: remember it, shrink with the secant predictor
            if len(phase) <= fast:
                sigma = max(sigma * sigma, sigma_min)
            if snap is not None:
                sec = (snap[0], snap[1], snap[2])
            snap = (tau, lam, zc, local)
            tau, lam, zc, local = shrink_from(snap, sec, sigma)
            phase = []
    else:
        run.note = f"tau {tau:.1e}"
    run.note = (run.note + ", " if run.note else "") + f"{rejects} rejected shrinks" if rejects else run.note
    run.wall = time.perf_counter() - t0
    return run, {"lam": o.lam, "zc": o.zc, "local": o.local, "tau": tau}


def textbook_active(pb: Problem, key: str, start: dict, name: str) -> tuple[Run, dict]:
    """Full local solves, curvature from W = z/s at the converged point (the active set)."""
    run = Run(name, "cold" if key == "cold" else "warm", CAP)
    lam, zc, local = start["lam"], start["zc"], start["local"]
    t0 = time.perf_counter()
    for _ in range(CAP):
        o = _tb_call(pb, key, lam, zc, 0.0, local, "active")
        cres = float(o.coupling_residual_mw)
        if run.add(pb, key, cres, float(o.objective_eur)):
            break
        if _diverged(cres, o.lam):
            run.note = f"diverged at iteration {len(run.cres)}: max abs lam {float(jnp.max(jnp.abs(o.lam))):.1e} EUR/MW"
            break
        lam, zc, local = o.lam, o.zc, o.local
    run.wall = time.perf_counter() - t0
    return run, {"lam": o.lam, "zc": o.zc, "local": o.local, "tau": 0.0}


# --------------------------------------------------------------------------------------------------
# Interior-point ALADIN and ADMM
# --------------------------------------------------------------------------------------------------


def ip_aladin(pb: Problem, key: str, warm_start=None) -> tuple[Run, object]:
    run = Run("IP-ALADIN", "cold" if key == "cold" else "warm", CAP)
    kw = {"method": "aladin", "max_iter": CAP, "tol": 1e-8, "warm_start": warm_start}
    coordinate(pb.fleet, pb.market, pb.targets[key], pb.settings, **kw)  # compile (and a first run)
    t0 = time.perf_counter()
    res = coordinate(pb.fleet, pb.market, pb.targets[key], pb.settings, **kw)
    run.wall = time.perf_counter() - t0
    h = res.history
    for c, obj in zip(h["coupling_residual_mw"], h["objective_eur"]):
        run.add(pb, key, float(c), float(obj))
    run.note = f"own stop: {res.status} at {res.iterations}"
    return run, res


def admm_stepped(pb: Problem, key: str, carry, check_library: bool = False) -> tuple[Run, object]:
    run = Run("ADMM", "cold" if key == "cold" else "warm", ADMM_CAP)
    tgt = jnp.asarray(pb.targets[key])
    if carry is None:
        carry = admm_cold_carry(pb.fleet, pb.market, pb.settings)
    jax.block_until_ready(admm_iteration(pb.fleet, pb.market, pb.settings, tgt, carry))  # compile
    own_stop = None
    t0 = time.perf_counter()
    for k in range(ADMM_CAP):
        carry, cres, obj, conv = admm_iteration(pb.fleet, pb.market, pb.settings, tgt, carry)
        cres = float(cres)
        if own_stop is None and bool(conv):
            own_stop = k + 1
        if run.add(pb, key, cres, float(obj)):
            break
        if not math.isfinite(cres):
            run.note = "non-finite"
            break
    run.wall = time.perf_counter() - t0
    if own_stop is not None:
        run.note = f"library's own test met at {own_stop}"
    if check_library:
        lib = coordinate(
            pb.fleet, pb.market, pb.targets[key], pb.settings, method="admm", max_iter=len(run.cres), tol=RES_TOL
        )
        n = min(len(run.cres), lib.iterations)
        diff = np.abs(np.asarray(run.cres[:n]) - lib.history["coupling_residual_mw"][:n])
        run.library_check = (
            f"the stepped ADMM's coupling residuals match coordinate(method='admm') to "
            f"{np.max(diff[:10]):.1e} MW over the first 10 iterations and {np.max(diff):.1e} MW over {n}"
        )
    return run, carry


# --------------------------------------------------------------------------------------------------
# Driver, table and plot
# --------------------------------------------------------------------------------------------------

TB_WARM_TAU = 1e-6  #: where the second warm textbook run restarts the barrier schedule
#: the safeguarded schedule's settings (chosen by a sweep of six settings on the first two fleets)
SAFEGUARDED = {"inner": 1.0, "sigma0": 0.5, "sigma_min": 0.1, "fast": 3, "predictor": "tangent"}


def run_fleet(f: dict, idx: int, log) -> tuple[Problem, list[Run]]:
    pb = Problem(f)
    log(
        f"\n== {fleet_label(f)}: theta {f['theta']}, re-dispatch x{pb.warm_factor}, Clarabel "
        f"{pb.ref_time['cold']:.1f} s / {pb.ref_time['warm']:.1f} s, rho {pb.rho:.2f} EUR/MW^2"
    )
    runs: list[Run] = []

    def done(r: Run):
        runs.append(r)
        log(
            f"  {r.method:22s} {r.start:15s}: {r.outcome():40s} residual {r.cres[-1]:.1e} MW, gap {r.gaps[-1]:+.1e}, "
            f"{r.wall:.1f} s"
        )

    # interior-point ALADIN
    r, res = ip_aladin(pb, "cold")
    done(r)
    r, _ = ip_aladin(pb, "warm", warm_start=res.warm_start)
    done(r)
    # ADMM (the library's iteration stepped from Python; warm from its final state)
    r, carry = admm_stepped(pb, "cold", None, check_library=(idx == 0))
    done(r)
    if hasattr(r, "library_check"):
        log("  " + r.library_check)
        pb.library_check = r.library_check
    r, _ = admm_stepped(pb, "warm", carry)
    done(r)
    # textbook ALADIN, barrier curvature
    _tb_warmup(pb, "barrier")
    cold = {
        "lam": jnp.zeros(pb.T),
        "zc": jnp.zeros((pb.N, pb.T)),
        "local": cold_local(pb.fleet, pb.market, pb.settings),
        "tau": 1e-2,
    }
    r, _ = textbook_notes(pb, "cold", cold, 0.5, "TB-barrier notes x0.5")
    done(r)
    r, _ = textbook_notes(pb, "cold", cold, 0.1, "TB-barrier notes x0.1")
    done(r)
    r, last = textbook_safeguarded(pb, "cold", cold, "TB-barrier safeguarded", **SAFEGUARDED)
    done(r)
    # warm: from the last lam, zc and local points of the cold run (converged or not), restarting the
    # barrier schedule at its last tau, or at TB_WARM_TAU
    r, _ = textbook_safeguarded(pb, "warm", last, "TB-barrier safeguarded", **SAFEGUARDED)
    r.start = f"warm, tau {last['tau']:.0e}"
    done(r)
    r, _ = textbook_safeguarded(pb, "warm", dict(last, tau=TB_WARM_TAU), "TB-barrier safeguarded", **SAFEGUARDED)
    r.start = f"warm, tau {TB_WARM_TAU:.0e}"
    done(r)
    # textbook ALADIN, active-set curvature; warm = from the barrier variant's solution of the first target
    _tb_warmup(pb, "active")
    r, _ = textbook_active(pb, "cold", cold, "TB-active")
    done(r)
    if np.all(np.isfinite(np.asarray(last["lam"]))):
        r, _ = textbook_active(pb, "warm", last, "TB-active")
        r.start = "warm, from TB optimum"
        done(r)
    return pb, runs


def write_table(results, out_dir: Path, elapsed: float) -> None:
    notes = (
        f"Stop rule: coupling residual <= {RES_TOL:g} MW per battery and |objective - Clarabel| / |Clarabel| <= "
        f"{GAP_TOL:g}; cap {CAP} iterations (ADMM {ADMM_CAP}). Warm = re-coordination on target x 1.03 (or x 0.97) "
        "from the previous solution. Residual and gap are those of the last iteration run. Wall time excludes "
        "compilation; the ratio is it over Clarabel's solve of the same coupled problem (`jaxvpp.reference`, "
        "model building included)."
    )
    lines = [
        (
            "| fleet | method | start | iterations to tolerance | final coupling residual (MW) | final objective gap | "
            "wall time (s) | wall / Clarabel |"
        ),
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    data = []
    for pb, runs in results:
        for r in runs:
            key = "warm" if r.start.startswith("warm") else "cold"
            rel = r.wall / pb.ref_time[key] if pb.ref_time.get(key) else float("nan")
            lines.append(
                f"| {fleet_label(pb.f)} | {r.method} | {r.start} | {r.outcome().replace('|', '/')} | {r.cres[-1]:.1e} | "
                f"{r.gaps[-1]:+.1e} | {r.wall:.2f} | {rel:.2f} |"
            )
            data.append(
                dict(
                    fleet=pb.f,
                    method=r.method,
                    start=r.start,
                    iterations_to_tolerance=r.hit,
                    outcome=r.outcome(),
                    coupling_residual_mw=r.cres,
                    objective_gap=r.gaps,
                    wall_s=r.wall,
                    clarabel_s=pb.ref_time.get(key),
                )
            )
    fleets = []
    for pb, _ in results:
        fleets.append(
            f"* {fleet_label(pb.f)}: seed {pb.f['seed']}, theta {pb.f['theta']}, re-dispatch x{pb.warm_factor}, "
            f"Clarabel objective {pb.ref['cold']:.6g} / {pb.ref['warm']:.6g} EUR "
            f"({pb.ref_time['cold']:.1f} s / {pb.ref_time['warm']:.1f} s)"
            + (f"; {pb.library_check}" if hasattr(pb, "library_check") else "")
        )
    fig = plot(results)
    saved = save_figure(fig, "aladin_variants", out_dir, dpi=80)
    write_results(
        "aladin_variants",
        title="Textbook ALADIN vs interior-point ALADIN vs ADMM",
        notes=notes + ("\n\n![coupling residual against iteration](aladin_variants.png)" if saved else ""),
        sections=[
            ("Iterations to tolerance", "\n".join(lines)),
            ("Targets (theta x the uncoordinated fleet profile), re-dispatch factor and Clarabel", "\n".join(fleets)),
        ],
        data={"runs": data, "elapsed_s": elapsed},
        out_dir=out_dir,
    )


STYLE = {
    "IP-ALADIN": {"color": "C0", "lw": 2.0},
    "ADMM": {"color": "C7", "lw": 1.5},
    "TB-barrier notes x0.5": {"color": "C1", "lw": 1.2},
    "TB-barrier notes x0.1": {"color": "C3", "lw": 1.2, "ls": "--"},
    "TB-barrier safeguarded": {"color": "C2", "lw": 1.8},
    "TB-active": {"color": "C4", "lw": 1.2, "ls": ":"},
}


def plot(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrow = len(results)
    fig, axes = plt.subplots(nrow, 2, figsize=(12, 3.1 * nrow + 0.6), squeeze=False, sharey=True)
    for i, (pb, runs) in enumerate(results):
        for j, start in enumerate(("cold", "warm")):
            ax = axes[i, j]
            for r in runs:
                if not r.start.startswith(start):
                    continue
                y = np.asarray(r.cres) / pb.N
                y = np.where(np.isfinite(y), np.maximum(y, 1e-16), np.nan)
                x = np.arange(1, len(y) + 1)
                label = (
                    f"{r.method}{r.start[4:]} ({r.hit if r.hit is not None else 'not conv., ' + str(len(y)) + ' it.'})"
                )
                style = dict(STYLE.get(r.method, {}))
                if r.start.startswith("warm,") and "1e-06" in r.start:
                    style["ls"] = "-."
                if len(y) <= 3:
                    style["marker"] = "o"
                    style["ms"] = 3
                ax.semilogy(x, y, label=label, **style)
                if r.hit is None and len(y) < r.cap:  # stopped early: diverged or stalled
                    ax.plot(
                        x[-1], np.nanmax(y[-1:]) if np.isfinite(y[-1]) else 1e3, "x", color=STYLE[r.method]["color"]
                    )
            ax.axhline(RES_TOL, color="k", lw=0.6, ls=":")
            ax.set_title(
                f"{fleet_label(pb.f)}, {start}" + (f" (target x{pb.warm_factor})" if start == "warm" else ""),
                fontsize=9,
            )
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(0.8, ADMM_CAP)
            ax.set_ylim(1e-15, 1e4)
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=6.5, loc="lower left")
            if j == 0:
                ax.set_ylabel("max_t |sum p - target| / N (MW)")
            if i == nrow - 1:
                ax.set_xlabel("iteration (log scale above 10)")
    fig.suptitle(
        "Coupling residual per battery vs iteration (dotted: tolerance 1e-6 MW; x: stopped early, diverged or stalled)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--fleets", type=int, nargs="*", default=list(range(len(FLEETS))), help="indices into FLEETS (default: all)"
    )
    ap.add_argument("--out", type=Path, default=EXPERIMENT_RESULTS, help="results folder")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = []
    for i in args.fleets:
        results.append(run_fleet(FLEETS[i], i, lambda s: print(s, flush=True)))
    elapsed = time.perf_counter() - t0
    write_table(results, args.out, elapsed)
    print(f"wrote {args.out / 'aladin_variants.md'} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
