"""`iotad run`: the streaming worker. MQTT or NATS in; alerts, dead letters and metrics out.

Cheap to import (the CLI imports every subcommand to build its help): pydantic, paho, numpy
and LiteRT are imported when the command runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

# Before numpy is imported anywhere: OpenBLAS' default threads made small matmuls erratic
# (4k-44k windows/s for the same work) and the worker's second core belongs to paho.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from detector.worker.cli_flags import (
    LOG_FLAGS,
    add_log_arguments,
    add_settings_file_arguments,
)
from detector.worker.mqtt_flags import MQTT_FLAGS, SUBSCRIBE_FLAGS, add_mqtt_arguments

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from detector.config.settings import WorkerSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# flag dest -> (dotted setting, flag as shown in errors)
FLAGS: dict[str, tuple[str, str]] = {
    **MQTT_FLAGS,
    **SUBSCRIBE_FLAGS,
    "client_id": ("mqtt.client_id", "--client-id"),
    "model": ("model.path", "--model"),
    "metrics_host": ("metrics.host", "--metrics-host"),
    "metrics_port": ("metrics.port", "--metrics-port"),
    "worker_id": ("worker_id", "--worker-id"),
    "threshold": ("detection.threshold", "--threshold"),
    "scores": ("output.scores", "--scores"),
    **LOG_FLAGS,
}

EPILOG = """\
Every setting can also be given as an environment variable (IOTAD_ prefix, `__` between
levels), in a .env file, or as a file in the secrets directory named like the variable
(IOTAD_SECRETS_DIR, default /run/secrets): e.g. IOTAD_MQTT__HOST, IOTAD_MQTT__PORT,
IOTAD_MQTT__TOPICS (comma-separated), IOTAD_MQTT__USERNAME, IOTAD_MQTT__PASSWORD (environment,
secrets file or --password-file: never a password on the command line), IOTAD_MQTT__TLS__CA_FILE,
IOTAD_MQTT__TLS__CERT_FILE, IOTAD_MQTT__TLS__KEY_FILE, IOTAD_MQTT__SESSION_EXPIRY_S,
IOTAD_MODEL__PATH, IOTAD_METRICS__PORT, IOTAD_DETECTION__THRESHOLD, IOTAD_OUTPUT__SCORES,
IOTAD_OUTPUT__DEADLETTER_TOPIC, IOTAD_PAYLOAD__MAX_BYTES, IOTAD_CHECKPOINT__PATH (detection
state saved there every IOTAD_CHECKPOINT__INTERVAL_S and on shutdown, restored at start),
IOTAD_RULES__PATH (per-device rules; reloaded when it changes and on SIGHUP, see
`iotad rules --help`).
IOTAD_SOURCE=nats reads NATS JetStream partitions instead, shared by several workers:
IOTAD_SHARD=i/N (or ordinal/N in a StatefulSet), IOTAD_NATS__URLS, IOTAD_NATS__PARTITIONS,
credentials and TLS in IOTAD_NATS__* (see docs/scale-out.md).
A TOML settings file (--config FILE, or IOTAD_CONFIG) holds the same settings as tables
([mqtt] host = "broker"; example: deploy/iotad.example.toml). Precedence, highest first:
flags, environment, .env, secrets directory, the TOML file, defaults. `iotad config` prints
the settings in effect. The flags are the same as other subcommands': docs/cli.md.
SIGHUP (or a new artifact at the model path, checked every IOTAD_MODEL__RELOAD_CHECK_S) swaps
the model between batches, keeping every series' state (docs/model-lifecycle.md).
Exit codes: 0 after SIGTERM/SIGINT, 1 when the model, the broker or NATS cannot be used,
2 for invalid settings or an invalid rules file."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `iotad run` (the most used settings; the rest are IOTAD_* variables)."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add("--model", metavar="DIR", help="model artifact directory (IOTAD_MODEL__PATH)")
    add_mqtt_arguments(
        parser,
        subscribe=True,
        client_id_help="MQTT client id (IOTAD_MQTT__CLIENT_ID; default the worker id)",
    )
    add("--worker-id", help="stable worker id: MQTT client id and status topic (IOTAD_WORKER_ID)")
    add("--metrics-host", help="bind address for /metrics /healthz /readyz (default 0.0.0.0)")
    add("--metrics-port", type=int, help="port for /metrics /healthz /readyz (default 9108)")
    add("--threshold", type=float, help="anomaly score threshold (IOTAD_DETECTION__THRESHOLD)")
    add(
        "--scores",
        action="store_true",
        default=None,
        help="publish every scored reading on scores/{device}/{metric} (IOTAD_OUTPUT__SCORES)",
    )
    add_log_arguments(parser, quiet_help="log warnings and errors only", default_level="INFO")
    add_settings_file_arguments(parser)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Nested settings from the flags that were given (None means not given), with the
    password from ``--password-file``."""
    from detector.worker.mqtt_flags import flag_overrides

    return flag_overrides(args, FLAGS)[0]


def main(args: argparse.Namespace) -> int:
    from detector.config.config_file import config_path
    from detector.config.settings import SettingsError, load_settings
    from detector.worker.mqtt_flags import PasswordFileError, flag_overrides

    try:
        overrides, flags = flag_overrides(args, FLAGS)
        settings = load_settings(
            overrides,
            env_file=args.env_file or None,
            config_file=config_path(args.config),
            flags=flags,
        )
    except SettingsError as exc:
        for line in exc.lines:
            print(f"iotad run: {line}", file=sys.stderr)
        return EXIT_USAGE
    except PasswordFileError as exc:
        print(f"iotad run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from detector.worker.log_setup import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    from prometheus_client import disable_created_metrics

    from detector.worker.memory import tune_allocator

    tune_allocator()  # before any thread starts: arenas are per thread

    # The *_created series double the scrape size and no dashboard of ours reads them.
    disable_created_metrics()
    stop = threading.Event()
    _install_signal_handlers(stop)
    return serve(settings, stop=stop, built=_install_reload_signal)


def _install_signal_handlers(stop: threading.Event) -> None:
    import signal

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- SIGHUP: reload the rules file and the model ---------------------------------------------


def _install_reload_signal(service: Service) -> None:
    """SIGHUP asks the service to reload its rules file and its model (each between batches,
    on the detection thread: `detector.worker.rules_reload`, `detector.worker.model_reload`).
    The handler only sets flags. Installed before the service starts: SIGHUP's default would end the
    process."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        service.reload_rules()
        service.request_reload()

    signal.signal(signal.SIGHUP, handler)


def serve(
    settings: WorkerSettings,
    *,
    stop: threading.Event,
    registry: CollectorRegistry | None = None,
    started: Any = None,
    built: Any = None,
) -> int:
    """Run the worker until `stop` is set; returns the exit code.

    `registry` defaults to a fresh one; `started`, if given, is called with the running
    `Service` once the worker is connected (tests read ports and state from it); `built`,
    with the `Service` as soon as it exists (signal handlers that talk to it).
    """
    import logging

    from detector.worker.env_warnings import unknown_env_warnings

    log = logging.getLogger("iotad.run")
    for line in unknown_env_warnings():
        log.warning("%s", line)
    service = Service(settings, registry)
    if built is not None:
        built(service)
    try:
        code = service.start(stop)
        if code != EXIT_OK:
            return code
        if started is not None:
            started(service)
        return service.wait(stop)
    finally:
        service.shutdown()


class Service:
    """The parts of one running worker, built from settings (see `serve`)."""

    def __init__(self, settings: WorkerSettings, registry: CollectorRegistry | None) -> None:
        from prometheus_client import CollectorRegistry

        from detector.worker.metrics import WorkerMetrics

        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = WorkerMetrics(
            self.registry,
            settings.metrics.series_devices,
            max_active_anomalies=settings.metrics.max_active_anomalies,
        )
        self.worker: Any = None
        self.core: Any = None
        self.checkpointer: Any = None
        self.connection: Any = None
        # How long acks wait for alerts to be confirmed; None: the worker's default (MQTT).
        self.confirm_timeout_s: float | None = None
        self.http: Any = None
        self.alertmanager: Any = None
        self.rules: Any = None  # the RulesReloader, when a rules file is set
        self.model_version = ""
        self.reload_model = threading.Event()  # SIGHUP sets it (see `request_reload`)
        self.reloader: Any = None
        self.alert_sink: Any = None
        self.started_s = time.monotonic()
        self.ready_after_s: float | None = None

    def reload_rules(self) -> None:
        """Reload the rules file at the detection thread's next pause between batches
        (SIGHUP). Safe from a signal handler; a no-op without a rules file."""
        if self.rules is not None:
            self.rules.request()

    def _load_rules(self) -> Any:
        """The rules file's rules (None without one); raises RulesError when it is bad."""
        from detector.worker.rules_reload import RulesReloader

        s = self.settings
        if s.rules.path is None:
            return None
        self.rules = RulesReloader(
            s.rules.path, metrics=self.metrics, check_interval_s=s.rules.check_interval_s
        )
        return self.rules.load()

    def ready(self) -> tuple[bool, str]:
        """/readyz and ``iotad_ready``: the worker can do its work (a full ingest queue does
        not count against it: see `detector.worker.health`)."""
        if self.worker is None:
            return False, "model not loaded"
        if self.ready_after_s is None:
            # The connection may be up before start() has finished (and logged) its work.
            return False, "starting"
        if not self.worker.alive:
            return False, "detection thread not running"
        if self.connection is None or not self.connection.connected:
            return False, "not connected to the broker"
        return True, "ready"

    def start(self, stop: threading.Event) -> int:
        """Build and start every part: /metrics, the rules and the model, the source, the
        detection thread, the connection. EXIT_OK once ready (or when `stop` came first),
        else the exit code."""
        if not self._serve_http():
            return EXIT_FAILED
        code = self._load_rules_and_model()
        if code != EXIT_OK:
            return code
        artifact = self.core.artifact  # the one just loaded: no reload before the worker runs
        decoder, intake = self._build_intake()
        s = self.settings
        status_extra = {"worker": s.worker_id, "model": artifact.version, "pid": os.getpid()}
        # The source is also the publisher of the outputs and the acker of the worker: it is
        # built first, around the intake it feeds, so everything below is wired once.
        if s.source == "nats":
            code = self._start_nats(intake, status_extra, stop)
        else:
            code = self._build_mqtt(intake, status_extra)
        if code != EXIT_OK or stop.is_set():
            return code
        self._wire_sparkplug_rebirth(decoder)
        if self.checkpointer is not None:
            # Restored before anything is processed, so the first reading is scored at once.
            self.checkpointer.restore(self.core)
        worker = self._build_worker(intake, artifact)
        # Everything built so far (modules, model, settings: ~50,000 objects) lives as long
        # as the process: out of the cyclic collector's sight, a full collection no longer
        # walks it while holding the GIL (measured: 30 ms stalls of both threads).
        gc.freeze()
        # The detection thread runs before MQTT connects: a persistent session may deliver a
        # backlog during the handshake, and the bounded queue must be drained meanwhile.
        worker.start()
        self.worker = worker
        return self._connect(stop, artifact)

    # -- the steps of `start`, in order ------------------------------------------------------

    def _serve_http(self) -> bool:
        """Serve /metrics /healthz /readyz; False (logged) when the port cannot be bound."""
        import logging

        from detector.worker.health import HealthServer

        s = self.settings
        self.http = HealthServer(self.registry, self.ready, s.metrics.host, s.metrics.port)
        try:
            self.http.start()
        except OSError as exc:
            logging.getLogger("iotad.run").error(
                "cannot listen on %s:%d: %s", s.metrics.host, s.metrics.port, exc.strerror
            )
            self.http = None
            return False
        return True

    def _build_core(self, artifact: Any) -> Any:
        """A core for `artifact` under the rules in force (a reload builds one too)."""
        from detector.engine.core import DetectionCore
        from detector.engine.forecaster import LiteRTForecaster
        from detector.worker.log_setup import native_stderr_logged

        s = self.settings
        rules = self.rules.rules if self.rules is not None else None
        with native_stderr_logged("litert"):
            forecaster = LiteRTForecaster.from_artifact(artifact, num_threads=s.model.threads)
        return DetectionCore(artifact, forecaster, s.detection, rules)

    def _load_rules_and_model(self) -> int:
        """The rules file, then the model and its core (`self.core`); the exit code."""
        import logging

        from detector.engine.artifact import ArtifactError, load_artifact
        from detector.worker.log_setup import native_stderr_logged
        from detector.worker.rules_file import RulesError

        log = logging.getLogger("iotad.run")
        s = self.settings
        try:
            self._load_rules()
        except RulesError as exc:
            for line in exc.lines:
                log.error("rules: %s", line)
            log.error("the rules file is invalid: not starting (check it: iotad rules check)")
            return EXIT_USAGE
        try:
            with native_stderr_logged("litert"):
                artifact = load_artifact(s.model.path)  # type: ignore[arg-type]
            core = self._build_core(artifact)
        except ArtifactError as exc:
            log.error("cannot load the model: %s", exc)
            return EXIT_FAILED
        if self.rules is not None:
            self.rules.apply = core.set_rules
            log.info("rules: %d from %s", len(self.rules.rules), s.rules.path)
        self.model_version = artifact.version
        self.core = core
        self.metrics.set_model(artifact.version, artifact.cell, artifact.window_len)
        return EXIT_OK

    def _build_intake(self) -> tuple[Any, Any]:
        """The payload decoder (its Sparkplug collector registered when it decodes Sparkplug)
        and the intake queue it feeds."""
        from detector.worker.ingest import Intake
        from detector.worker.payloads import PayloadDecoder

        s = self.settings
        decoder = PayloadDecoder(s.mqtt.topic_patterns, s.payload)
        if decoder.sparkplug is not None:
            from detector.worker.metrics import SparkplugCollector

            self.registry.register(SparkplugCollector(decoder.sparkplug))
        return decoder, Intake(decoder, queue_size=s.queue_size, max_batch=s.max_batch)

    def _wire_sparkplug_rebirth(self, decoder: Any) -> None:
        """Let the Sparkplug decoder ask for rebirths through the MQTT connection."""
        import logging

        s = self.settings
        if decoder.sparkplug is None or not s.payload.sparkplug_rebirth:
            return
        source = self.connection
        if s.source == "mqtt":
            # QoS 0, not retained: what Sparkplug asks of a host application's commands.
            decoder.sparkplug.commands = lambda topic, body: source.publish(topic, body, 0)
        else:
            logging.getLogger("iotad.run").warning(
                "IOTAD_PAYLOAD__SPARKPLUG_REBIRTH needs IOTAD_SOURCE=mqtt; ignored"
            )

    def _build_worker(self, intake: Any, artifact: Any) -> Any:
        """The outputs (alerts, dead letters, scores, Alertmanager), the model reloader and
        the detection worker around them; not started."""
        import logging

        from detector.worker.alertmanager import AlertmanagerSink
        from detector.worker.loop import CONFIRM_TIMEOUT_S, Worker, evict_interval, make_outputs
        from detector.worker.ratelimit import RateLimitedLog

        s = self.settings
        source = self.connection
        sink, dead, stream = make_outputs(
            source,
            worker_id=s.worker_id,
            model_version=artifact.version,
            alerts_prefix=s.output.alerts_prefix,
            deadletter_topic=s.output.deadletter_topic,
            deadletter_payload_bytes=s.output.deadletter_payload_bytes,
            scores=s.output.scores,
            scores_prefix=s.output.scores_prefix,
        )
        self.alertmanager = AlertmanagerSink.from_settings(
            s.alertmanager, metrics_port=s.metrics.port, registry=self.registry
        )
        self.alert_sink = sink
        sinks: list[Any] = [sink] if self.alertmanager is None else [sink, self.alertmanager]
        self.reloader = self._model_reloader(self._build_core)
        return Worker(
            self.core,
            self.metrics,
            intake,
            acker=source,
            sinks=sinks,
            deadletter=dead,
            scores=stream,
            max_batch=s.max_batch,
            linger_s=s.linger_s,
            linger_above_msgs_per_s=s.linger_above,
            confirm_timeout_s=self.confirm_timeout_s or CONFIRM_TIMEOUT_S,
            checkpoints=self.checkpointer,
            reloader=self.reloader,
            evict_every_s=evict_interval(s.detection.idle_evict_s),
            rules=self.rules,
            reject_log=RateLimitedLog(
                logging.getLogger("iotad.rejects"), s.log.reject_lines, s.log.reject_interval_s
            ),
            max_labelled_series=s.detection.max_series,
        )

    def _connect(self, stop: threading.Event, artifact: Any) -> int:
        """Connect MQTT (NATS connected when built), then log and report readiness."""
        import logging

        log = logging.getLogger("iotad.run")
        s = self.settings
        if s.source == "mqtt":
            from detector.worker.mqtt_client import ConnectError

            try:
                self.connection.start(stop=stop)
            except ConnectError as exc:
                log.error("%s", exc)
                return EXIT_FAILED
        if stop.is_set():
            return EXIT_OK
        ready_after_s = time.monotonic() - self.started_s
        log.info(
            "worker %s (shard %s, %s) ready in %.2f s: model %s (%s, window %d)",
            s.worker_id,
            s.shard,
            s.source,
            ready_after_s,
            artifact.version,
            artifact.cell,
            artifact.window_len,
        )
        self.ready_after_s = ready_after_s
        self.metrics.ready.set(1)
        return EXIT_OK

    # -- model reload (SIGHUP or a new artifact at the model path) ---------------------------

    def _model_reloader(self, build_core: Any) -> Any:
        from detector.worker.model_reload import ModelReloader

        return ModelReloader(
            self.settings.model.path,  # type: ignore[arg-type]
            build_core,
            self.metrics,
            requested=self.reload_model,
            check_every_s=self.settings.model.reload_check_s,
            on_swap=self._model_swapped,
        )

    def request_reload(self) -> None:
        """Swap in the artifact at the model path at the next batch boundary."""
        self.reload_model.set()

    def _model_swapped(self, core: Any) -> None:
        """On the detection thread, after a swap: what names the model follows it."""
        artifact = core.artifact
        self.model_version = artifact.version
        self.core = core
        if self.alert_sink is not None:
            self.alert_sink.model_version = artifact.version
        if self.rules is not None:  # rules reloaded from now on apply to the new core
            self.rules.apply = core.set_rules
        if self.connection is not None:
            self.connection.update_status(model=artifact.version)

    def _build_mqtt(self, intake: Any, status_extra: dict[str, Any]) -> int:
        """The MQTT connection (connected later, once the detection thread runs) and the
        file checkpoints when configured."""
        import logging

        from detector.config.settings import output_filters
        from detector.worker.mqtt_client import ConnectError, MqttConnection

        s = self.settings
        try:
            self.connection = MqttConnection(
                s.mqtt,
                s.client_id,
                status_topic=f"{s.output.status_prefix}/{s.worker_id}",
                on_message=intake.mqtt_message,
                metrics=self.metrics,
                status_extra=status_extra,
                output_filters=output_filters(s),
            )
        except ConnectError as exc:
            logging.getLogger("iotad.run").error("%s", exc)
            return EXIT_FAILED
        if s.checkpoint.path is not None:
            from detector.worker.checkpoint import Checkpointer

            self.checkpointer = Checkpointer(
                s.checkpoint.path, s.checkpoint.interval_s, self.registry
            )
        self.metrics.set_shard(s.shard, "mqtt", 0)
        return EXIT_OK

    def _start_nats(self, intake: Any, status_extra: dict[str, Any], stop: Any) -> int:
        """Connect to NATS (checks the stream and the partition mapping, binds the owned
        partitions' consumers) and set up the partition checkpoints in the KV bucket."""
        import logging

        from detector.worker.metrics import NatsMetrics
        from detector.worker.nats_checkpoint import PartitionCheckpointer
        from detector.worker.nats_source import NatsSource, SourceError, subject_of

        s = self.settings
        shard = s.shard_spec
        source = NatsSource(
            s.nats,
            shard,
            intake,
            worker_id=s.worker_id,
            metrics=NatsMetrics(self.registry),
            status_subject=f"{s.output.status_prefix}/{s.worker_id}",
            status_extra=status_extra,
            output_subjects=[
                f"{subject_of(s.output.alerts_prefix)}.>",
                subject_of(s.output.deadletter_topic),
            ],
        )
        self.connection = source
        self.confirm_timeout_s = source.confirm_timeout_s
        try:
            source.start(stop=stop)
        except SourceError as exc:
            logging.getLogger("iotad.run").error("%s", exc)
            return EXIT_FAILED
        self.checkpointer = PartitionCheckpointer(
            source,
            bucket=s.nats.checkpoint_bucket,
            replicas=s.nats.replicas,
            partitions=s.nats.partitions,
            owned=source.partitions,
            interval_s=s.checkpoint.interval_s,
            registry=self.registry,
        )
        self.metrics.set_shard(s.shard, "nats", len(source.partitions))
        return EXIT_OK

    def wait(self, stop: threading.Event) -> int:
        """Until `stop`; a dead detection thread ends the run with exit code 1."""
        while not stop.wait(0.5):
            ok, _ = self.ready()
            self.metrics.ready.set(1 if ok else 0)
            if self.worker is not None and not self.worker.alive:
                return EXIT_FAILED
        return EXIT_OK

    def shutdown(self) -> None:
        """Finish the batch in flight, publish offline status, disconnect, stop serving."""
        import logging

        log = logging.getLogger("iotad.run")
        self.metrics.ready.set(0)
        if self.worker is not None:
            self.worker.stop()
        self._final_checkpoint(log)
        if self.alertmanager is not None:
            self.alertmanager.close(timeout_s=5.0)
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception as exc:  # shutting down anyway
                log.warning("disconnect: %s", exc)
        if self.http is not None:
            self.http.stop()
        log.info("stopped")

    def _final_checkpoint(self, log: Any) -> None:
        """Save the state once more, now that the detection thread (its owner) has ended."""
        if self.checkpointer is None or self.core is None or self.worker is None:
            return  # nothing processed since the restore: the stored state stands
        self.core = self.worker.core  # a reload may have swapped it
        if self.worker.alive or self.worker.failed is not None:
            log.warning("detection thread did not stop cleanly: no final checkpoint")
            return
        if self.checkpointer.save(self.core):
            log.info(
                "checkpoint of %d series written to %s",
                self.core.active_series,
                self.checkpointer.path,
            )
