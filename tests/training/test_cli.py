"""`iotad train` errors: one clear line on stderr and exit status 2, never a traceback.

These fail before TensorFlow is imported, so they are fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detector.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_missing_file_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "detector", "train", str(missing), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"iotad train: error: input file {missing} does not exist or is not a file"
    ]
    assert proc.stdout == "" and not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        ("when,what\n1,2\n", [], "bad CSV header 'when,what'"),
        ("ts,temp\n1,2\n", [], "wide CSV (columns ts, temp): give the device name with --device"),
        ("ts,device,metric,value\n1,d,m,2\n2,d,m,3\n", [], "no usable series"),
        ("ts,device,metric,value\n1,bad name,m,2\n", [], "device name 'bad name' is not valid"),
        ("ts,device,metric,value\n1,d,m,2\n", ["--split", "1.5"], "split must be between"),
        ("ts,device,metric,value\n1,d,m,2\n", ["--units", "8,4", "--layers", "3"], "2 unit"),
    ],
)
def test_bad_input_or_option_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, extra: list[str], message: str
) -> None:
    data = tmp_path / "in.csv"
    data.write_text(text)
    status = main(["train", str(data), "--out", str(tmp_path / "m"), *extra])
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("iotad train: error: ")
    assert message in err
    assert not (tmp_path / "m").exists()


def test_a_foreign_output_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "in.csv"
    data.write_text("ts,device,metric,value\n" + "".join(f"{i},d,m,{i % 7}\n" for i in range(60)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["train", str(data), "--out", str(tmp_path / "out"), "--window", "4"]) == 2
    assert "not a model artifact; choose another --out" in capsys.readouterr().err
