"""Logging of the long-running commands (run, record, simulate, demo): text, or JSON lines.

``--log-format json`` (or ``IOTAD_LOG__FORMAT=json``) writes one JSON object per line on
stderr: ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``, and
``exc`` (the traceback) when there is one; a log shipper reads it without a parsing rule.
What a command prints on stderr itself after logging starts goes through `stderr_line`, and
what native code prints there while the model loads (LiteRT's "INFO: Created TensorFlow Lite
XNNPACK delegate") through `native_stderr_logged`, so that in JSON mode every line of stderr
is JSON. (Usage errors found while parsing the flags, before logging is set up, are plain
text.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str, text_format: str = TEXT_FORMAT) -> None:
    """Root logging to stderr at `level` (a name: ``INFO``), as `fmt` (``text``, ``json``).

    Like `logging.basicConfig`, nothing changes when the root logger has handlers already
    (a test's, or an embedding program's).
    """
    if logging.getLogger().handlers:
        return
    stream = sys.stderr
    if fmt == "json":
        # A descriptor of its own: `native_stderr_logged` may point descriptor 2 elsewhere.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream = os.fdopen(
                os.dup(sys.stderr.fileno()), "w", buffering=1, errors="backslashreplace"
            )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])


def json_logging() -> bool:
    """Whether the root logger writes JSON lines (`configure_logging` with ``json``)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def stderr_line(prog: str, message: str, *, level: int = logging.ERROR) -> None:
    """A command's own line on stderr: ``prog: message`` as text, or a JSON log record of
    logger ``prog`` with dots (``iotad.record``) when logging is JSON."""
    if json_logging():
        logging.getLogger(prog.replace(" ", ".")).log(level, "%s", message)
    else:
        print(f"{prog}: {message}", file=sys.stderr, flush=True)


_NATIVE_LEVELS = {"INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}


@contextlib.contextmanager
def native_stderr_logged(logger: str) -> Iterator[None]:
    """While inside, what anything writes to descriptor 2 (native libraries included) is
    held and then logged, one record per line, as `logger` (level from an ``INFO:``,
    ``WARNING:`` or ``ERROR:`` prefix, else WARNING). Does nothing unless logging is JSON:
    as text, those lines may stay as they are."""
    if not json_logging():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            log = logging.getLogger(logger)
            for line in held.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    prefix, _, rest = line.partition(": ")
                    level = _NATIVE_LEVELS.get(prefix)
                    log.log(level or logging.WARNING, "%s", rest if level else line)
