"""deploy/docker-compose.yml, profile scale-out: the NATS cluster and the shard workers wired
the way deploy/nats/nats.conf and the issue 12 contract expect, without Docker.

The default profile stays what it was; the NATS nodes share one config and get their names,
passwords and routes the way the config includes them; the workers cover every shard once,
use the server's partition count and the cluster's size as replicas, and read their NATS
password from the secret the settings look for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_compose import COMPOSE_FILE, DEPLOY, bind_mounts, expand, rules_source

NATS_CONF = DEPLOY / "nats" / "nats.conf"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def in_profile(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if profile in s.get("profiles", [])}


def nats_nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in in_profile(compose, "scale-out").items()
        if s.get("image", "").startswith("nats:") and "NATS_SERVER_NAME" in s.get("environment", {})
    }


def shard_workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in in_profile(compose, "scale-out").items()
        if "IOTAD_SHARD" in s.get("environment", {})
    }


def test_default_profile_is_unchanged(compose: dict[str, Any]) -> None:
    default = {n for n, s in compose["services"].items() if not s.get("profiles")}
    assert default == {
        "mosquitto-passwd", "mosquitto", "worker", "prometheus", "alertmanager", "grafana"
    }  # fmt: skip
    assert compose["services"]["worker"]["environment"].get("IOTAD_SOURCE", "mqtt") == "mqtt"
    assert "IOTAD_SHARD" not in compose["services"]["worker"]["environment"]


def test_host_ports_do_not_collide_across_profiles(compose: dict[str, Any]) -> None:
    host_ports = [
        int(expand(p).rsplit(":", 2)[-2])
        for svc in compose["services"].values()
        for p in svc.get("ports", [])
    ]
    assert len(host_ports) == len(set(host_ports)), sorted(host_ports)


def test_three_nats_nodes_share_the_config(compose: dict[str, Any]) -> None:
    nodes = nats_nodes(compose)
    assert len(nodes) == 3
    conf = NATS_CONF.read_text()
    (include,) = re.findall(r'(?m)^include "([^"]+)"', conf)
    auth_dir = "/etc/nats/" + include.rsplit("/", 1)[0]
    init = compose["services"]["nats-auth"]
    (auth_volume,) = [v.split(":")[0] for v in init["volumes"] if v.split(":")[1] == auth_dir]
    assert init["entrypoint"][2] == f"/etc/nats/{include}"
    for name, svc in nodes.items():
        assert svc["environment"]["NATS_SERVER_NAME"] == name  # server_name: unique
        mounts = {t: s for s, t in bind_mounts(svc)}
        assert mounts["/etc/nats/nats.conf"] == "./nats/nats.conf"
        assert f"{auth_volume}:{auth_dir}:ro" in svc["volumes"]
        # the JetStream store is a volume of its own per node
        (data,) = [v for v in svc["volumes"] if v.endswith(":/data")]
        assert data.split(":")[0] in compose["volumes"]
        assert "store_dir: /data/" in conf
        assert svc["depends_on"]["nats-auth"]["condition"] == "service_completed_successfully"
        assert svc["command"] == ["nats-server", "--config", "/etc/nats/nats.conf"]
    # the routes make-auth.sh writes: every node's cluster port
    cluster_port = re.search(r"cluster \{[^}]*?listen: [\d.]+:(\d+)", conf, re.S).group(1)  # type: ignore[union-attr]
    assert init["entrypoint"][3:] == [f"{n}:{cluster_port}" for n in sorted(nodes)]
    assert {s for s in init["secrets"]} == {
        "iotad_nats__password",
        "mqtt_simulator_password",
        "mqtt_reader_password",
        "nats_route_password",
    }
    assert init["entrypoint"][:2] == ["/bin/sh", "/make-auth.sh"]
    assert "./nats/make-auth.sh:/make-auth.sh:ro" in init["volumes"]


def test_nats_nodes_publish_mqtt_and_client_ports_only(compose: dict[str, Any]) -> None:
    for svc in nats_nodes(compose).values():
        inside = sorted(int(expand(p).rsplit(":", 1)[1]) for p in svc["ports"])
        assert inside == [1883, 4222]  # never 6222 (routes) or 8222 (no authentication)


def mapping_partitions() -> set[int]:
    return {int(p) for p in re.findall(r"partition\((\d+),1\)", NATS_CONF.read_text())}


def test_shard_workers_cover_every_shard_once(compose: dict[str, Any]) -> None:
    workers = shard_workers(compose)
    assert len(workers) == 3
    shards = sorted(w["environment"]["IOTAD_SHARD"] for w in workers.values())
    n = len(workers)
    assert shards == [f"{i}/{n}" for i in range(n)]
    ids = [w["environment"]["IOTAD_WORKER_ID"] for w in workers.values()]
    assert len(set(ids)) == n


def test_shard_workers_match_the_cluster(compose: dict[str, Any]) -> None:
    nodes = nats_nodes(compose)
    (partitions,) = mapping_partitions()
    replicas = int(re.search(r"stream_replicas: (\d+)", NATS_CONF.read_text()).group(1))  # type: ignore[union-attr]
    for name, w in shard_workers(compose).items():
        env = w["environment"]
        assert env["IOTAD_SOURCE"] == "nats"
        assert int(env["IOTAD_NATS__PARTITIONS"]) == partitions == 64
        assert int(env["IOTAD_NATS__REPLICAS"]) == len(nodes) == replicas
        urls = env["IOTAD_NATS__URLS"].split(",")
        assert urls == [f"nats://{n}:4222" for n in sorted(nodes)]
        assert env["IOTAD_NATS__USER"] == "iotad"
        assert w["secrets"] == ["iotad_nats__password"]
        assert not any("PASSWORD" in key for key in env)  # secrets, not environment
        assert "IOTAD_CHECKPOINT__PATH" not in env  # the NATS worker keeps state in KV
        for node in nodes:
            assert w["depends_on"][node]["condition"] == "service_healthy"
        assert "ports" not in w, name  # scraped inside the network


def test_prometheus_finds_every_shard_worker(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if "dns_sd_configs" in j]
    (dns,) = job["dns_sd_configs"]
    assert sorted(dns["names"]) == sorted(shard_workers(compose))
    assert {"target_label": "job", "replacement": "iotad"} in job["relabel_configs"]


def test_shard_worker_settings_load(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker's environment is real settings (needs the NATS worker, issue 12)."""
    from detector.config.settings import load_settings, unknown_env_vars

    (tmp_path / "iotad_nats__password").write_text("s3cret\n")
    for name, w in sorted(shard_workers(compose).items()):
        env = {k: expand(str(v)) for k, v in w["environment"].items()}
        assert unknown_env_vars(env) == [], name
        env["IOTAD_RULES__PATH"] = str(rules_source(w))  # the mounted file, on this side
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            settings = load_settings(env_file=None, secrets_dir=tmp_path)
        assert settings.source == "nats"
        assert settings.nats.password.get_secret_value().strip() == "s3cret"
        assert settings.nats.partitions == 64 and settings.nats.replicas == 3
        assert str(settings.shard) == env["IOTAD_SHARD"]
        assert settings.rules.path == DEPLOY / "rules" / "rules.toml"


def test_scale_out_simulator_speaks_what_nats_accepts(compose: dict[str, Any]) -> None:
    """MQTT 3.1.1 to a node's MQTT listener as the `simulator` user (flags `iotad simulate`
    accepts; argparse exits otherwise)."""
    from detector.cli import build_parser

    sim = compose["services"]["simulator-nats"]
    args = build_parser().parse_args(["simulate", *[expand(a) for a in sim["command"]]])
    assert args.mqtt_version == "3.1.1"
    assert args.host in nats_nodes(compose)
    assert args.port == 1883  # the MQTT listener inside the network
    assert re.search(r"(?m)^  listen: 0\.0\.0\.0:1883$", NATS_CONF.read_text())
    assert args.username == "simulator"
    assert args.password_file == "/run/secrets/mqtt_simulator_password"
    assert sim["secrets"] == ["mqtt_simulator_password"]
    assert sim["depends_on"][args.host]["condition"] == "service_healthy"
