"""deploy/docker-compose.yml, checked without Docker.

- it is valid against the Compose Specification's JSON schema (compose-spec.schema.json:
  the compose-spec project's schema, Apache-2.0, as shipped by the npm package dclint 3.1.0);
- every file and directory it mounts or builds from exists (model and data directories
  excepted: they are the operator's, made by `iotad train`);
- secrets stay out of git, and the broker allows no anonymous client;
- the worker's environment names real settings and its secret file is where the settings
  read the broker password.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from detector.config.settings import load_settings, unknown_env_vars

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.schema.json")

# Bind-mount sources that belong to the operator, not to the repository.
OPERATOR_DIRS = {"../models", "../data"}

# The innermost ${VAR:-default}: defaults may nest (${NEW:-${OLD:-default}}).
_VAR = re.compile(r"\$\{(\w+)(?::?-([^${}]*))?\}")


def expand(value: str, environ: dict[str, str] | None = None) -> str:
    """Compose-style ${VAR:-default}, nested too, from `environ` (default: nothing set)."""
    environ = environ or {}
    while True:
        done = _VAR.sub(lambda m: environ.get(m.group(1)) or m.group(2) or "", value)
        if done == value:
            return done
        value = done


def variables(text: str) -> list[str]:
    """Every variable a compose text interpolates, outer and nested ones."""
    return re.findall(r"\$\{(\w+)", text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services(compose: dict[str, Any], *, production: bool) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if not production or not svc.get("profiles")
    }


def bind_mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of a service's bind mounts (named volumes left out)."""
    out = []
    for vol in svc.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out.append((vol["source"], vol["target"]))
            continue
        source, target = expand(vol).split(":")[:2]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def test_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    assert errors == []


def test_schema_catches_mistakes(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["enviroment"] = {}  # typo
    broken["services"]["mosquitto"]["depends_on"]["mosquitto-passwd"]["condition"] = "done"
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))
    assert len(errors) == 2


def test_every_referenced_file_exists(compose: dict[str, Any]) -> None:
    missing = []
    for name, svc in compose["services"].items():
        for source, target in bind_mounts(svc):
            if source in OPERATOR_DIRS:
                continue
            if not (DEPLOY / source).exists():
                missing.append(f"{name}: {source} -> {target}")
        build = svc.get("build")
        if build:
            context = DEPLOY / build["context"]
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                missing.append(f"{name}: build {dockerfile}")
            stages = re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text())
            assert build.get("target") in stages, (name, build.get("target"), stages)
    assert missing == []


def test_operator_dirs_are_documented_and_ignored() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert "STACK_MODELS_DIR" in readme and "STACK_DATA_DIR" in readme
    assert "/models/" in (ROOT / ".gitignore").read_text().split()


def test_secrets_are_generated_not_committed(compose: dict[str, Any]) -> None:
    init = (DEPLOY / "init-secrets.sh").read_text()
    for name, secret in compose["secrets"].items():
        path = (DEPLOY / secret["file"]).resolve()
        assert path.parent == DEPLOY / "secrets", name
        assert re.search(rf"\b{re.escape(path.name)}\b", init), f"{name}: init-secrets.sh"
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/secrets"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == ["deploy/secrets/.gitignore"]
    assert (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]
    for name, svc in compose["services"].items():
        for secret in svc.get("secrets", []):
            assert secret in compose["secrets"], (name, secret)


def mosquitto_conf() -> dict[str, list[str]]:
    conf: dict[str, list[str]] = {}
    for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):  # '#' opens a comment at line start only
            key, _, value = line.partition(" ")
            conf.setdefault(key, []).append(value.strip())
    return conf


def test_broker_requires_authentication(compose: dict[str, Any]) -> None:
    conf = mosquitto_conf()
    assert conf["allow_anonymous"] == ["false"]
    assert conf.get("per_listener_settings", ["false"]) == ["false"]  # one rule for all
    (password_file,) = conf["password_file"]
    (acl_file,) = conf["acl_file"]

    # Every mosquitto in the production profile runs this config with both files in place.
    brokers = {
        name: svc
        for name, svc in services(compose, production=True).items()
        if svc.get("image", "").startswith("eclipse-mosquitto") and name != "mosquitto-passwd"
    }
    assert brokers
    for svc in brokers.values():
        mounts = dict((t, s) for s, t in bind_mounts(svc))
        assert mounts["/mosquitto/config/mosquitto.conf"] == "./mosquitto/mosquitto.conf"
        assert mounts[acl_file] == "./mosquitto/acl"
        volumes = [v.split(":") for v in svc["volumes"] if isinstance(v, str)]
        auth_volume = next(src for src, dst, *_ in volumes if password_file.startswith(dst + "/"))
        # ... and the password file is the one the one-shot service generates there.
        init = compose["services"]["mosquitto-passwd"]
        assert f"{auth_volume}:{password_file.rsplit('/', 1)[0]}" in init["volumes"]
        assert password_file in init["entrypoint"]
        assert svc["depends_on"]["mosquitto-passwd"]["condition"] == (
            "service_completed_successfully"
        )


def acl_users() -> dict[str, list[tuple[str, str]]]:
    users: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (DEPLOY / "mosquitto" / "acl").read_text().splitlines():
        words = [] if line.lstrip().startswith("#") else line.split()  # '#' is a wildcard
        if words[:1] == ["user"]:
            current = words[1]
            users[current] = []
        elif words[:1] == ["topic"]:
            assert current, "topic rule before any user: it would apply to anonymous clients"
            users[current].append((words[1], words[2]))
    return users


def test_acl_gives_each_user_only_what_it_needs() -> None:
    assert acl_users() == {
        "iotad": [
            ("read", "sensors/#"),
            ("write", "alerts/#"),
            ("write", "scores/#"),
            ("write", "iotad/#"),
            # Its own status topic: the previous run's filters, and a spoofed status answered.
            ("read", "iotad/status/#"),
            # Sparkplug B: every message in, and out only the rebirth command to a node.
            ("read", "spBv1.0/#"),
            ("write", "spBv1.0/+/NCMD/+"),
        ],
        "simulator": [
            ("write", "sensors/#"),
            # Sparkplug B edge nodes: their own messages out, commands and hosts' STATE in.
            ("write", "spBv1.0/+/NBIRTH/+"),
            ("write", "spBv1.0/+/NDATA/+"),
            ("write", "spBv1.0/+/NDEATH/+"),
            ("write", "spBv1.0/+/DBIRTH/+/+"),
            ("write", "spBv1.0/+/DDATA/+/+"),
            ("write", "spBv1.0/+/DDEATH/+/+"),
            ("read", "spBv1.0/+/NCMD/+"),
            ("read", "spBv1.0/+/DCMD/+/+"),
            ("read", "spBv1.0/STATE/+"),
            ("read", "STATE/+"),
        ],
        "reader": [("read", "alerts/#"), ("read", "scores/#"), ("read", "iotad/#")],
    }
    make_passwd = (DEPLOY / "mosquitto" / "make-passwd.sh").read_text()
    for user in acl_users():
        assert f"{user}:" in make_passwd


def test_every_mqtt_client_authenticates(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["environment"]["IOTAD_MQTT__USERNAME"] == "iotad"
    assert "iotad_mqtt__password" in worker["secrets"]
    assert not any("PASSWORD" in key for key in worker["environment"])  # secrets, not env
    sim = compose["services"]["simulator"]
    assert "--username=simulator" in sim["command"]
    assert "--password-file=/run/secrets/mqtt_simulator_password" in sim["command"]
    assert "mqtt_simulator_password" in sim["secrets"]


def test_worker_environment_names_real_settings(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: expand(str(v)) for k, v in compose["services"]["worker"]["environment"].items()}
    assert unknown_env_vars(env) == []

    # The checkpoint lives on the worker-state volume, which only exists in the container:
    # check it is there, then load the settings with it moved under tmp_path.
    state_mounts = [v for v in compose["services"]["worker"]["volumes"] if "worker-state:" in v]
    checkpoint = Path(env["IOTAD_CHECKPOINT__PATH"])
    assert [m.split(":", 1)[1] for m in state_mounts] == [str(checkpoint.parent)]
    env["IOTAD_CHECKPOINT__PATH"] = str(tmp_path / checkpoint.name)
    # The rules file is the repository's, mounted (test_rules_file_is_mounted_read_only).
    env["IOTAD_RULES__PATH"] = str(rules_source(compose["services"]["worker"]))

    # The secret file compose mounts is where the settings look for the broker password.
    (tmp_path / "iotad_mqtt__password").write_text("s3cret\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(env_file=None, secrets_dir=tmp_path)
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value().strip() == "s3cret"
    assert settings.mqtt.host == "mosquitto"
    assert str(settings.model.path) == "/models/current"
    assert settings.alertmanager.url == ["http://alertmanager:9093"]


def rules_source(svc: dict[str, Any]) -> Path:
    """The file on this side of the bind mount that a service reads as IOTAD_RULES__PATH."""
    path = Path(svc["environment"]["IOTAD_RULES__PATH"])
    (source,) = [s for s, t in bind_mounts(svc) if t == str(path.parent)]
    return DEPLOY / source / path.name


def rules_workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("iotad:")}


def test_rules_file_is_mounted_read_only(compose: dict[str, Any]) -> None:
    """Every worker (the single one and the scale-out shards) reads the shipped rules file
    from a read-only mount of its directory (a file mount would miss edits that replace the
    file), and that file loads: no rules, so the stack starts as it did without one."""
    from detector.worker.rules_file import load_rules

    workers = {n: s for n, s in rules_workers(compose).items() if "entrypoint" not in s}
    assert {"worker", "iotad-shard-0", "iotad-shard-1", "iotad-shard-2"} <= workers.keys()
    for name, svc in workers.items():
        path = Path(svc["environment"]["IOTAD_RULES__PATH"])
        mounts = [expand(v).split(":") for v in svc["volumes"] if isinstance(v, str)]
        (mount,) = [m for m in mounts if m[1] == str(path.parent)]
        assert mount == ["./rules", "/etc/iotad/rules", "ro"], name
        assert len(load_rules(rules_source(svc))) == 0, name
    assert "STACK_RULES_DIR" in (DEPLOY / "README.md").read_text()


def commented_env(service: str) -> dict[str, str]:
    """The commented-out `# IOTAD_X: value` lines of a service's environment in the file."""
    text = COMPOSE_FILE.read_text()
    block = text[text.index(f"\n  {service}:\n") :]
    block = block[: block.index("\n    secrets:")]
    found = re.findall(r"(?m)^ +# (IOTAD_\w+: .*)$", block)
    return {k: str(v) for line in found for k, v in yaml.safe_load(line).items()}


def test_sparkplug_lines_turn_it_on(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncommented, the worker's Sparkplug lines load, read spBv1.0/# as Sparkplug B with the
    rebirth on, and stay within the worker's broker rights (read every filter, no loop)."""
    from detector.config.settings import loop_errors
    from detector.worker.topics import topic_matches

    lines = commented_env("worker")
    assert lines.keys() == {
        "IOTAD_MQTT__TOPICS",
        "IOTAD_PAYLOAD__FORMATS",
        "IOTAD_PAYLOAD__SPARKPLUG_REBIRTH",
    }
    env = {k: expand(str(v)) for k, v in compose["services"]["worker"]["environment"].items()}
    env.update(lines)
    assert unknown_env_vars(env) == []
    env["IOTAD_CHECKPOINT__PATH"] = str(tmp_path / "state.npz")
    env["IOTAD_RULES__PATH"] = str(rules_source(compose["services"]["worker"]))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(env_file=None, secrets_dir=tmp_path)
    assert settings.mqtt.topics == ["sensors/#", "spBv1.0/#"]
    assert settings.payload.formats == {"spBv1.0/#": "sparkplug"}
    assert settings.payload.sparkplug_rebirth is True
    assert loop_errors(settings) == []
    rights = acl_users()["iotad"]
    for topic_filter in settings.mqtt.topics:
        assert ("read", topic_filter) in rights, topic_filter
    # the rebirth command goes to spBv1.0/{group}/NCMD/{edge node}
    writes = [f for right, f in rights if right == "write"]
    assert [f for f in writes if topic_matches(f, "spBv1.0/plant1/NCMD/gw1")] == [
        "spBv1.0/+/NCMD/+"
    ]


def test_prometheus_and_grafana_wiring(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    svc_ports = {
        name: {int(expand(p).rsplit(":", 1)[1]) for p in svc.get("ports", [])}
        for name, svc in compose["services"].items()
    }
    for job in prom["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host != "localhost":
                    assert int(port) in svc_ports[host], target
        for dns in job.get("dns_sd_configs", []):  # the scale-out workers publish no port
            for name in dns["names"]:
                assert name in compose["services"], name
    prometheus = compose["services"]["prometheus"]
    mounts = {t: s for s, t in bind_mounts(prometheus)}
    (rule_glob,) = prom["rule_files"]
    assert mounts[rule_glob.rsplit("/", 1)[0]] == "./prometheus/rules"

    grafana = compose["services"]["grafana"]
    mounts = {t: s for s, t in bind_mounts(grafana)}
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/iotad.yml").read_text())[
        "providers"
    ][0]
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana/dashboards" / Path(home).name).is_file()
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/datasources.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    for d in datasources:
        host = re.match(r"https?://([^:/]+)", d["url"]).group(1)  # type: ignore[union-attr]
        assert host in compose["services"], d["url"]
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        text = path.read_text()
        assert set(re.findall(r'"uid": "([^"]+)"', text)) - {json.loads(text)["uid"]} <= uids


def test_dashboards_are_generated() -> None:
    """The committed JSON is what deploy/grafana/generate_dashboards.py writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "generate_dashboards", DEPLOY / "grafana" / "generate_dashboards.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, text in module.render().items():
        committed = (DEPLOY / "grafana" / "dashboards" / name).read_text()
        assert committed == text, f"{name} is stale: run deploy/grafana/generate_dashboards.py"


def test_iotad_commands_parse(compose: dict[str, Any]) -> None:
    """The simulator's flags are ones `iotad simulate` accepts (argparse exits otherwise)."""
    from detector.cli import build_parser

    sim = compose["services"]["simulator"]
    assert sim["entrypoint"][:2] == ["iotad", "simulate"]
    args = build_parser().parse_args(["simulate", *[expand(a) for a in sim["command"]]])
    assert args.host == "mosquitto" and args.username == "simulator"
    assert args.password_file == "/run/secrets/mqtt_simulator_password"


def test_compose_variables_are_settings_or_the_stacks_own() -> None:
    """``IOTAD_`` is the settings' namespace: `iotad run` in a shell that sets the stack's
    knobs must not warn about them. Old names survive only as nested fallbacks."""
    from detector.config.settings import unknown_env_vars
    from detector.worker.env_warnings import RENAMED

    text = COMPOSE_FILE.read_text()
    outer = set(re.findall(r"(?<!-)\$\{(\w+)", text))  # not inside another's default
    nested = set(variables(text)) - outer
    assert {n for n in outer if not n.startswith("IOTAD_")} == {
        n for n in outer if n.startswith("STACK_")
    }
    assert unknown_env_vars({n: "x" for n in outer if n.startswith("IOTAD_")}) == []
    assert nested and nested <= set(RENAMED)
    assert not outer & set(RENAMED)


def test_old_compose_names_still_work_for_one_release() -> None:
    port = '"${STACK_BIND:-${IOTAD_BIND:-127.0.0.1}}:9090:9090"'
    assert port in COMPOSE_FILE.read_text()
    assert expand(port) == '"127.0.0.1:9090:9090"'
    assert expand(port, {"IOTAD_BIND": "0.0.0.0"}) == '"0.0.0.0:9090:9090"'
    assert expand(port, {"IOTAD_BIND": "0.0.0.0", "STACK_BIND": "10.0.0.1"}).startswith(
        '"10.0.0.1:'
    )
