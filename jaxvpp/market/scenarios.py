"""Price scenarios from a quantile forecast: Gaussian-copula sampling, reduction, CVaR error.

1. Each step's marginal is the forecast's quantile function (``forecasting.quantile_function``: linear
   between levels, exponential tails). Steps are joined by a Gaussian copula whose correlation is
   estimated from the ranks of the backtest residuals (van der Waerden normal scores), shrunk towards its
   diagonal-averaged (Toeplitz) form so that few backtest days still give a well-conditioned matrix.
2. ``n`` paths are sampled and reduced to ``K`` weighted paths:

   * ``kmeans``: K-means centroids weighted by cluster mass (keeps the mean; averages tails away);
   * ``medoids``: the sampled path nearest to each K-means centroid, same weights;
   * ``tail``: tail-preserving. The worst ``alpha`` share of paths for a reference schedule's loss is
     clustered on its own (``k_tail`` clusters), the rest into ``K - k_tail``. For a loss linear in prices
     (any fixed schedule) the reduced set keeps the mean and that schedule's CVaR exactly (when
     ``alpha n`` is whole).

3. The CVaR error of the reduction is measured for a reference schedule (the risk-neutral optimum of the
   default battery on the forecast's mean prices, an LP) and for held-out schedules.

Losses use the solver's convention: revenue ``Rev = dt sum_t pi_t p_t`` (EUR, ``p_t`` net injection in MW),
``Loss = E[Rev] - Rev`` (``baseline="expected"``) unless stated; ``alpha`` is the tail probability.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jaxvpp.errors import InputError
from jaxvpp.files import write_folder
from jaxvpp.market.forecasting import (
    cdf_from_quantiles,
    level_columns,
    quantile_function,
    read_quantile_file,
)
from jaxvpp.market.ingress import (
    MARKET_TZ,
    TIMESTAMP,
    format_timestamps,
    local_day,
    local_slot,
)

REDUCTIONS = ("tail", "kmeans", "medoids")


# ----------------------------------------------------------------------------------------------------
# Risk measure
# ----------------------------------------------------------------------------------------------------


def cvar(losses: np.ndarray, probabilities: np.ndarray | None, alpha: float) -> float:
    """CVaR (mean of the worst ``alpha`` probability mass) of discrete losses, EUR.

    The largest losses are taken until their probability reaches ``alpha`` (the last one in part).
    """
    L = np.asarray(losses, dtype=float)
    w = np.full(L.size, 1.0 / L.size) if probabilities is None else np.asarray(probabilities, dtype=float)
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie in (0, 1), got {alpha}", column="--alpha")
    order = np.argsort(-L, kind="stable")
    ws = w[order] / w.sum()
    take = np.clip(alpha - (np.cumsum(ws) - ws), 0.0, ws)
    return float(np.sum(L[order] * take) / alpha)


def schedule_losses(
    prices: np.ndarray,
    probabilities: np.ndarray | None,
    schedule_mw: np.ndarray,
    dt_hours: float,
    baseline: str = "expected",
) -> np.ndarray:
    """Loss of each path (EUR) for a fixed net-injection schedule: ``E[Rev] - Rev`` or ``-Rev``."""
    rev = dt_hours * np.asarray(prices, dtype=float) @ np.asarray(schedule_mw, dtype=float)
    if baseline == "zero":
        return -rev
    w = np.full(len(rev), 1.0 / len(rev)) if probabilities is None else np.asarray(probabilities, dtype=float)
    return float(np.dot(w, rev) / w.sum()) - rev


def reference_schedule(
    prices: np.ndarray,
    dt_hours: float,
    *,
    capacity_mwh: float = 2.0,
    power_mw: float = 1.8,
    soc_min: float = 0.1,
    soc_max: float = 0.9,
    soc_initial: float = 0.5,
    eta_charge: float = 0.85,
    eta_discharge: float = 0.90,
    degradation_eur_per_mwh: float = 1.0,
) -> np.ndarray:
    """Risk-neutral optimal net injection (MW) of one battery (the package's default battery) for ``prices``
    (EUR/MWh, shape ``(T,)``): the LP max ``dt sum_t pi_t (d_t - c_t) - deg dt sum_t (c_t + d_t)``."""
    from scipy.optimize import linprog

    pi = np.asarray(prices, dtype=float)
    T = pi.size
    cost = np.concatenate([dt_hours * (pi + degradation_eur_per_mwh), -dt_hours * (pi - degradation_eur_per_mwh)])
    tri = np.tril(np.ones((T, T))) * dt_hours
    E = np.hstack([eta_charge * tri, -tri / eta_discharge])  # e_t - e_0
    e0 = soc_initial * capacity_mwh
    A = np.vstack([E, -E, -E[-1:]])
    b = np.concatenate([np.full(T, soc_max * capacity_mwh - e0), np.full(T, e0 - soc_min * capacity_mwh), [0.0]])
    res = linprog(cost, A_ub=A, b_ub=b, bounds=[(0, power_mw)] * (2 * T), method="highs")
    if res.status != 0:
        return np.zeros(T)
    return res.x[T:] - res.x[:T]


# ----------------------------------------------------------------------------------------------------
# Copula correlation and sampling
# ----------------------------------------------------------------------------------------------------


def normal_scores(x: np.ndarray) -> np.ndarray:
    """Van der Waerden scores ``Phi^-1(rank / (n + 1))`` of each column (NaN stays NaN)."""
    x = np.asarray(x, dtype=float)
    ranks = pd.DataFrame(x).rank(axis=0, method="average").to_numpy()
    n = np.sum(np.isfinite(x), axis=0)
    from scipy.stats import norm  # here, not at the top: scipy.stats takes a second to import

    return norm.ppf(ranks / (n + 1.0))


def nearest_correlation(c: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Symmetrise, clip eigenvalues at ``floor`` and rescale to unit diagonal."""
    c = 0.5 * (c + c.T)
    w, v = np.linalg.eigh(c)
    c = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(c))
    c = c / np.outer(d, d)
    np.fill_diagonal(c, 1.0)
    return c


def toeplitz_average(c: np.ndarray) -> np.ndarray:
    """The matrix whose every diagonal holds the mean of that diagonal of ``c``."""
    T = c.shape[0]
    means = np.array([np.nanmean(np.diagonal(c, k)) for k in range(T)])
    idx = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    return means[idx]


def copula_correlation(x: np.ndarray, *, shrinkage: float | None = None) -> np.ndarray:
    """Gaussian-copula correlation of the columns (steps) of ``x`` (rows = days), from ranks.

    Pearson correlation of the normal scores of each column, shrunk towards its Toeplitz average with
    weight ``shrinkage`` (default ``T / (T + n)``), then made a valid correlation matrix. Invariant to
    monotone transforms of each column (residuals, PIT values or prices give the same answer).
    """
    x = np.asarray(x, dtype=float)
    n, T = x.shape
    if n < 3:
        raise InputError(f"need at least 3 days to estimate a correlation, got {n}")
    z = normal_scores(x)
    zc = z - np.nanmean(z, axis=0)
    zc = np.where(np.isfinite(zc), zc, 0.0)
    sd = np.sqrt(np.sum(zc**2, axis=0))
    sd = np.where(sd > 0, sd, 1.0)
    c = (zc.T @ zc) / np.outer(sd, sd)
    np.fill_diagonal(c, 1.0)
    w = T / (T + n) if shrinkage is None else float(shrinkage)
    target = toeplitz_average(c)
    return nearest_correlation((1 - w) * c + w * target)


def ar1_correlation(T: int, rho: float) -> np.ndarray:
    """Correlation ``rho^|i - j|`` (the fallback when no backtest is available)."""
    idx = np.abs(np.subtract.outer(np.arange(T), np.arange(T)))
    return rho**idx


def backtest_pit_matrix(
    backtest: pd.DataFrame, levels: tuple[float, ...], step_times: pd.DatetimeIndex, tz: str = MARKET_TZ
) -> np.ndarray:
    """PIT values ``F(realised)`` of the backtest arranged as (days, steps of the forecast day) by wall-clock slot."""
    cols = level_columns(levels)
    u = cdf_from_quantiles(levels, backtest[cols].to_numpy(), backtest["realised"].to_numpy())
    frame = pd.DataFrame(
        {"day": local_day(backtest[TIMESTAMP], tz), "slot": local_slot(backtest[TIMESTAMP], tz), "u": u}
    )
    # the repeated autumn hour: keep its first occurrence so a slot means one step
    frame = frame.drop_duplicates(["day", "slot"], keep="first")
    table = frame.pivot(index="day", columns="slot", values="u")
    table = table.ffill(axis=1).bfill(axis=1)  # the spring gap takes its neighbour's value
    slots = local_slot(step_times, tz)
    return table.reindex(columns=slots).to_numpy()


def sample_paths(levels: tuple[float, ...], q: np.ndarray, corr: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` price paths (EUR/MWh, shape ``(n, T)``) with marginals from quantiles ``q`` (``(T, L)``) and a
    Gaussian copula with correlation ``corr`` (``(T, T)``)."""
    rng = np.random.default_rng(seed)
    T = q.shape[0]
    chol = np.linalg.cholesky(nearest_correlation(corr) + 1e-12 * np.eye(T))
    z = rng.standard_normal((n, T)) @ chol.T
    from scipy.stats import norm  # here, not at the top: scipy.stats takes a second to import

    u = norm.cdf(z)
    return quantile_function(levels, np.asarray(q, dtype=float), u.T).T


# ----------------------------------------------------------------------------------------------------
# Reduction
# ----------------------------------------------------------------------------------------------------


@dataclass
class Reduced:
    """K weighted representative paths."""

    prices: np.ndarray  #: (K, T) EUR/MWh
    probabilities: np.ndarray  #: (K,), summing to 1
    method: str


def _kmeans(paths: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import (
        KMeans,  # imported before the limit: loads the OpenMP runtime
    )
    from threadpoolctl import threadpool_limits

    k = min(k, len(paths))
    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(paths)
    return km.labels_, km.cluster_centers_


def _cluster_reduce(
    paths: np.ndarray, weights: np.ndarray, k: int, seed: int, medoids: bool
) -> tuple[np.ndarray, np.ndarray]:
    labels, centers = _kmeans(paths, k, seed)
    out_p, out_w = [], []
    for j in range(centers.shape[0]):
        m = labels == j
        if not m.any():
            continue
        mass = weights[m].sum()
        if medoids:
            members = np.flatnonzero(m)
            rep = paths[members[np.argmin(((paths[members] - centers[j]) ** 2).sum(axis=1))]]
        else:
            rep = np.average(paths[m], axis=0, weights=weights[m])
        out_p.append(rep)
        out_w.append(mass)
    return np.asarray(out_p), np.asarray(out_w)


def reduce_kmeans(paths: np.ndarray, k: int, seed: int = 0, *, medoids: bool = False) -> Reduced:
    """K-means reduction: centroids (or the nearest sampled path, ``medoids``) weighted by cluster mass."""
    w = np.full(len(paths), 1.0 / len(paths))
    p, m = _cluster_reduce(paths, w, k, seed, medoids)
    return Reduced(p, m / m.sum(), "medoids" if medoids else "kmeans")


def reduce_tail(
    paths: np.ndarray, k: int, losses: np.ndarray, alpha: float, seed: int = 0, k_tail: int | None = None
) -> Reduced:
    """Tail-preserving reduction: the ``ceil(alpha n)`` highest-loss paths get ``k_tail`` clusters of their own
    (default ``max(1, k // 4)``), the rest ``k - k_tail``; every cluster is its mass-weighted mean path."""
    n = len(paths)
    if k < 2:
        return reduce_kmeans(paths, k, seed)
    n_tail = min(n - 1, max(1, math.ceil(alpha * n - 1e-9)))
    k_tail = max(1, k // 4) if k_tail is None else int(k_tail)
    k_tail = min(k_tail, n_tail, k - 1)
    order = np.argsort(-np.asarray(losses), kind="stable")
    tail, body = order[:n_tail], order[n_tail:]
    w = np.full(n, 1.0 / n)
    pt, wt = _cluster_reduce(paths[tail], w[tail], k_tail, seed, False)
    pb, wb = _cluster_reduce(paths[body], w[body], k - k_tail, seed, False)
    p = np.vstack([pt, pb])
    m = np.concatenate([wt, wb])
    return Reduced(p, m / m.sum(), "tail")


def reduce_paths(method: str, paths: np.ndarray, k: int, losses: np.ndarray, alpha: float, seed: int = 0) -> Reduced:
    """Dispatch to the reductions by name (``tail``, ``kmeans``, ``medoids``)."""
    if method == "kmeans":
        return reduce_kmeans(paths, k, seed)
    if method == "medoids":
        return reduce_kmeans(paths, k, seed, medoids=True)
    if method == "tail":
        return reduce_tail(paths, k, losses, alpha, seed)
    raise InputError(f"unknown reduction {method!r}; choose from {REDUCTIONS}", column="--reduction")


def cvar_error(
    paths: np.ndarray,
    reduced: Reduced,
    schedule_mw: np.ndarray,
    alpha: float,
    dt_hours: float,
    baseline: str = "expected",
) -> dict[str, float]:
    """CVaR of a schedule's loss under the full sample and the reduced set, and the relative error."""
    full = cvar(schedule_losses(paths, None, schedule_mw, dt_hours, baseline), None, alpha)
    red = cvar(
        schedule_losses(reduced.prices, reduced.probabilities, schedule_mw, dt_hours, baseline),
        reduced.probabilities,
        alpha,
    )
    rel = (red - full) / abs(full) if full != 0 else float("nan")
    return {"cvar_full_eur": full, "cvar_reduced_eur": red, "relative_error": rel}


def heldout_schedules(prices_mean: np.ndarray, dt_hours: float, count: int, seed: int) -> np.ndarray:
    """Schedules not used by the reduction: optima of the default battery on perturbed mean prices and
    batteries of other sizes (``(count, T)``, MW)."""
    rng = np.random.default_rng(seed + 7919)
    out = []
    scale = max(float(np.std(prices_mean)), 1.0)
    for _ in range(count):
        pert = prices_mean + rng.normal(0, 0.5 * scale, prices_mean.size)
        out.append(
            reference_schedule(
                pert, dt_hours, capacity_mwh=float(rng.uniform(1, 4)), power_mw=float(rng.uniform(0.5, 2.0))
            )
        )
    return np.asarray(out)


# ----------------------------------------------------------------------------------------------------
# The whole step and its files
# ----------------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """Everything ``jaxvpp scenarios`` writes."""

    step_times: pd.DatetimeIndex
    levels: tuple[float, ...]
    quantiles: np.ndarray  #: (T, L)
    correlation: np.ndarray  #: (T, T)
    samples: np.ndarray  #: (n, T)
    reductions: dict[str, Reduced]
    chosen: str
    schedule_mw: np.ndarray  #: (T,) reference schedule
    metrics: dict
    notes: list[str]


def _forecast_arrays(quantiles: pd.DataFrame, levels: tuple[float, ...]) -> tuple[pd.DatetimeIndex, np.ndarray, float]:
    """Step times, sorted quantiles ``(T, L)`` (EUR/MWh) and the step length (hours) of a forecast frame."""
    times = pd.DatetimeIndex(quantiles[TIMESTAMP])
    q = np.sort(quantiles[level_columns(levels)].to_numpy(dtype=float), axis=1)
    dts = np.diff(times.as_unit("ns").asi8) / 3.6e12
    return times, q, float(np.median(dts)) if len(times) > 1 else 1.0


def step_correlation(
    backtest: pd.DataFrame | None,
    levels: tuple[float, ...],
    step_times: pd.DatetimeIndex,
    *,
    rho_fallback: float = 0.9,
    tz: str = MARKET_TZ,
    notes: list[str] | None = None,
) -> tuple[np.ndarray, str]:
    """The copula correlation ``(T, T)`` of a forecast day's steps and where it came from.

    From the PIT values of ``backtest`` (earlier forecasts with their realised prices) when at least 3 of its
    days match the day's steps; otherwise AR(1) with ``rho_fallback`` per hour. Reasons for the fallback are
    appended to ``notes``.
    """
    notes = [] if notes is None else notes
    T = len(step_times)
    dts = np.diff(pd.DatetimeIndex(step_times).as_unit("ns").asi8) / 3.6e12
    dt = float(np.median(dts)) if T > 1 else 1.0
    if backtest is not None:
        if tuple(np.round(levels, 6)) != tuple(np.round(_levels_of(backtest), 6)):
            raise InputError("the backtest's quantile levels differ from the forecast's", column="levels")
        pit = backtest_pit_matrix(backtest, levels, step_times, tz)
        pit = pit[np.isfinite(pit).all(axis=1)]
        if len(pit) >= 3:
            return copula_correlation(pit), "backtest"
        notes.append("fewer than 3 complete backtest days match the forecast day's steps")
    rho = rho_fallback**dt
    notes.append(f"no usable backtest: steps correlated as AR(1) with rho = {rho:.3f} per step")
    return ar1_correlation(T, rho), f"ar1(rho={rho:.3f} per step)"


def _sample(
    levels: tuple[float, ...], q: np.ndarray, corr: np.ndarray, samples: int, seed: int, dt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampled paths ``(n, T)``, the reference schedule on their mean (MW) and its loss on each path (EUR)."""
    paths = sample_paths(levels, q, corr, samples, seed)
    sched = reference_schedule(paths.mean(axis=0), dt)
    return paths, sched, schedule_losses(paths, None, sched, dt)


def scenario_set(
    quantiles: pd.DataFrame,
    levels: tuple[float, ...],
    backtest: pd.DataFrame | None,
    *,
    samples: int = 1000,
    k: int = 20,
    alpha: float = 0.05,
    reduction: str = "tail",
    seed: int = 0,
    rho_fallback: float = 0.9,
    tz: str = MARKET_TZ,
) -> Reduced:
    """The K weighted scenarios of one forecast day, as :func:`build_scenarios` chooses them with ``reduction``,
    without the other reductions and the CVaR-error measurements (the fast path for many days).

    Exactly ``k`` scenarios (EUR/MWh): where clustering leaves fewer, the most probable scenarios are split into
    copies that share their probability (the same distribution), so that every day has the same shape.
    """
    times, q, dt = _forecast_arrays(quantiles, levels)
    corr, _ = step_correlation(backtest, levels, times, rho_fallback=rho_fallback, tz=tz)
    paths, _, losses = _sample(levels, q, corr, samples, seed, dt)
    red = reduce_paths(reduction, paths, k, losses, alpha, seed)
    prices, w = red.prices, red.probabilities
    while len(w) < k:
        j = int(np.argmax(w))
        prices, w = np.vstack([prices, prices[j : j + 1]]), np.concatenate([w, [w[j] / 2]])
        w[j] /= 2
    return Reduced(prices, w, red.method)


def build_scenarios(
    quantiles: pd.DataFrame,
    levels: tuple[float, ...],
    backtest: pd.DataFrame | None,
    *,
    samples: int = 1000,
    k: int = 20,
    alpha: float = 0.05,
    reduction: str = "tail",
    seed: int = 0,
    rho_fallback: float = 0.9,
    heldout: int = 20,
    tz: str = MARKET_TZ,
) -> ScenarioResult:
    """Sample, reduce with every method, and measure CVaR errors; ``reduction`` names the one written."""
    notes: list[str] = []
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie in (0, 1), got {alpha}", column="--alpha")
    if samples < 2:
        raise InputError(f"--samples must be at least 2, got {samples}", column="--samples")
    if not 1 <= k <= samples:
        raise InputError(f"--k must lie in [1, --samples], got {k}", column="--k")
    if reduction not in REDUCTIONS:
        raise InputError(f"unknown reduction {reduction!r}; choose from {REDUCTIONS}", column="--reduction")
    times, q, dt = _forecast_arrays(quantiles, levels)
    T = len(times)
    corr, corr_source = step_correlation(backtest, levels, times, rho_fallback=rho_fallback, tz=tz, notes=notes)
    paths, sched, losses = _sample(levels, q, corr, samples, seed, dt)
    reds = {m: reduce_paths(m, paths, k, losses, alpha, seed) for m in REDUCTIONS}
    others = heldout_schedules(paths.mean(axis=0), dt, heldout, seed) if heldout else np.zeros((0, T))
    errs = {}
    for m, r in reds.items():
        e = cvar_error(paths, r, sched, alpha, dt)
        e0 = cvar_error(paths, r, sched, alpha, dt, baseline="zero")
        ho = [cvar_error(paths, r, s, alpha, dt)["relative_error"] for s in others if np.any(s != 0)]
        errs[m] = {
            **e,
            "cvar_zero_baseline_full_eur": e0["cvar_full_eur"],
            "cvar_zero_baseline_reduced_eur": e0["cvar_reduced_eur"],
            "expected_revenue_full_eur": float(np.mean(dt * paths @ sched)),
            "expected_revenue_reduced_eur": float(r.probabilities @ (dt * r.prices @ sched)),
            "heldout_mean_abs_relative_error": float(np.mean(np.abs(ho))) if ho else None,
            "heldout_max_abs_relative_error": float(np.max(np.abs(ho))) if ho else None,
            "num_scenarios": int(len(r.probabilities)),
        }
    off = corr[np.triu_indices(T, 1)] if T > 1 else np.zeros(1)
    metrics = {
        "alpha": alpha,
        "samples": samples,
        "k": k,
        "reduction": reduction,
        "dt_hours": dt,
        "steps": T,
        "loss": "E[Rev] - Rev of the reference schedule (Rev = dt sum_t price_t p_t, EUR)",
        "reference_schedule_mw": [float(x) for x in sched],
        "correlation_source": corr_source,
        "mean_adjacent_correlation": float(np.mean(np.diagonal(corr, 1))) if T > 1 else None,
        "mean_correlation": float(np.mean(off)),
        "heldout_schedules": int(len(others)),
        "reductions": errs,
        "notes": notes,
    }
    return ScenarioResult(times, levels, q, corr, paths, reds, reduction, sched, metrics, notes)


def _levels_of(frame: pd.DataFrame) -> tuple[float, ...]:
    return tuple(float(c[1:]) for c in frame.columns if c.startswith("q") and c[1:2].isdigit())


def scenarios_text(step_labels: list[str], prices: np.ndarray, probabilities: np.ndarray, prefix: str = "s") -> str:
    """The solver's ``scenarios.csv``: ``scenario, probability`` and one price column (EUR/MWh) per step."""
    p = np.asarray(probabilities, dtype=float)
    if np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError("probabilities must be >= 0 and sum to 1")
    prices = np.asarray(prices, dtype=float)
    if not np.all(np.isfinite(prices)):
        raise ValueError("scenario prices must be finite")
    width = max(2, len(str(len(p))))
    frame = pd.DataFrame(prices, columns=step_labels)
    frame.insert(0, "probability", [repr(float(x)) for x in p])
    frame.insert(0, "scenario", [f"{prefix}{i + 1:0{width}d}" for i in range(len(p))])
    return frame.to_csv(index=False, float_format="%.4f", lineterminator="\n")


def plot_scenarios(result: ScenarioResult, path: str | Path, tz: str = MARKET_TZ) -> None:
    """Sampled paths with the K-means and the tail-preserving reductions, and the loss distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result.step_times.tz_convert(tz).tz_localize(None)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    show = result.samples[: min(300, len(result.samples))]
    for ax, m in zip(axes[:2], ("kmeans", "tail")):
        ax.plot(t, show.T, color="0.7", lw=0.4, alpha=0.5)
        r = result.reductions[m]
        wmax = r.probabilities.max()
        for p, w in zip(r.prices, r.probabilities):
            ax.plot(t, p, color="C3" if m == "tail" else "C0", lw=0.6 + 3.0 * w / wmax, alpha=0.9)
        e = result.metrics["reductions"][m]
        ax.set_title(
            f"{m}: {len(r.probabilities)} paths (width ~ probability) over {len(result.samples)} samples\n"
            f"CVaR error {100 * e['relative_error']:+.1f} % for the reference schedule",
            fontsize=9,
        )
        ax.set_xlabel(f"delivery time ({tz})")
        ax.set_ylabel("price (EUR/MWh)")
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax = axes[2]
    dt = result.metrics["dt_hours"]
    alpha = result.metrics["alpha"]
    L = schedule_losses(result.samples, None, result.schedule_mw, dt)
    ax.hist(L, bins=50, color="0.75", label="sampled paths")
    for m, c in (("kmeans", "C0"), ("tail", "C3"), ("medoids", "C2")):
        e = result.metrics["reductions"][m]
        ax.axvline(e["cvar_reduced_eur"], color=c, lw=1.5, ls="--", label=f"CVaR {m} {e['cvar_reduced_eur']:.1f}")
    ax.axvline(cvar(L, None, alpha), color="k", lw=1.5, label=f"CVaR full sample {cvar(L, None, alpha):.1f}")
    ax.set_xlabel("loss E[Rev] - Rev of the reference schedule (EUR)")
    ax.set_ylabel("number of sampled paths")
    ax.set_title(f"loss distribution, CVaR at alpha = {alpha:g}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: The files :func:`write_scenarios` writes.
SCENARIO_FILES = (
    "scenarios.csv",
    "scenario_samples.csv",
    "scenario_metrics.json",
    "scenarios.png",
    *(f"scenarios_{m}.csv" for m in REDUCTIONS),
)


def write_scenarios(
    result: ScenarioResult, out_dir: str | Path, tz: str = MARKET_TZ, *, option: str | None = None
) -> None:
    """Write scenarios.csv (the chosen reduction), scenarios_<method>.csv, scenario_samples.csv,
    scenario_metrics.json and scenarios.png into ``out_dir``, whole or not at all; the folder's other files
    (e.g. the forecast's) are kept (:func:`jaxvpp.files.write_folder`)."""
    labels = format_timestamps(result.step_times)
    n = len(result.samples)
    files: dict = {
        "scenarios.csv": scenarios_text(
            labels, result.reductions[result.chosen].prices, result.reductions[result.chosen].probabilities
        ),
        "scenario_samples.csv": scenarios_text(labels, result.samples, np.full(n, 1.0 / n)),
        "scenario_metrics.json": json.dumps(result.metrics, indent=2) + "\n",
        "scenarios.png": lambda p: plot_scenarios(result, p, tz),
    }
    for m, r in result.reductions.items():
        files[f"scenarios_{m}.csv"] = scenarios_text(labels, r.prices, r.probabilities)
    write_folder(out_dir, files, owned=SCENARIO_FILES, option=option)


def load_forecast(
    quantiles_path: str | Path, backtest_path: str | Path | None
) -> tuple[pd.DataFrame, tuple[float, ...], pd.DataFrame | None]:
    """Read quantiles.csv and, when given and present, backtest.csv (``None`` = not used)."""
    q, levels = read_quantile_file(quantiles_path)
    bt = None
    if backtest_path is not None:
        bt, _ = read_quantile_file(backtest_path, require=("realised",))
    return q, levels, bt
