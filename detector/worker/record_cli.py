"""`iotad record`: subscribe like the worker and write long-format history files.

The broker connection, topics, topic patterns, payload limits, TLS and credentials are the
worker's settings (``IOTAD_MQTT__*``, ``IOTAD_PAYLOAD__*``, the same flags as `iotad run`);
what to write is given by flags. Files, rotation and what a crash can lose:
`detector.worker.history` and `detector.worker.recorder`.

Cheap to import, like every subcommand module.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.worker.cli_flags import (
    LOG_FLAGS,
    add_log_arguments,
    add_settings_file_arguments,
)
from detector.worker.mqtt_flags import MQTT_FLAGS, SUBSCRIBE_FLAGS, add_mqtt_arguments

if TYPE_CHECKING:
    from detector.config.settings import WorkerSettings
    from detector.worker.recorder import Recorder

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# flag dest -> (dotted setting, flag as shown in errors); the MQTT flags of `iotad run`
FLAGS: dict[str, tuple[str, str]] = {**MQTT_FLAGS, **SUBSCRIBE_FLAGS, **LOG_FLAGS}

EPILOG = """\
The broker, topics, topic patterns, TLS and credentials are the worker's settings
(IOTAD_MQTT__HOST, IOTAD_MQTT__TOPICS, IOTAD_MQTT__TOPIC_PATTERNS, IOTAD_MQTT__USERNAME,
IOTAD_MQTT__PASSWORD from the environment or the secrets directory, IOTAD_MQTT__TLS__*,
IOTAD_PAYLOAD__*; see `iotad run --help`). IOTAD_MQTT__CLIENT_ID is the worker's and is not
used here: the recorder's client id is --client-id, default <worker id>-record.

Files: <out>/history-<UTC start>-<n>.csv (or .parquet), columns ts,device,metric,value,
one per --rotate-s of wall clock (aligned: 3600 starts each file on the hour) or per
--max-rows rows. A file being written is <name>.csv.part; train on the directory with
`iotad train DIR`, which reads finished files only. Messages are acknowledged after their
readings are on disk (fsync); a crash loses nothing acknowledged, the next start finishes
the file it left, and the broker sends the unacknowledged messages again.
Exit codes: 0 after SIGTERM/SIGINT, 1 when the broker or the directory cannot be used,
2 for invalid settings."""


def _non_negative(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be >= 0 and finite")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `iotad record`."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add("--out", type=Path, required=True, metavar="DIR", help="directory of the history files")
    add(
        "--format",
        choices=("csv", "parquet"),
        default="csv",
        help="finished files as CSV (default) or Parquet (needs the parquet extra)",
    )
    add(
        "--rotate-s",
        type=_non_negative(float),
        default=3600.0,
        metavar="S",
        help="start a new file at every multiple of S seconds of wall clock (3600; 0: never)",
    )
    add(
        "--max-rows",
        type=_non_negative(int),
        default=1_000_000,
        metavar="N",
        help="start a new file after N rows (1000000; 0: no limit)",
    )
    add_mqtt_arguments(
        parser,
        subscribe=True,
        client_id_help="MQTT client id (default <worker id>-record; keep it stable)",
    )
    add_log_arguments(
        parser, quiet_help="log warnings and errors only (and the summary)", default_level="INFO"
    )
    add_settings_file_arguments(parser)


def load_record_settings(args: argparse.Namespace) -> WorkerSettings:
    """The worker's settings without the model (`iotad record` needs none); raises
    `SettingsError` with one line per problem."""
    from detector.config.config_file import config_path
    from detector.config.settings import SettingsError, load_settings
    from detector.engine.readings import valid_name
    from detector.worker.mqtt_flags import PasswordFileError, flag_overrides

    try:
        overrides, flags = flag_overrides(args, FLAGS)
        settings = load_settings(
            overrides,
            env_file=args.env_file or None,
            config_file=config_path(args.config),
            flags=flags,
            require_model=False,
        )
    except PasswordFileError as exc:
        raise SettingsError([str(exc)]) from None
    if args.client_id is not None and not valid_name(args.client_id):
        raise SettingsError(
            [f"--client-id {args.client_id!r}: must be 1-64 of [A-Za-z0-9_.-] (a topic segment)"]
        )
    return settings


def record_client_id(settings: WorkerSettings, given: str | None) -> str:
    """``--client-id``, else ``<worker id>-record``: never the worker's own id, whose session
    the broker would hand over (and the worker would be disconnected)."""
    return given or f"{settings.worker_id[:57]}-record"


def main(args: argparse.Namespace) -> int:
    from detector.config.settings import SettingsError

    try:
        settings = load_record_settings(args)
    except SettingsError as exc:
        for line in exc.lines:
            print(f"iotad record: {line}", file=sys.stderr)
        return EXIT_USAGE
    from detector.worker.log_setup import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    stop = threading.Event()
    _install_signal_handlers(stop)
    return record(
        settings,
        out=args.out,
        fmt=args.format,
        rotate_s=args.rotate_s,
        max_rows=args.max_rows,
        client_id=record_client_id(settings, args.client_id),
        stop=stop,
    )


def _install_signal_handlers(stop: threading.Event) -> None:
    import signal

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def record(
    settings: WorkerSettings,
    *,
    out: Path,
    fmt: str,
    rotate_s: float,
    max_rows: int,
    client_id: str,
    stop: threading.Event,
    started: Any = None,
) -> int:
    """Record until `stop` is set; prints the summary line and returns the exit code.

    `started`, if given, is called with the running `Recorder` once connected (tests).
    """
    import logging

    from detector.config.settings import output_filters
    from detector.worker.env_warnings import unknown_env_warnings
    from detector.worker.history import HistoryError, HistoryWriter
    from detector.worker.log_setup import stderr_line
    from detector.worker.mqtt_client import ConnectError, MqttConnection
    from detector.worker.payloads import PayloadDecoder
    from detector.worker.ratelimit import RateLimitedLog
    from detector.worker.recorder import Recorder

    log = logging.getLogger("iotad.record")
    for line in unknown_env_warnings():
        log.warning("%s", line)
    s = settings
    started_s = time.monotonic()
    try:
        writer = HistoryWriter(out, fmt, rotate_s=rotate_s, max_rows=max_rows)  # type: ignore[arg-type]
    except HistoryError as exc:
        stderr_line("iotad record", str(exc))
        return EXIT_FAILED
    for path in writer.stats.recovered:
        log.info("finished %s, left by an earlier run", path)
    status_topic = f"{s.output.status_prefix}/{client_id}"
    box: dict[str, Any] = {}
    recorder = Recorder(
        writer,
        PayloadDecoder(s.mqtt.topic_patterns, s.payload),
        lambda acks: box["conn"].ack_many(acks),
        queue_size=s.queue_size,
        max_batch=s.max_batch,
        reject_log=RateLimitedLog(
            logging.getLogger("iotad.rejects"), s.log.reject_lines, s.log.reject_interval_s
        ),
    )
    try:
        conn = MqttConnection(
            s.mqtt,
            client_id,
            status_topic=status_topic,
            on_message=recorder.on_message,
            status_extra={"recorder": client_id},
            # the worker's outputs (alerts, dead letters, its status) and our status: never
            # history, even through a filter that encloses them
            output_filters=[*output_filters(s), status_topic],
        )
    except ConnectError as exc:
        stderr_line("iotad record", str(exc))
        return EXIT_FAILED
    box["conn"] = conn
    failure: list[BaseException] = []
    # Running before we connect: a persistent session may deliver a backlog during the
    # handshake, and the bounded queue must be drained meanwhile.
    thread = threading.Thread(
        target=_run_recorder, args=(recorder, stop, failure), name="iotad-record", daemon=True
    )
    thread.start()
    code = EXIT_OK
    try:
        conn.start(stop=stop)
        log.info("recording %s to %s (%s)", ", ".join(s.mqtt.topics), out, fmt)
        if started is not None and not stop.is_set():
            started(recorder)
        while not stop.wait(0.2) and thread.is_alive():
            pass
    except ConnectError as exc:
        stderr_line("iotad record", str(exc))
        code = EXIT_FAILED
    finally:
        stop.set()
        thread.join()
        try:
            conn.close()
        except Exception as exc:  # shutting down anyway
            log.warning("disconnect: %s", exc)
    if failure:
        stderr_line("iotad record", f"failed: {failure[0]}")
        code = EXIT_FAILED
    print(recorder.summary(time.monotonic() - started_s), flush=True)
    return code


def _run_recorder(recorder: Recorder, stop: threading.Event, failure: list[BaseException]) -> None:
    try:
        recorder.run(stop)
    except Exception as exc:  # reported by `record`, which exits 1
        failure.append(exc)
        stop.set()
