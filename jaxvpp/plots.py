"""The figures of ``jaxvpp run`` and the studies (matplotlib, Agg backend): each function returns a ``Figure``.

* :func:`risk_bands`: the quantile forecast of the delivery day as a fan, with the last backtest days, the
  median and (when known) the realised prices;
* :func:`scenario_paths`: sampled price paths and the reduced, weighted scenarios (width by probability);
* :func:`fleet_schedule`: the fleet's net power, coordinated and uncoordinated, against the community
  target, and the prices and coupling price underneath;
* :func:`state_of_charge`: the fleet's stored energy and the spread of the batteries' states of charge;
* :func:`convergence`: ALADIN against ADMM, coupling residual and objective error per iteration;
* :func:`frontier`: expected profit against CVaR over risk weights, with the fleet's own points;
* :func:`backtest_cumulative`, :func:`backtest_distribution`, :func:`backtest_cvar`: the figures of
  ``jaxvpp backtest`` (cumulative realised profit, the distribution of daily profit with its tail, predicted
  against realised CVaR).

:func:`png_bytes` renders a figure to PNG bytes. The figures are built on ``matplotlib.figure.Figure``
directly with the Agg canvas, not through pyplot: no global state, and the caller's backend is left alone.
"""

from __future__ import annotations

import io as _io

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxvpp.market.scenarios import cvar

BANDS = ((0.05, 0.95, "#c6dbef"), (0.10, 0.90, "#9ecae1"), (0.25, 0.75, "#6baed6"))
#: a horizontal box plot: ``orientation`` from Matplotlib 3.10, which deprecates ``vert`` (removed in 3.13)
_HORIZONTAL = {"orientation": "horizontal"} if matplotlib.__version_info__ >= (3, 10) else {"vert": False}
C_TARGET, C_COORD, C_UNCOORD, C_ADMM, C_PRICE = "black", "#1f77b4", "#ff7f0e", "#7f7f7f", "#2ca02c"


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (rendered with the Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _subplots(nrows: int = 1, ncols: int = 1, **kw):
    """Like pyplot's ``subplots``, without pyplot."""
    gridspec_kw, sharex = kw.pop("gridspec_kw", None), kw.pop("sharex", False)
    fig = Figure(**kw)
    return fig, fig.subplots(nrows, ncols, sharex=sharex, gridspec_kw=gridspec_kw)


def _local(times: pd.DatetimeIndex | pd.Series, tz: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(times).tz_convert(tz).tz_localize(None)


def _edges(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Step start times plus the end of the last step (for step plots that show every step)."""
    dt = times[-1] - times[-2] if len(times) > 1 else pd.Timedelta(hours=1)
    return times.append(pd.DatetimeIndex([times[-1] + dt]))


def _st(values: np.ndarray) -> np.ndarray:
    """Values with the last repeated, to pair with :func:`_edges`."""
    v = np.asarray(values, dtype=float)
    return np.concatenate([v, v[..., -1:]], axis=-1)


def _time_axis(ax, tz: str) -> None:
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.set_xlabel(f"delivery time ({tz})")
    ax.grid(alpha=0.3)


def _level_col(frame: pd.DataFrame, level: float) -> str | None:
    name = f"q{level:.2f}"
    return name if name in frame.columns else None


def risk_bands(
    quantiles: pd.DataFrame,
    backtest: pd.DataFrame | None,
    realised: np.ndarray | None,
    *,
    tz: str = "Europe/Berlin",
    context_days: int = 3,
    subtitle: str = "",
) -> Figure:
    """Quantile fan of the delivery day's forecast, after ``context_days`` days of backtest forecasts.

    ``quantiles`` and ``backtest`` have ``timestamp`` (UTC) and ``qX.XX`` columns (EUR/MWh); the backtest
    also has ``realised``. ``realised`` is the delivery day's actual prices when known (held out).
    """
    fig, ax = _subplots(figsize=(12, 5.2))
    parts = []
    if backtest is not None and len(backtest) and context_days > 0:
        days = _local(backtest["timestamp"], tz).normalize()
        keep = days >= days.max() - pd.Timedelta(days=context_days - 1)
        parts.append((backtest.loc[np.asarray(keep)].reset_index(drop=True), True))
    parts.append((quantiles, False))
    labelled = set()
    for frame, is_bt in parts:
        t = _edges(_local(frame["timestamp"], tz))
        for lo, hi, colour in BANDS:
            a, b = _level_col(frame, lo), _level_col(frame, hi)
            if a and b:
                lab = f"{round(lo * 100)}-{round(hi * 100)} % band"
                ax.fill_between(
                    t,
                    _st(frame[a]),
                    _st(frame[b]),
                    step="post",
                    color=colour,
                    lw=0,
                    label=None if lab in labelled else lab,
                )
                labelled.add(lab)
        med = _level_col(frame, 0.5)
        if med:
            ax.step(
                t,
                _st(frame[med]),
                where="post",
                color="#08519c",
                lw=1.4,
                label=None if "median" in labelled else "median forecast",
            )
            labelled.add("median")
        if is_bt:
            ax.step(
                t,
                _st(frame["realised"]),
                where="post",
                color="black",
                lw=1.0,
                label=None if "realised" in labelled else "realised price",
            )
            labelled.add("realised")
    tq = _edges(_local(quantiles["timestamp"], tz))
    if realised is not None:
        ax.step(
            tq,
            _st(realised),
            where="post",
            color="black",
            lw=1.0,
            label=None if "realised" in labelled else "realised price",
        )
    ax.axvspan(tq[0], tq[-1], color="#fff5e6", zorder=-1)
    ymax = ax.get_ylim()[1]
    ax.text(
        tq[0] + (tq[-1] - tq[0]) / 2,
        ymax,
        "delivery day: day-ahead forecast",
        ha="center",
        va="top",
        fontsize=9,
        color="#8c510a",
    )
    if len(parts) > 1:
        t0 = _local(parts[0][0]["timestamp"], tz)[0]
        ax.text(
            t0 + (tq[0] - t0) / 2,
            ymax,
            "backtest: forecasts issued the day before",
            ha="center",
            va="top",
            fontsize=9,
            color="0.3",
        )
    import matplotlib.dates as mdates

    ax.xaxis.set_major_locator(mdates.HourLocator(byhour=[0, 6, 12, 18]))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b\n%H:%M"))
    ax.set_xlabel(f"delivery time ({tz})")
    ax.grid(alpha=0.3)
    ax.set_ylabel("day-ahead price (EUR/MWh)")
    ax.set_title("Price forecast: quantile bands" + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=5, frameon=False)
    ax.set_ylim(top=ymax + 0.06 * (ymax - ax.get_ylim()[0]))
    fig.tight_layout()
    return fig


def scenario_paths(
    step_times: pd.DatetimeIndex,
    samples: np.ndarray,
    prices: np.ndarray,
    probabilities: np.ndarray,
    *,
    realised: np.ndarray | None = None,
    tz: str = "Europe/Berlin",
    subtitle: str = "",
) -> Figure:
    """Sampled paths (grey) and the K reduced scenarios, line width and opacity by probability.

    Colours order the scenarios by their mean price; the right panel shows each scenario's probability.
    """
    prices, w = np.asarray(prices, float), np.asarray(probabilities, float)
    K = len(w)
    fig, (ax, axp) = _subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 1]})
    t = _edges(_local(step_times, tz))
    show = np.asarray(samples, float)[: min(200, len(samples))]
    for i, path in enumerate(show):
        ax.step(
            t,
            _st(path),
            where="post",
            color="0.75",
            lw=0.4,
            alpha=0.5,
            label=f"sampled paths ({len(samples)}, {len(show)} shown)" if i == 0 else None,
        )
    order = np.argsort(prices.mean(axis=1))
    cmap = matplotlib.colormaps["viridis"]
    colours = {k: cmap(r / max(K - 1, 1)) for r, k in enumerate(order)}
    wmax = w.max()
    for k in np.argsort(w):  # the most probable on top
        ax.step(
            t,
            _st(prices[k]),
            where="post",
            color=colours[k],
            lw=0.8 + 3.2 * w[k] / wmax,
            alpha=0.35 + 0.65 * w[k] / wmax,
        )
    ax.step(t, _st(w @ prices), where="post", color="#d62728", lw=2.0, ls="--", label="expected price (weighted mean)")
    if realised is not None:
        ax.step(t, _st(realised), where="post", color="black", lw=1.2, label="realised price")
    ax.plot([], [], color=cmap(0.5), lw=3, label=f"{K} reduced scenarios (width ~ probability)")
    _time_axis(ax, tz)
    ax.set_ylabel("price (EUR/MWh)")
    ax.set_title("Price scenarios for the delivery day" + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    axp.barh(np.arange(K), w[order] * 100, color=[colours[k] for k in order])
    axp.set_yticks(np.arange(K), [f"{prices[k].mean():.0f}" for k in order], fontsize=7)
    axp.set_ylabel("scenario, by its mean price (EUR/MWh)")
    axp.set_xlabel("probability (%)")
    axp.set_title("scenario probabilities", fontsize=10)
    axp.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def fleet_schedule(
    step_times: pd.DatetimeIndex,
    target_mw: np.ndarray,
    coordinated_mw: np.ndarray,
    uncoordinated_mw: np.ndarray,
    expected_price: np.ndarray,
    coupling_price: np.ndarray,
    *,
    price_band: tuple[np.ndarray, np.ndarray] | None = None,
    tz: str = "Europe/Berlin",
    subtitle: str = "",
) -> Figure:
    """Fleet net power (MW, sum over batteries; > 0 = injection) against the target, and prices below."""
    fig, (ax, axp) = _subplots(2, 1, figsize=(12, 8), sharex=True, gridspec_kw={"height_ratios": [1.5, 1]})
    t = _edges(_local(step_times, tz))
    ax.fill_between(
        t,
        _st(uncoordinated_mw),
        _st(target_mw),
        step="post",
        color=C_UNCOORD,
        alpha=0.18,
        lw=0,
        label="uncoordinated miss of the target",
    )
    ax.step(t, _st(target_mw), where="post", color="0.6", lw=5, alpha=0.6, label="community target (committed)")
    ax.step(t, _st(uncoordinated_mw), where="post", color=C_UNCOORD, lw=1.5, label="uncoordinated fleet")
    ax.step(t, _st(coordinated_mw), where="post", color=C_COORD, lw=1.5, ls="--", label="coordinated fleet (ALADIN)")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("fleet net power (MW)\n> 0 injection, < 0 charging")
    ax.set_title("Fleet schedule against the community target" + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    ax.grid(alpha=0.3)
    if price_band is not None:
        axp.fill_between(
            t, _st(price_band[0]), _st(price_band[1]), step="post", color="#c6dbef", lw=0, label="5-95 % forecast band"
        )
    axp.step(t, _st(expected_price), where="post", color="#08519c", lw=1.4, label="expected price (scenarios)")
    axp.set_ylabel("price (EUR/MWh)")
    ax2 = axp.twinx()
    ax2.step(
        t,
        _st(coupling_price),
        where="post",
        color="#d62728",
        lw=1.4,
        ls="-.",
        label="coupling price (right axis): an extra price on injection, < 0 asks for less",
    )
    ax2.axhline(0, color="#d62728", lw=0.5, alpha=0.5)
    ax2.set_ylabel("coupling price (EUR/MWh)", color="#d62728")
    ax2.tick_params(axis="y", colors="#d62728")
    h1, l1 = axp.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    axp.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, fontsize=8, frameon=False)
    axp.set_title("Prices: the market's expectation and the coordination's internal price signal", fontsize=10)
    _time_axis(axp, tz)
    fig.tight_layout()
    return fig


def state_of_charge(
    step_times: pd.DatetimeIndex,
    soc_coordinated: np.ndarray,
    soc_uncoordinated: np.ndarray,
    capacity_mwh: np.ndarray,
    initial_mwh: np.ndarray,
    *,
    tz: str = "Europe/Berlin",
    subtitle: str = "",
) -> Figure:
    """Stored energy of the fleet (MWh) and the spread of the batteries' state of charge (% of capacity).

    ``soc_*`` are ``(N, T)``: the energy after each step; the start value ``initial_mwh`` is prepended.
    """
    fig, (ax, axf) = _subplots(1, 2, figsize=(13, 5.6))
    times = _local(step_times, tz)
    t = _edges(times)
    E = np.asarray(capacity_mwh, float)[:, None]
    e0 = np.asarray(initial_mwh, float)[:, None]
    for soc, colour, name, ls in (
        (soc_uncoordinated, C_UNCOORD, "uncoordinated", "-"),
        (soc_coordinated, C_COORD, "coordinated", "--"),
    ):
        e = np.concatenate([e0, np.asarray(soc, float)], axis=1)  # energy at the step edges
        ax.plot(t, e.sum(axis=0), color=colour, lw=1.8, ls=ls, marker="o", ms=2.5, label=f"{name} fleet")
        frac = 100 * e / E
        lo, med, hi = np.percentile(frac, [10, 50, 90], axis=0)
        axf.fill_between(t, lo, hi, color=colour, alpha=0.15, lw=0, label=f"{name}: 10-90 % of batteries")
        axf.plot(t, med, color=colour, lw=1.8, ls=ls, label=f"{name}: median battery")
    ax.axhline(float(e0.sum()), color="0.4", lw=0.8, ls=":", label="start = end-of-day floor")
    ax.set_ylabel("energy stored in the fleet (MWh)")
    ax.set_title(f"Fleet energy ({len(E)} batteries, {float(E.sum()):.0f} MWh capacity)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    axf.set_ylabel("state of charge (% of each battery's capacity)")
    axf.set_ylim(0, 100)
    axf.set_title("State of charge across the batteries", fontsize=10)
    axf.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    for a in (ax, axf):
        _time_axis(a, tz)
    if subtitle:
        fig.suptitle(subtitle, fontsize=11)
    fig.tight_layout()
    return fig


def convergence(aladin: pd.DataFrame, admm: pd.DataFrame | None, optimum_eur: float, *, subtitle: str = "") -> Figure:
    """Coupling residual (MW) and relative objective error per iteration, ALADIN against ADMM (log scales).

    ``aladin``/``admm`` are ``convergence.csv`` tables; ``optimum_eur`` is the converged objective.
    """
    fig, (ax, axo) = _subplots(1, 2, figsize=(13, 4.8))
    tiny = 1e-16
    runs = [("ALADIN (interior point)", aladin, C_COORD, "o")]
    if admm is not None and len(admm):
        runs.append(("ADMM (baseline)", admm, C_ADMM, None))
    scale = max(abs(optimum_eur), 1.0)
    for name, frame, colour, marker in runs:
        it = frame["iteration"].to_numpy()
        ax.semilogy(
            it,
            np.maximum(frame["coupling_residual_mw"].to_numpy(), tiny),
            color=colour,
            marker=marker,
            ms=3,
            lw=1.5,
            label=f"{name}: {len(it)} iterations",
        )
        err = np.abs(frame["objective_eur"].to_numpy() - optimum_eur) / scale
        axo.semilogy(it, np.maximum(err, tiny), color=colour, marker=marker, ms=3, lw=1.5, label=name)
    ax.set_ylabel("coupling residual max_t |sum_i p_it - target_t| (MW)")
    ax.set_title("Meeting the community target", fontsize=10)
    axo.set_ylabel("|objective - optimum| / |optimum|")
    axo.set_title("Optimality (objective of the current schedules)", fontsize=10)
    for a in (ax, axo):
        a.set_xlabel("iteration")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.suptitle("Convergence: ALADIN against ADMM" + (f" ({subtitle})" if subtitle else ""), fontsize=11)
    fig.tight_layout()
    return fig


def frontier(
    points: pd.DataFrame,
    *,
    fleet_points: dict[str, tuple[float, float]] | None = None,
    alpha: float = 0.05,
    subtitle: str = "",
) -> Figure:
    """Expected profit against CVaR, one point per common risk weight (``points``: risk_weight,
    cvar_eur, expected_profit_eur), plus named (cvar, profit) points such as the fleet's own schedules."""
    fig, ax = _subplots(figsize=(9, 6))
    p = points.sort_values("risk_weight")
    ax.plot(
        p["cvar_eur"],
        p["expected_profit_eur"],
        color=C_COORD,
        lw=1.5,
        marker="o",
        ms=6,
        label="efficient frontier (every battery with the same risk weight)",
    )
    for _, row in p.iterrows():
        ax.annotate(
            f"λ={row['risk_weight']:g}",
            (row["cvar_eur"], row["expected_profit_eur"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    markers = {"uncoordinated": ("s", C_UNCOORD), "coordinated": ("D", "#d62728")}
    for name, (cv, prof) in (fleet_points or {}).items():
        m, c = markers.get(name, ("^", "0.3"))
        ax.scatter(
            [cv], [prof], marker=m, color=c, s=60, zorder=5, label=f"fleet, {name} (each battery's own risk weight)"
        )
        ax.annotate(name, (cv, prof), textcoords="offset points", xytext=(8, -10), fontsize=8, color=c)
    ax.text(
        0.015,
        0.03,
        "larger risk weight λ: lower CVaR (safer), lower expected profit",
        transform=ax.transAxes,
        fontsize=8,
        color="0.35",
        ha="left",
        va="bottom",
    )
    ax.set_xlabel(
        f"CVaR of the loss at alpha = {alpha:g}, summed over batteries (EUR)\n"
        f"lower = safer; < 0: a profit even in the worst {100 * alpha:g} % of scenarios"
    )
    ax.set_ylabel("expected profit: revenue - degradation cost (EUR)")
    ax.set_title(
        "Efficient frontier: expected profit against tail risk" + (f"\n{subtitle}" if subtitle else ""), fontsize=11
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.margins(x=0.08, y=0.08)
    fig.tight_layout()
    return fig


def sweep_frontier(table: pd.DataFrame, param: str, *, alpha: float = 0.05, subtitle: str = "") -> Figure:
    """Expected profit against CVaR for every row of a sweep (``jaxvpp sweep``), coloured by the swept value;
    rows that did not converge are drawn as crosses."""
    fig, (ax, ax2) = _subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    t = table.sort_values(param)
    ok = t["converged"].to_numpy(dtype=bool)
    ax.plot(t["cvar_eur"][ok], t["expected_profit_eur"][ok], color="0.7", lw=1, zorder=1)
    sc = ax.scatter(t["cvar_eur"][ok], t["expected_profit_eur"][ok], c=t[param][ok], cmap="viridis", s=22, zorder=2)
    if (~ok).any():
        ax.scatter(
            t["cvar_eur"][~ok],
            t["expected_profit_eur"][~ok],
            marker="x",
            color="#d62728",
            s=30,
            label="not converged",
            zorder=3,
        )
        ax.legend(fontsize=8)
    fig.colorbar(sc, ax=ax, label=param)
    ax.set_xlabel(f"CVaR of the loss at alpha = {alpha:g}, summed over batteries (EUR; lower = safer)")
    ax.set_ylabel("expected profit: revenue - degradation (EUR)")
    ax.set_title("Expected profit against tail risk", fontsize=10)
    ax.grid(alpha=0.3)
    ax2.plot(t[param], t["objective_eur"], color=C_COORD, marker=".", lw=1)
    ax2.set_xlabel(param)
    ax2.set_ylabel("objective (EUR)")
    ax2.set_title("Optimal objective", fontsize=10)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"Sweep over {param}" + (f" ({subtitle})" if subtitle else ""), fontsize=11)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# Backtest (``jaxvpp backtest``): one colour per strategy
# ----------------------------------------------------------------------------------------------------

_STRATEGY_COLOURS = {
    "perfect_foresight": "0.55",
    "deterministic": C_UNCOORD,
    "risk_neutral": C_PRICE,
    "risk_aware": C_COORD,
    "coordinated": "#9467bd",
}


def _strategy_colour(name: str, i: int) -> str:
    if name in _STRATEGY_COLOURS:
        return _STRATEGY_COLOURS[name]
    return matplotlib.colormaps["viridis"](0.15 + 0.7 * ((i * 0.37) % 1.0))


def _strategies(days: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(days["strategy"]))


def backtest_cumulative(days: pd.DataFrame, *, subtitle: str = "") -> Figure:
    """Cumulative realised profit (EUR) of each strategy over the backtest's days (``days``: ``days.csv``), and the
    cumulative regret against perfect foresight below."""
    fig, (ax, ax2) = _subplots(2, 1, figsize=(11, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for i, name in enumerate(_strategies(days)):
        g = days[days["strategy"] == name]
        t = pd.DatetimeIndex(pd.to_datetime(g["day"]))
        c = _strategy_colour(name, i)
        ls = "--" if name == "perfect_foresight" else "-"
        ax.plot(t, g["realised_profit_eur"].cumsum(), color=c, lw=1.5, ls=ls, label=name)
        if name != "perfect_foresight":
            ax2.plot(t, g["regret_eur"].cumsum(), color=c, lw=1.3, label=name)
    ax.set_ylabel("cumulative realised profit (EUR)")
    ax.set_title("Realised profit out of sample" + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ax2.set_ylabel("cumulative regret (EUR)\nvs perfect foresight")
    ax2.set_xlabel("delivery day")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def backtest_distribution(days: pd.DataFrame, *, alpha: float = 0.05, subtitle: str = "") -> Figure:
    """The distribution of daily realised profit (EUR) per strategy (``days.csv``), with its ``alpha`` tail: the
    alpha-quantile (a tick) and the mean of the days below it (a diamond)."""
    names = _strategies(days)
    fig, ax = _subplots(figsize=(11, 1.2 + 0.9 * len(names)))
    for i, name in enumerate(names):
        v = np.sort(days.loc[days["strategy"] == name, "realised_profit_eur"].to_numpy())
        c = _strategy_colour(name, i)
        y = len(names) - 1 - i
        jitter = np.random.default_rng(i).uniform(-0.25, 0.25, v.size)
        n_tail = max(1, int(np.ceil(alpha * v.size - 1e-9)))
        tail_mean = -cvar(-v, None, alpha)  # the summary's tail mean (the boundary day counts in part)
        ax.scatter(v[n_tail:], y + jitter[n_tail:], s=6, color=c, alpha=0.45, lw=0)
        ax.scatter(v[:n_tail], y + jitter[:n_tail], s=10, color="#d62728", alpha=0.8, lw=0)
        ax.boxplot(v, positions=[y], **_HORIZONTAL, widths=0.55, showfliers=False, manage_ticks=False)
        ax.plot([v[n_tail - 1]] * 2, [y - 0.35, y + 0.35], color="#d62728", lw=2)
        ax.scatter([tail_mean], [y], marker="D", s=45, color="#d62728", zorder=5)
        ax.annotate(
            f"mean {v.mean():.0f}, tail mean {tail_mean:.0f} EUR",
            (v.max(), y),
            textcoords="offset points",
            xytext=(6, -3),
            fontsize=8,
        )
    ax.set_yticks(range(len(names)), names[::-1])
    ax.set_xlabel(
        f"daily realised profit of the fleet (EUR); red: the worst {100 * alpha:g} % of days, "
        "the tick at their boundary, the diamond their mean (realised CVaR as a profit)"
    )
    ax.set_title("Daily realised profit per strategy" + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    ax.grid(alpha=0.3, axis="x")
    ax.margins(x=0.25)
    fig.tight_layout()
    return fig


def backtest_cvar(days: pd.DataFrame, *, alpha: float = 0.05, subtitle: str = "") -> Figure:
    """Predicted CVaR against the realised loss (EUR) of each day (left), and each strategy's mean predicted CVaR
    against its realised CVaR, the mean of the worst ``alpha`` share of realised daily losses (right)."""
    names = [n for n in _strategies(days) if n != "perfect_foresight"]
    fig, (ax, ax2) = _subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    points: dict = {ax: [], ax2: []}
    for i, name in enumerate(names):
        g = days[days["strategy"] == name]
        x, y = g["predicted_cvar_eur"].to_numpy(), g["realised_loss_eur"].to_numpy()
        c = _strategy_colour(name, i)
        beyond = float(np.mean(y > x))
        ax.scatter(x, y, s=8, alpha=0.5, color=c, lw=0, label=f"{name} ({100 * beyond:.1f} % of days beyond)")
        point = (x.mean(), cvar(y, None, alpha))
        ax2.scatter([point[0]], [point[1]], s=70, color=c, label=name, zorder=3)
        points[ax] += [x, y]
        points[ax2] += [np.asarray(point)]
    for a in (ax, ax2):
        if points[a]:
            v = np.concatenate(points[a])
            lo, hi = float(v.min()), float(v.max())
            pad = 0.1 * max(hi - lo, 1.0)
            a.plot(
                [lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=0.8, ls="--", label="realised = predicted"
            )
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="upper left")
    ax.set_xlabel(f"predicted CVaR at alpha = {alpha:g} of the day's loss (EUR, fleet)")
    ax.set_ylabel("realised loss of the day (EUR, fleet; < 0: a profit)")
    ax.set_title("Each day: predicted tail against what happened", fontsize=10)
    ax2.set_xlabel("mean predicted CVaR (EUR)")
    ax2.set_ylabel(f"realised CVaR: mean of the worst {100 * alpha:g} % of days' losses (EUR)")
    ax2.set_title("Per strategy: is the predicted tail honest?", fontsize=10)
    fig.suptitle("Predicted against realised CVaR" + (f" ({subtitle})" if subtitle else ""), fontsize=11)
    fig.tight_layout()
    return fig
