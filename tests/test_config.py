"""The TOML configuration of ``jaxvpp run``: round trip, located errors, command-line overrides."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from jaxvpp.cli import build_parser, main
from jaxvpp.cli.run import run_config
from jaxvpp.config import DEFAULT, SECTIONS, RunConfig, default_config_text, load_config
from jaxvpp.errors import InputError


def _write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_text_loads_into_the_default_config(tmp_path):
    p = _write(tmp_path, default_config_text())
    assert load_config(p) == DEFAULT


def test_every_key_is_written_with_a_comment_above_it():
    lines = default_config_text().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z_]+ = ", line)]
    n_fields = sum(len(dataclasses.fields(cls)) for cls in SECTIONS.values())
    assert len(keys) == n_fields
    for i in keys:
        assert lines[i - 1].startswith("# "), lines[i]
    for name in SECTIONS:
        assert f"[{name}]" in lines


def test_a_changed_config_round_trips(tmp_path):
    cfg = DEFAULT.override(
        {
            "fleet.batteries": 7,
            "risk.alpha": 0.1,
            "frontier.risk_weights": [0, 1.5],
            "target.theta": 1,
            "output.plots": False,
            "market.prices_file": 'a "q".csv',
        }
    )
    assert cfg.target.theta == 1.0 and isinstance(cfg.target.theta, float)
    assert cfg.frontier.risk_weights == (0.0, 1.5)
    assert load_config(_write(tmp_path, default_config_text(cfg))) == cfg


def test_keys_left_out_keep_their_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "[fleet]\nbatteries = 12\n"))
    assert cfg.fleet.batteries == 12
    assert dataclasses.replace(cfg, fleet=DEFAULT.fleet) == DEFAULT


@pytest.mark.parametrize(
    "text, key, line, why",
    [
        ("[fleet]\nbatteries = 10\n\n[flet]\nseed = 1\n", "[flet]", 4, "unknown section"),
        ("[fleet]\nbatteries = 10\nsize = 3\n", "fleet.size", 3, "unknown key"),
        ('[fleet]\nbatteries = "ten"\n', "fleet.batteries", 2, "must be an integer"),
        ("[fleet]\nbatteries = 2.5\n", "fleet.batteries", 2, "must be an integer"),
        ("[fleet]\nbatteries = true\n", "fleet.batteries", 2, "must be an integer"),
        ("[fleet]\nbatteries = 0\n", "fleet.batteries", 2, "at least 1"),
        ("# c\n[risk]\nalpha = 1.5\n", "risk.alpha", 3, "(0, 1)"),
        ('[risk]\nbaseline = "median"\n', "risk.baseline", 2, "'zero', 'expected'"),
        ("[output]\nplots = 1\n", "output.plots", 2, "true or false"),
        ("[frontier]\nrisk_weights = [0.0, -1.0]\n", "frontier.risk_weights", 2, ">= 0"),
        ("[frontier]\nrisk_weights = 0.5\n", "frontier.risk_weights", 2, "list of numbers"),
        ('[market]\nstart = "1/1/2024"\n', "market.start", 2, "YYYY-MM-DD"),
        ("[scenarios]\nsamples = 10\ncount = 20\n", "scenarios.count", 3, "must not exceed"),
        ("[coordination]\ndevices = 0\n", "coordination.devices", 2, "at least 1"),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path, text, key, line, why):
    p = _write(tmp_path, text, "bad_config.toml")
    with pytest.raises(InputError) as info:
        load_config(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: line {line}, ") and key in msg and why in msg, msg


def test_key_outside_a_section_and_syntax_errors(tmp_path):
    with pytest.raises(InputError, match=r"'batteries' outside a section"):
        load_config(_write(tmp_path, "batteries = 3\n"))
    with pytest.raises(InputError, match=r"broken\.toml: not valid TOML"):
        load_config(_write(tmp_path, "[fleet\nbatteries = 3\n", "broken.toml"))
    with pytest.raises(InputError, match=r"missing\.toml: config file not found"):
        load_config(tmp_path / "missing.toml")


def test_run_with_a_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    p = _write(tmp_path, "[coordination]\nmax_iter = -1\n", "bad.toml")
    out, data = tmp_path / "results", tmp_path / "data"
    assert main(["run", "--config", str(p), "--out", str(out), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "coordination.max_iter" in err and "line 2" in err
    assert not out.exists() and not data.exists()


def test_flags_override_the_config_file(tmp_path):
    p = _write(tmp_path, "[fleet]\nbatteries = 8\nseed = 1\n[market]\nhistory_days = 60\n[risk]\nalpha = 0.1\n")
    args = build_parser().parse_args(
        [
            "run",
            "--config",
            str(p),
            "--batteries",
            "5",
            "--seed",
            "7",
            "--out",
            "elsewhere",
            "--no-admm",
            "--theta",
            "0.3",
        ]
    )
    cfg = run_config(args)
    assert cfg.fleet.batteries == 5  # the flag wins over the file's 8
    assert (cfg.fleet.seed, cfg.market.seed, cfg.scenarios.seed, cfg.forecast.seed) == (7, 7, 7, 7)
    assert cfg.output.results_dir == "elsewhere" and cfg.coordination.admm is False and cfg.target.theta == 0.3
    assert cfg.market.history_days == 60 and cfg.risk.alpha == 0.1  # untouched keys keep the file's values
    assert run_config(build_parser().parse_args(["run"])) == DEFAULT


def test_bad_flag_value_names_the_flag(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", "--alpha", "1.5", "--out", str(out)]) == 2
    assert "parameter --alpha" in capsys.readouterr().err
    assert main(["run", "--samples", "5", "--k", "9", "--out", str(out)]) == 2
    assert "parameter --k" in capsys.readouterr().err
    assert not out.exists()


def test_init_config_writes_the_commented_default(tmp_path, capsys):
    p = tmp_path / "run.toml"
    assert main(["init-config", "--out", str(p)]) == 0
    assert load_config(p) == DEFAULT
    assert p.read_text() == default_config_text()
    capsys.readouterr()
    assert main(["init-config", "--out", str(p)]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err
    p.write_text("edited\n")
    assert main(["init-config", "--out", str(p), "--force"]) == 0 and load_config(p) == DEFAULT
    capsys.readouterr()
    assert main(["init-config"]) == 0
    assert capsys.readouterr().out == default_config_text()


def test_help_texts_name_every_option(capsys):
    parser = build_parser()
    for argv in (["--help"], ["run", "--help"], ["init-config", "--help"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 0
    text = capsys.readouterr().out
    for word in (
        "run",
        "init-config",
        "coordinate",
        "--config",
        "--batteries",
        "--seed",
        "--quiet",
        "--force",
        "schedules.csv",
        "summary.json",
        "Exit codes",
    ):
        assert word in text, word
    assert isinstance(DEFAULT, RunConfig)
