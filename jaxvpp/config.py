"""The configuration of ``jaxvpp run``: every parameter of the main job, read from a TOML file.

A :class:`RunConfig` has one frozen section per phase (``market``, ``forecast``, ``scenarios``, ``risk``,
``fleet``, ``target``, ``coordination``, ``frontier``, ``output``). :func:`default_config_text` is the
default as TOML with a comment (and the unit) on every key; ``jaxvpp init-config`` writes it.
:func:`load_config` reads a file: missing keys keep their defaults, while unknown sections or keys, values
of the wrong type and values out of range raise one :class:`~jaxvpp.errors.InputError` that names the file,
the line and the key (``jaxvpp run`` then exits with 2). :meth:`RunConfig.override` applies command-line
flags with the same checks, naming the flag.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxvpp.errors import InputError
from jaxvpp.market import forecasting
from jaxvpp.market.ingress import MARKET_TZ, check_time_zone

#: The forecaster's defaults: the source of truth for the [forecast] keys of the same names.
_FORECASTER = forecasting.ForecastConfig()

# --------------------------------------------------------------------------------------------------
# Checks (each returns an error message, or None when the value is fine)
# --------------------------------------------------------------------------------------------------


def _at_least(lo: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= lo else f"must be at least {lo:g}"


def _positive(v: Any) -> str | None:
    return None if v > 0 and math.isfinite(v) else "must be positive and finite"


def _nonnegative(v: Any) -> str | None:
    return None if v >= 0 and math.isfinite(v) else "must be >= 0 and finite"


def _open_unit(v: Any) -> str | None:
    return None if 0 < v < 1 else "must lie in (0, 1)"


def _one_of(*choices: Any) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)


def _date(v: str) -> str | None:
    return None if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) else "must be a date YYYY-MM-DD"


def _risk_weights(v: tuple[float, ...]) -> str | None:
    if any(not (math.isfinite(x) and x >= 0) for x in v):
        return "every risk weight must be >= 0 and finite"
    if len(v) == 1:
        return "needs at least two risk weights (or none, to skip the frontier)"
    if len(set(v)) != len(v):
        return "risk weights must be distinct"
    return None


def _key(default: Any, help: str, check: Callable[[Any], str | None] | None = None) -> Any:
    """A config key: its default, its comment in the default file (with the unit) and its value check."""
    return field(default=default, metadata={"help": help, "check": check})


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarketConfig:
    """The day-ahead price history the forecast learns from."""

    prices_file: str = _key(
        "",
        "price file (timestamp, price_eur_per_mwh, optional exogenous columns such as "
        "renewable_share), e.g. from `jaxvpp fetch`; empty = a synthetic history. Relative file paths in this "
        "config are relative to the working directory",
    )
    fill_gaps: int = _key(
        0,
        "fill runs of up to this many missing steps of the price file (empty or NaN cells, rows missing from "
        "the time grid) by linear interpolation in time (steps; 0 = a missing price is an error)",
        _at_least(0),
    )
    history_days: int = _key(
        365, "days of synthetic history before the delivery day (days; at least 16)", _at_least(16)
    )
    resolution_minutes: int = _key(
        60, "step length of the synthetic market (minutes: 60, 30 or 15)", _one_of(60, 30, 15)
    )
    start: str = _key("2024-01-01", "first delivery day of the synthetic history (local date in time_zone)", _date)
    seed: int = _key(0, "random seed of the synthetic prices", _at_least(0))
    time_zone: str = _key(
        MARKET_TZ,
        "time zone of the market's delivery days (an IANA name; Europe/Berlin = CET/CEST, the European "
        "day-ahead auction): the synthetic history, the forecast's days and the figures' time axes",
        check_time_zone,
    )


@dataclass(frozen=True)
class ForecastConfig:
    """Probabilistic (quantile) forecast of the delivery day."""

    model: str = _key(
        _FORECASTER.model,
        'quantile model: "gbm" (gradient-boosted trees) or "qra" (linear quantile regression)',
        _one_of("gbm", "qra"),
    )
    backtest_days: int = _key(
        _FORECASTER.backtest_days, "days of the rolling-origin backtest that scores the forecast (days)", _at_least(1)
    )
    calibration_days: int = _key(
        _FORECASTER.calibration_days, "out-of-sample days behind the conformal calibration (days)", _at_least(1)
    )
    refit_every_days: int = _key(
        _FORECASTER.refit_every_days, "days between model refits in the backtest (days)", _at_least(1)
    )
    calibrate: bool = _key(
        _FORECASTER.calibrate, "apply the conformal calibration of every quantile level (true/false)"
    )
    boosting_iterations: int = _key(
        _FORECASTER.boosting_iterations, "boosting iterations per quantile level (gbm only)", _at_least(1)
    )
    seed: int = _key(_FORECASTER.seed, "random seed of the boosted trees", _at_least(0))

    def forecaster(self, tz: str = MARKET_TZ) -> forecasting.ForecastConfig:
        """The forecaster's settings: these keys (same names there), the market time zone ``tz``, the rest default."""
        return forecasting.ForecastConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, tz=tz)


@dataclass(frozen=True)
class ScenariosConfig:
    """Price scenarios sampled from the forecast and reduced to a few weighted ones."""

    samples: int = _key(1000, "price paths sampled from the forecast (Gaussian copula across steps)", _at_least(2))
    count: int = _key(20, "weighted scenarios K after the reduction (the solver's scenarios)", _at_least(1))
    reduction: str = _key(
        "tail",
        'reduction: "tail" (tail-preserving: keeps the CVaR of a reference schedule), "kmeans" or "medoids"',
        _one_of("tail", "kmeans", "medoids"),
    )
    seed: int = _key(0, "random seed of the sampling and clustering", _at_least(0))


@dataclass(frozen=True)
class RiskConfig:
    """How price risk enters every battery's objective: expected profit minus risk_weight x CVaR."""

    alpha: float = _key(0.05, "CVaR tail probability (0.05 = the mean loss of the worst 5 % of scenarios)", _open_unit)
    baseline: str = _key(
        "zero",
        'loss the CVaR measures: "zero" (loss = -revenue) or "expected" (loss = expected revenue - revenue)',
        _one_of("zero", "expected"),
    )


@dataclass(frozen=True)
class FleetConfig:
    """The prosumers' batteries."""

    file: str = _key(
        "",
        "fleet.csv (battery_id and parameter columns, see docs/file-formats.md); empty = a random heterogeneous fleet",
    )
    batteries: int = _key(100, "number of batteries in the random fleet", _at_least(1))
    seed: int = _key(0, "random seed of the fleet's parameters", _at_least(0))
    spread: float = _key(
        1.0,
        "heterogeneity around the seed battery (2 MWh, 1.8 MW, eta 0.85/0.90, risk weight "
        "0.5): 0 = identical batteries, 1 = a realistic spread (log-normal; one standard "
        "deviation is a factor 1.6 in capacity and 2.2 in risk weight)",
        _nonnegative,
    )


@dataclass(frozen=True)
class TargetConfig:
    """The community target that makes coordination matter.

    The aggregator has committed the community's schedule on the day-ahead market: theta times the schedule
    the fleet would run, risk-neutrally, under the median (point) price forecast. Each battery on its own
    would rather follow its risk-aware optimum over the scenarios, which differs from that commitment, so
    uncoordinated the community misses it. Coordination finds the schedules that meet it exactly at the
    least cost to the fleet; the coupling price is the internal price signal that achieves it.
    """

    file: str = _key(
        "",
        "target.csv (step, target_mw: the fleet's required net injection per step, MW); empty = "
        "the committed schedule below",
    )
    theta: float = _key(
        0.6,
        "committed share of the fleet's point-forecast schedule (dimensionless; in [0, 1] the "
        "target is feasible, since every battery's schedule scaled towards zero is; near 1 it "
        "leaves batteries at their limits no slack and ALADIN may stop at max_iter, as seen at "
        "theta = 1 with 50 batteries; above 1 it may be infeasible: exit code 3)",
        _nonnegative,
    )


@dataclass(frozen=True)
class CoordinationConfig:
    """Interior-point ALADIN, and ADMM as the baseline it is compared with."""

    tol: float = _key(1e-8, "ALADIN's relative tolerance on primal, dual and coupling residuals", _positive)
    max_iter: int = _key(100, "ALADIN's iteration limit (about 30 iterations on the default example)", _at_least(1))
    admm: bool = _key(
        False,
        "also run ADMM, the baseline of the convergence comparison (true/false; off by default: on a "
        "15-minute day it costs more than every other phase together)",
    )
    admm_max_iter: int = _key(
        150, "ADMM's iteration limit (it converges slowly: about 1e-2 MW per battery after 150)", _at_least(1)
    )
    admm_tol_mw: float = _key(1e-6, "ADMM's tolerance on the coupling residual per battery (MW)", _positive)
    devices: int = _key(
        1,
        "devices ALADIN splits the fleet over (the same answer; on a CPU, `jaxvpp run` makes JAX "
        "show this many host devices; the other phases run on one)",
        _at_least(1),
    )


@dataclass(frozen=True)
class FrontierConfig:
    """The efficient frontier: the fleet re-solved with one common risk weight per point (one batched solve)."""

    risk_weights: tuple[float, ...] = _key(
        (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
        "risk weights lambda of the frontier's points (dimensionless, >= 0); [] skips the frontier",
        _risk_weights,
    )


@dataclass(frozen=True)
class OutputConfig:
    """Where the run writes."""

    results_dir: str = _key(
        "results",
        "results folder: schedules, summary, convergence, forecast, scenarios and "
        "plots (relative paths are relative to the working directory)",
    )
    data_dir: str = _key("data", "data folder: raw/ (price history) and processed/ (forecast and scenario files)")
    plots: bool = _key(True, "draw the PNG figures (true/false)")
    dpi: int = _key(110, "resolution of the PNG figures (dots per inch)", _at_least(30))


@dataclass(frozen=True)
class RunConfig:
    """Every parameter of ``jaxvpp run``, one section per phase."""

    market: MarketConfig = field(default_factory=MarketConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    scenarios: ScenariosConfig = field(default_factory=ScenariosConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    coordination: CoordinationConfig = field(default_factory=CoordinationConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The configuration as nested plain values (for summary.json)."""
        return {
            s.name: {
                f.name: _plain(getattr(getattr(self, s.name), f.name))
                for f in dataclasses.fields(getattr(self, s.name))
            }
            for s in dataclasses.fields(self)
        }

    def override(self, values: dict[str, Any], *, source: Callable[[str], str] | None = None) -> RunConfig:
        """A copy with ``{"section.key": value}`` replaced, checked like the file's values.

        ``source(key)`` names where a value came from in error messages (e.g. the command-line flag).
        """
        cfg = self
        for dotted, value in values.items():
            sec_name, _, key = dotted.partition(".")
            sec = getattr(cfg, sec_name)
            f = {x.name: x for x in dataclasses.fields(sec)}[key]
            where = source(dotted) if source else dotted
            try:
                v = _convert(f, value)
            except _Bad as exc:
                if where.startswith("-"):  # a command-line flag: "parameter --alpha: ..."
                    raise InputError(f"{exc}, got {value!r}", column=where) from None
                raise InputError(f"key {where}: {exc}, got {value!r}") from None
            cfg = dataclasses.replace(cfg, **{sec_name: dataclasses.replace(sec, **{key: v})})
        _check_together(cfg, lambda k: source(k) if source else k)
        return cfg


#: The sections of the file, in order, and their classes.
SECTIONS: dict[str, type] = {
    "market": MarketConfig,
    "forecast": ForecastConfig,
    "scenarios": ScenariosConfig,
    "risk": RiskConfig,
    "fleet": FleetConfig,
    "target": TargetConfig,
    "coordination": CoordinationConfig,
    "frontier": FrontierConfig,
    "output": OutputConfig,
}

DEFAULT = RunConfig()


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# --------------------------------------------------------------------------------------------------
# Types and values
# --------------------------------------------------------------------------------------------------


class _Bad(ValueError):
    pass


def _kind(f: dataclasses.Field) -> str:
    return {"int": "int", "float": "float", "str": "str", "bool": "bool", "tuple[float, ...]": "floats"}[
        f.type if isinstance(f.type, str) else f.type.__name__
    ]


def _convert(f: dataclasses.Field, value: Any) -> Any:
    """The value in the field's type, checked; raises :class:`_Bad` with the reason."""
    kind = _kind(f)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad("must be true or false")
        v: Any = value
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad("must be an integer")
        v = value
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad("must be a number")
        v = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise _Bad("must be a string (in double quotes)")
        v = value
    else:
        if not isinstance(value, (list, tuple)) or any(
            isinstance(x, bool) or not isinstance(x, (int, float)) for x in value
        ):
            raise _Bad("must be a list of numbers, e.g. [0.0, 0.5, 1.0]")
        v = tuple(float(x) for x in value)
    check = f.metadata.get("check")
    msg = check(v) if check else None
    if msg:
        raise _Bad(msg)
    return v


def _check_together(cfg: RunConfig, name: Callable[[str], str]) -> None:
    """Checks that involve two keys."""
    if cfg.scenarios.count > cfg.scenarios.samples:
        where = name("scenarios.count")
        msg = f"{cfg.scenarios.count} scenarios must not exceed scenarios.samples ({cfg.scenarios.samples})"
        if where.startswith("-"):
            raise InputError(msg, column=where)
        raise InputError(f"key {where}: {msg}")


# --------------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------------


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """Line number (1-based) of ``[section]`` or of ``key`` inside it, for error messages."""
    current = None
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        m = re.match(r"^\[\s*([^\]]+?)\s*\]", line)
        if m:
            current = m.group(1).strip().strip('"')
            if key is None and current == section:
                return i
            continue
        if key is not None and current == section and re.match(rf"^\"?{re.escape(key)}\"?\s*=", line):
            return i
    return None


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML config; keys it leaves out keep the defaults.

    Raises :class:`InputError` naming the file, the line and the key for a missing or unreadable file,
    TOML syntax errors, unknown sections or keys, wrong types and values out of range.
    """
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise InputError("config file not found", file=file)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark is ignored, as in the CSV files
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", file=file) from None

    def fail(section: str, key: str | None, message: str) -> InputError:
        line = _line_of(text, section, key)
        where = f"line {line}, " if line else ""
        what = f"[{section}]" if key is None else f"key {section}.{key}"
        return InputError(f"{where}{what}: {message}", file=file)

    sections: dict[str, Any] = {}
    for sec_name, table in data.items():
        if sec_name not in SECTIONS:
            if not isinstance(table, dict):
                raise InputError(
                    f"key {sec_name!r} outside a section; sections are " + ", ".join(f"[{s}]" for s in SECTIONS),
                    file=file,
                )
            raise fail(sec_name, None, "unknown section; sections are " + ", ".join(f"[{s}]" for s in SECTIONS))
        if not isinstance(table, dict):
            raise InputError(f"{sec_name!r} must be a section [{sec_name}], not a value", file=file)
        cls = SECTIONS[sec_name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in table.items():
            if key not in fields:
                raise fail(sec_name, key, f"unknown key; [{sec_name}] has " + ", ".join(fields))
            try:
                values[key] = _convert(fields[key], value)
            except _Bad as exc:
                raise fail(sec_name, key, f"{exc}, got {value!r}") from None
        sections[sec_name] = cls(**values)
    cfg = RunConfig(**sections)
    if cfg.scenarios.count > cfg.scenarios.samples:
        raise fail(
            "scenarios",
            "count",
            f"{cfg.scenarios.count} scenarios must not exceed scenarios.samples ({cfg.scenarios.samples})",
        )
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _comment(text: str, width: int = 100) -> list[str]:
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, width - 2, break_on_hyphens=False)]


HEADER = """\
# jaxvpp run: the main job's configuration (TOML).
#
# `jaxvpp run --config THIS_FILE` uses it; keys left out keep their defaults, unknown keys are errors.
# Command-line flags (e.g. --batteries, --seed, --out) override the values here.
# Units: power MW, energy MWh, prices EUR/MWh, money EUR, time as stated per key.
"""


def default_config_text(config: RunConfig = DEFAULT) -> str:
    """The configuration as TOML with a comment on every key (the default when no argument is given)."""
    out = [HEADER.rstrip("\n")]
    for sec in dataclasses.fields(RunConfig):
        cls = SECTIONS[sec.name]
        out.append("")
        out.extend(_comment(" ".join((cls.__doc__ or "").split())))
        out.append(f"[{sec.name}]")
        for f in dataclasses.fields(cls):
            out.extend(_comment(f.metadata["help"]))
            out.append(f"{f.name} = {_toml_value(getattr(getattr(config, sec.name), f.name))}")
    return "\n".join(out) + "\n"
