"""README.md is documentation that runs: its commands and its settings table match the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from scripts.settings_table import END, START, readme_block

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None and README.index("```sh") < 200
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert [ln for ln in ci.splitlines() if ln.startswith("make")] == ["make test"]


def test_settings_table_matches_the_settings_code() -> None:
    start, end = README.index(START), README.index(END) + len(END)
    assert README[start:end] == readme_block(), (
        "README settings table is stale: run python scripts/settings_table.py --write"
    )


def test_every_subcommand_in_the_readme_has_help() -> None:
    for command in ("run", "record", "train", "simulate", "demo", "eval", "rules", "config"):
        assert f"iotad {command}" in README
        out = subprocess.run(
            [sys.executable, "-m", "detector", command, "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "usage: iotad" in out.stdout


def test_every_setting_has_a_meaning() -> None:
    """A setting without a description would be a row without a meaning: give the field a
    ``Field(description=...)`` or a docstring under it."""
    from detector.config.settings import WorkerSettings
    from scripts.settings_table import rows

    table = rows(WorkerSettings)
    assert len(table) > 90
    assert [var for var, _, _, meaning in table if not meaning.strip()] == []


def test_the_table_reads_field_descriptions_and_docstrings() -> None:
    from pydantic import BaseModel, ConfigDict, Field

    from scripts.settings_table import rows

    class Example(BaseModel):
        model_config = ConfigDict(use_attribute_docstrings=True)

        a: int = Field(1, ge=0, description="Said in the field.")
        b: str = "x"
        """Said under the field,
        over two lines."""

    assert rows(Example, "X_") == [
        ("X_A", "1", "[0, ∞)", "Said in the field."),
        ("X_B", "x", "", "Said under the field, over two lines."),
    ]


def documented_reject_reasons() -> set[str]:
    """The rejection reasons the README lists (its Input section, from "Anything else is
    rejected with a reason" to "Every reason is exported")."""
    start = README.index("Anything else is rejected with a reason")
    end = README.index("Every reason is exported", start)
    return set(re.findall(r"`([a-z]+(?:_[a-z]+)*)`", README[start:end]))


def test_every_rejection_reason_is_documented() -> None:
    from detector.worker.metrics import REJECT_REASONS

    documented = documented_reject_reasons()
    assert len(documented) >= 25  # the paragraph was found and read
    assert set(REJECT_REASONS) == documented, (
        f"in the code only: {set(REJECT_REASONS) - documented}; "
        f"in the README only: {documented - set(REJECT_REASONS)}"
    )
