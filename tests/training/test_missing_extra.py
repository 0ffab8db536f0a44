"""Commands that need the `train` extra, run without it: one line naming the extra, exit != 0.

The missing modules are simulated in a real `iotad` process: a sitecustomize on its
PYTHONPATH puts None in sys.modules for them, which is what an uninstalled package looks like
to both `import` (ModuleNotFoundError) and `importlib.util.find_spec` (None).
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training import extras

REPO = Path(__file__).resolve().parents[2]
INSTALL = "install the train extra: pip install 'iotad[train]'"


def iotad(tmp_path: Path, blocked: tuple[str, ...], *argv: str) -> subprocess.CompletedProcess:
    """`python -m detector *argv` with `blocked` modules made uninstalled."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "detector", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def readings_csv(path: Path) -> Path:
    rows = [f"{1_700_000_000 + 60 * i},press-1,temp,{20 + (i % 7) * 0.5}" for i in range(400)]
    path.write_text("ts,device,metric,value\n" + "\n".join(rows) + "\n")
    return path


def test_train_without_tensorflow(tmp_path: Path) -> None:
    data = readings_csv(tmp_path / "in.csv")
    proc = iotad(tmp_path, ("tensorflow",), "train", str(data), "--out", str(tmp_path / "m"))
    assert proc.returncode == 1
    assert one_line(proc) == f"iotad train: TensorFlow is not installed; {INSTALL}"
    assert proc.stdout == "" and not (tmp_path / "m").exists()


def test_train_without_matplotlib_needs_it_for_plots_only(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    args = ("train", str(missing), "--out", str(tmp_path / "m"))
    proc = iotad(tmp_path, ("matplotlib",), *args)
    assert proc.returncode == 1
    assert one_line(proc) == f"iotad train: matplotlib is not installed; {INSTALL}"
    # with --no-plots it goes on, to the next problem: the missing file
    proc = iotad(tmp_path, ("matplotlib",), *args, "--no-plots")
    assert proc.returncode == 2
    assert one_line(proc).startswith("iotad train: error: input file")


def test_train_when_the_extra_breaks_on_import(tmp_path: Path) -> None:
    """TensorFlow is found, but a module of the extra fails when the pipeline imports it."""
    data = readings_csv(tmp_path / "in.csv")
    blocked = ("keras",)
    args = ("train", str(data), "--out", str(tmp_path / "m"), "--no-plots", "--quiet")
    proc = iotad(tmp_path, blocked, *args)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert one_line(proc) == f"iotad train: Keras is not installed; {INSTALL}"


def test_eval_nab_lstm_without_tensorflow(tmp_path: Path) -> None:
    nab = ("eval", "nab", "--nab-root", str(tmp_path / "no-nab"), "--out", str(tmp_path / "o"))
    proc = iotad(tmp_path, ("tensorflow",), *nab, "--forecaster", "lstm")
    assert proc.returncode == 2
    line = one_line(proc)
    assert line == f"iotad eval nab: TensorFlow is not installed; {INSTALL} (or --forecaster naive)"
    # the naive baseline needs no extra: it gets as far as looking for the corpus
    proc = iotad(tmp_path, ("tensorflow",), *nab, "--forecaster", "naive")
    assert proc.returncode != 0
    assert "iotad[train]" not in proc.stderr and "no-nab" in proc.stderr


def test_eval_factory_lstm_without_tensorflow(tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    proc = iotad(tmp_path, ("tensorflow",), "eval", "factory", "--forecaster", "lstm", "--out", out)
    assert proc.returncode == 2
    line = one_line(proc)
    assert (
        line
        == f"iotad eval factory: TensorFlow is not installed; {INSTALL} (or --forecaster naive)"
    )


def test_problem_lines() -> None:
    assert extras.train_extra_problem("iotad train", ("sys",)) is None
    line = extras.train_extra_problem("c", ("tensorflow_nope", "matplotlib_nope"), "x")
    assert line == f"c: tensorflow_nope and matplotlib_nope are not installed; {INSTALL} (or x)"
    err = ModuleNotFoundError("No module named 'tensorflow.python'", name="tensorflow.python")
    assert extras.is_train_module_error(err)
    assert not extras.is_train_module_error(ModuleNotFoundError("x", name="numpy"))


def test_doctests() -> None:
    assert doctest.testmod(extras).failed == 0


@pytest.mark.parametrize("module", ["detector.cli", "training.cli", "training.eval_cli"])
def test_the_check_imports_nothing_heavy(module: str) -> None:
    code = (
        f"import sys, {module}, training.extras as e\n"
        "e.train_extra_problem('x', ('tensorflow', 'matplotlib'))\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert out.strip() == "[]"


def test_demo_without_tensorflow_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from detector.sim.demo_model import DemoPlant, ModelError, ensure_model

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # what an uninstalled package is
    with pytest.raises(ModelError) as info:
        ensure_model(DemoPlant(), tmp_path / "cache", threading.Event(), lambda _: None)
    assert str(info.value) == f"iotad demo: TensorFlow is not installed; {INSTALL}"
    assert not (tmp_path / "cache").exists()  # nothing started, nothing half-written
