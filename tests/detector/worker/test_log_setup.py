"""JSON log lines: one object per line with ts, level, logger, message and exc."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

from detector.worker.log_setup import JsonFormatter


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad value")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("iotad.run", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_a_line_is_one_json_object_with_the_fields() -> None:
    line = JsonFormatter().format(record("queue at %d of %d", 5, 10))
    obj = json.loads(line)
    assert set(obj) == {"ts", "level", "logger", "message"}
    assert (obj["level"], obj["logger"], obj["message"]) == (
        "WARNING",
        "iotad.run",
        "queue at 5 of 10",
    )
    assert obj["ts"].endswith("Z")
    assert datetime.fromisoformat(obj["ts"].replace("Z", "+00:00")).tzinfo is not None


def test_an_exception_and_newlines_stay_in_one_line() -> None:
    line = JsonFormatter().format(record('two\nlines "quoted"', exc=True))
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["message"] == 'two\nlines "quoted"'
    assert obj["exc"].startswith("Traceback") and obj["exc"].endswith("ValueError: bad value")


def test_what_native_code_writes_to_stderr_becomes_records() -> None:
    """In a fresh interpreter: pytest's own log handlers would keep JSON logging off here."""
    code = textwrap.dedent(
        """
        import logging, os
        from detector.worker.log_setup import configure_logging, native_stderr_logged
        configure_logging("INFO", "json")
        logging.getLogger("before").info("one")
        with native_stderr_logged("native"):
            os.write(2, b"INFO: Created a delegate\\nsomething plain\\n")
            logging.getLogger("inside").warning("logged meanwhile")
        os.write(2, b"")
        """
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert [(o["logger"], o["level"], o["message"]) for o in lines] == [
        ("before", "INFO", "one"),
        ("inside", "WARNING", "logged meanwhile"),
        ("native", "INFO", "Created a delegate"),
        ("native", "WARNING", "something plain"),
    ]
