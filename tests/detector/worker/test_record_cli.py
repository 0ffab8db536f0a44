"""`iotad record` before it connects: settings errors and a missing extra, one line each."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from detector.cli import main


@pytest.fixture
def no_iotad_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("IOTAD_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--port", "0"], "setting IOTAD_MQTT__PORT (--port): Input should be greater"),
        (["--client-id", "has space"], "--client-id 'has space': must be 1-64 of"),
        (["--topic", "#"], "also matches the worker's own output"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_iotad_env: None,
    extra: list[str],
    message: str,
) -> None:
    status = main(["record", "--out", str(tmp_path / "h"), "--env-file", "", *extra])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iotad record: ") and message in err[0], err
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize("extra", [["--max-rows", "-1"], ["--rotate-s", "inf"]])
def test_bad_rotation_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["record", "--out", str(tmp_path / "h"), *extra])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"iotad record: error: argument {extra[0]}: ")
    assert last.endswith("must be >= 0 and finite")


def test_parquet_without_pyarrow_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector.config.settings import WorkerSettings
    from detector.worker.record_cli import record

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code = record(
        WorkerSettings(_env_file=None),  # type: ignore[call-arg]
        out=tmp_path / "h",
        fmt="parquet",
        rotate_s=3600,
        max_rows=0,
        client_id="t-record",
        stop=threading.Event(),
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "iotad record: writing Parquet needs pyarrow, which is not installed: "
        "pip install 'iotad[parquet]' (or record CSV, the default)"
    ]
