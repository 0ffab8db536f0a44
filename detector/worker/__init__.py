"""The worker's edges: sources and sinks (MQTT, NATS, Alertmanager), payload decoding,
metrics and health, checkpoints, history recording, and the worker's CLI commands.
Imports the core (`detector.engine`) and the settings (`detector.config`), never the
simulator or the demo (tests/detector/test_import_boundaries.py).
"""
