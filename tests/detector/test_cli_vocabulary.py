"""One CLI vocabulary (docs/cli.md): the new names work, every old name still works and says
once that it is deprecated, and the page names every flag of every subcommand."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from detector.cli import build_parser
from detector.config.settings import load_settings
from detector.worker.cli_flags import DeprecatedAlias, deprecated_env, parse_duration
from detector.worker.run_cli import main as run_main
from detector.worker.run_cli import overrides_from_args

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.upper().startswith("IOTAD_") or key == "NAB_ROOT":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def subparsers(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[f"{prefix}{name}"] = sub
                out.update(subparsers(sub, f"{prefix}{name} "))
    return out


def pem(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("-")
    return str(path)


# -- new names --------------------------------------------------------------------------------


def test_run_takes_the_whole_mqtt_vocabulary(tmp_path: Path) -> None:
    ca, cert, key = (pem(tmp_path, n) for n in ("ca.pem", "cert.pem", "key.pem"))
    (tmp_path / "pw").write_text("s3cret\n")
    args = parse(
        "run", "--model", "/m", "--host", "b", "--port", "8883", "--client-id", "c1",
        "--username", "u", "--password-file", str(tmp_path / "pw"), "--tls",
        "--ca-file", ca, "--cert-file", cert, "--key-file", key, "--quiet",
    )  # fmt: skip
    s = load_settings(overrides_from_args(args), env_file=None, secrets_dir=tmp_path / "none")
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.client_id, s.mqtt.username) == ("b", 8883, "c1", "u")
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "s3cret"
    tls = s.mqtt.tls
    assert tls.enabled and (str(tls.ca_file), str(tls.cert_file), str(tls.key_file)) == (
        ca,
        cert,
        key,
    )
    assert s.log.level == "WARNING"  # --quiet


def test_log_level_wins_over_quiet() -> None:
    args = parse("run", "--model", "/m", "--quiet", "--log-level", "debug")
    assert overrides_from_args(args)["log"]["level"] == "DEBUG"


def test_a_password_file_that_cannot_be_read_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse("run", "--model", "/m", "--password-file", str(tmp_path / "hunter2"))
    assert run_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["iotad run: --password-file: cannot read the file (No such file or directory)"]


@pytest.mark.parametrize("command", [["run"], ["record", "--out", "h"], ["simulate"]])
def test_a_password_flag_is_never_an_abbreviation_of_password_file(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(*command, "--password", "hunter2")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --password" in err and "hunter2" not in err


def test_record_and_simulate_share_the_names(tmp_path: Path) -> None:
    ca = pem(tmp_path, "ca.pem")
    for command in (["record", "--out", "h"], ["simulate"]):
        args = parse(
            *command, "--tls", "--ca-file", ca, "--password-file", "pw", "--client-id", "x"
        )
        assert (args.tls, args.ca_file, args.password_file, args.client_id) == (True, ca, "pw", "x")


def test_durations_take_units_everywhere() -> None:
    assert parse("simulate", "--duration", "15m").duration == 900.0
    assert parse("demo", "--duration", "2h").duration == 7200.0
    with pytest.raises(argparse.ArgumentTypeError, match="bad duration"):
        parse_duration("soon")


def test_eval_names_the_forecaster_kind() -> None:
    assert parse("eval", "nab", "--forecaster", "naive").forecaster == "naive"
    assert parse("eval", "factory", "--forecaster", "lstm").forecaster == "lstm"
    assert parse("eval", "factory").forecaster == "both"


# -- deprecated names -------------------------------------------------------------------------

OLD_NAMES = [
    (["simulate", "--cafile", "c.pem"], "ca_file", "c.pem", "--cafile", "--ca-file"),
    (["simulate", "--certfile", "c.pem"], "cert_file", "c.pem", "--certfile", "--cert-file"),
    (["simulate", "--keyfile", "k.pem"], "key_file", "k.pem", "--keyfile", "--key-file"),
    (["simulate", "--duration-s", "90"], "duration", 90.0, "--duration-s", "--duration"),
    (["eval", "nab", "--model", "naive"], "forecaster", "naive", "--model", "--forecaster"),
    (["eval", "factory", "--model", "lstm"], "forecaster", "lstm", "--model", "--forecaster"),
]


@pytest.mark.parametrize(("argv", "dest", "value", "old", "new"), OLD_NAMES)
def test_old_flag_names_still_work_and_say_so_once(
    argv: list[str],
    dest: str,
    value: object,
    old: str,
    new: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parse(*argv, *argv[-2:])  # given twice: still one line
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{old} is deprecated, use {new}" in err[0]
    assert err[0].startswith(f"iotad {argv[0]}")


def test_new_names_say_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    parse("simulate", "--ca-file", "c", "--duration", "9")
    parse("eval", "nab", "--forecaster", "naive")
    assert capsys.readouterr().err == ""


def test_old_names_are_not_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["simulate"], ["eval", "nab"], ["eval", "factory"]):
        with pytest.raises(SystemExit):
            parse(*command, "--help")
        out = capsys.readouterr().out
        for old in ("--cafile", "--certfile", "--keyfile", "--duration-s", "--model"):
            assert old not in out.replace("--model naive", ""), (command, old)


def test_old_password_variable_still_works_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = {"IOTAD_SIM_PASSWORD": "a"}
    assert (
        deprecated_env("IOTAD_MQTT__PASSWORD", "IOTAD_SIM_PASSWORD", prog="p", environ=old) == "a"
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "IOTAD_SIM_PASSWORD is deprecated, use IOTAD_MQTT__PASSWORD" in line
    both = {"IOTAD_SIM_PASSWORD": "a", "IOTAD_MQTT__PASSWORD": "b"}
    assert (
        deprecated_env("IOTAD_MQTT__PASSWORD", "IOTAD_SIM_PASSWORD", prog="p", environ=both) == "b"
    )
    assert capsys.readouterr().err == ""


def test_simulate_reads_the_worker_password_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from detector.sim.simulate_cli import _password

    monkeypatch.setenv("IOTAD_MQTT__PASSWORD", "from-env")
    assert _password(parse("simulate")) == "from-env"
    (tmp_path / "pw").write_text("from-file\n")
    assert _password(parse("simulate", "--password-file", str(tmp_path / "pw"))) == "from-file"
    monkeypatch.delenv("IOTAD_MQTT__PASSWORD")
    monkeypatch.setenv("IOTAD_SIM_PASSWORD", "old")
    assert _password(parse("simulate")) == "old"
    assert "deprecated" in capsys.readouterr().err


def test_nab_root_variable_and_its_old_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.eval_cli import find_nab_root

    corpus = tmp_path / "nab"
    (corpus / "labels").mkdir(parents=True)
    (corpus / "labels" / "combined_windows.json").write_text("{}")
    monkeypatch.setenv("NAB_ROOT", str(corpus))
    assert find_nab_root(None) == corpus
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("NAB_ROOT")
    monkeypatch.setenv("IOTAD_NAB_ROOT", str(corpus))
    assert find_nab_root(None) == corpus
    assert "IOTAD_NAB_ROOT is deprecated, use NAB_ROOT" in capsys.readouterr().err


# -- the page ---------------------------------------------------------------------------------


def test_the_page_names_every_flag_of_every_subcommand() -> None:
    missing = []
    for name, sub in subparsers(build_parser()).items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            for option in action.option_strings:
                if option.startswith("--") and option != "--help" and f"`{option}" not in CLI_DOC:
                    missing.append(f"iotad {name} {option}")
    assert missing == [], "docs/cli.md does not name these flags"


def test_the_page_lists_every_deprecated_flag_with_its_new_name() -> None:
    table = {
        (m.group(1), m.group(2))
        for m in re.finditer(r"^\| `(--[a-z-]+)` \| `(--[a-z-]+)`", CLI_DOC, re.M)
    }
    found = set()
    for sub in subparsers(build_parser()).values():
        for action in sub._actions:
            if isinstance(action, DeprecatedAlias):
                found.add((action.option_strings[0], action.target.option_strings[0]))
    assert found == table
    assert len(found) == 5
