"""The command-line flags for the MQTT edge that `iotad run` and `iotad record` share."""

from __future__ import annotations

import argparse

MQTT_FLAGS: dict[str, tuple[str, str]] = {
    "host": ("mqtt.host", "--host"),
    "port": ("mqtt.port", "--port"),
    "topic": ("mqtt.topics", "--topic"),
    "mqtt_version": ("mqtt.version", "--mqtt-version"),
    "username": ("mqtt.username", "--username"),
    "ca_file": ("mqtt.tls.ca_file", "--ca-file"),
}
"""flag dest -> (dotted setting, flag as shown in errors)."""
LOG_FLAGS: dict[str, tuple[str, str]] = {"log_level": ("log.level", "--log-level")}


def add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    """The broker, topics and credentials flags (`MQTT_FLAGS`)."""
    add = parser.add_argument
    add("--host", help="MQTT broker host (IOTAD_MQTT__HOST, default localhost)")
    add("--port", type=int, help="MQTT broker port (IOTAD_MQTT__PORT, default 1883)")
    add(
        "--topic",
        action="append",
        metavar="FILTER",
        help="topic filter to subscribe to; repeatable (IOTAD_MQTT__TOPICS, default sensors/#)",
    )
    add("--mqtt-version", choices=["5", "3.1.1"], help="MQTT protocol (default 5)")
    add("--username", help="MQTT user name; the password comes from IOTAD_MQTT__PASSWORD")
    add("--ca-file", metavar="PEM", help="CA bundle for TLS (IOTAD_MQTT__TLS__CA_FILE)")


def add_log_and_env_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` (`LOG_FLAGS`) and ``--env-file``."""
    add = parser.add_argument
    add("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    add("--env-file", default=".env", metavar="PATH", help="dotenv file to read (default .env)")
