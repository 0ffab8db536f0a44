"""Alertmanager settings (``IOTAD_ALERTMANAGER__*``): URLs, credentials, TLS files, static
labels, each problem one line naming the variable, and no secret in any line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detector.config.alertmanager_settings import MAX_LABELS, MAX_URLS, is_loopback
from detector.config.secrets import Credentials, SecretFileError, read_secret_file
from detector.config.settings import SettingsError, WorkerSettings, load_settings, unknown_env_vars
from tests.pki import make_ca, make_cert

SECRET = "Zq9-very-secret-value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No IOTAD_* from the developer's shell, no .env or /run/secrets of the machine."""
    for key in list(os.environ):
        if key.upper().startswith("IOTAD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def load(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **kw: object) -> WorkerSettings:
    """Settings from exactly `env` (what an earlier call set is gone)."""
    for key in list(os.environ):
        if key.upper().startswith("IOTAD_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    kw.setdefault("secrets_dir", None)
    return load_settings({"model": {"path": "/m"}}, env_file=None, **kw)  # type: ignore[arg-type]


def error_line(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    with pytest.raises(SettingsError) as err:
        load(env, monkeypatch)
    assert len(err.value.lines) == 1, err.value.lines
    line = err.value.lines[0]
    assert "\n" not in line
    return line


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    client = make_cert(d, "client", ca, "extendedKeyUsage=clientAuth")
    return {"ca": ca[1], "cert": client[1], "key": client[0]}


def test_off_by_default_and_one_url_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load({}, monkeypatch).alertmanager.url == []
    s = load({"IOTAD_ALERTMANAGER__URL": "http://alertmanager:9093/"}, monkeypatch)
    assert s.alertmanager.url == ["http://alertmanager:9093"]
    assert s.alertmanager.labels == {}
    assert s.alertmanager.credentials().header() is None


def test_empty_url_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load({"IOTAD_ALERTMANAGER__URL": " "}, monkeypatch).alertmanager.url == []


@pytest.mark.parametrize(
    "value",
    ["https://am-0:9093, https://am-1:9093", '["https://am-0:9093", "https://am-1:9093"]'],
)
def test_several_urls_comma_separated_or_json(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    s = load({"IOTAD_ALERTMANAGER__URL": value}, monkeypatch)
    assert s.alertmanager.url == ["https://am-0:9093", "https://am-1:9093"]


@pytest.mark.parametrize(
    ("value", "part"),
    [
        ("ftp://am:9093", "is not an http:// or https:// URL"),
        ("am:9093", "is not an http:// or https:// URL"),
        ("http://", "is not an http:// or https:// URL"),
        ("http://am:99999", "invalid port"),
        ("http://am:9093?x=1", "no query"),
        ("http://am:9093,http://am:9093/", "given twice"),
        (",".join(f"http://am-{i}:9093" for i in range(MAX_URLS + 1)), f"at most {MAX_URLS}"),
    ],
)
def test_bad_urls_are_one_line(monkeypatch: pytest.MonkeyPatch, value: str, part: str) -> None:
    line = error_line({"IOTAD_ALERTMANAGER__URL": value}, monkeypatch)
    assert line.startswith("setting IOTAD_ALERTMANAGER__URL: ")
    assert part in line


def test_credentials_in_the_url_are_refused_and_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = error_line({"IOTAD_ALERTMANAGER__URL": f"https://iotad:{SECRET}@am:9093"}, monkeypatch)
    assert line.startswith("setting IOTAD_ALERTMANAGER__URL: credentials in the URL")
    assert SECRET not in line


def test_static_labels_from_pairs_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load({"IOTAD_ALERTMANAGER__LABELS": "plant=north, line=2"}, monkeypatch)
    assert s.alertmanager.labels == {"plant": "north", "line": "2"}
    s = load({"IOTAD_ALERTMANAGER__LABELS": '{"plant": "south"}'}, monkeypatch)
    assert s.alertmanager.labels == {"plant": "south"}


@pytest.mark.parametrize(
    ("value", "part"),
    [
        ("plant", "'plant' is not name=value"),
        ("1plant=north", "label name '1plant'"),
        ("plant-id=north", "label name 'plant-id'"),
        ("__plant=north", "label name '__plant'"),
        ("device=press-7", "'device' is set by the worker itself"),
        ("severity=page", "'severity' is set by the worker itself"),
        ("plant=", "the value must be 1-256 printable characters"),
        ("plant=" + "x" * 257, "the value must be 1-256 printable characters"),
        ("plant=a,plant=b", "given twice"),
        (",".join(f"l{i}=v" for i in range(MAX_LABELS + 1)), f"at most {MAX_LABELS}"),
    ],
)
def test_bad_labels_are_one_line(monkeypatch: pytest.MonkeyPatch, value: str, part: str) -> None:
    line = error_line({"IOTAD_ALERTMANAGER__LABELS": value}, monkeypatch)
    assert line.startswith("setting IOTAD_ALERTMANAGER__LABELS: ")
    assert part in line


def test_basic_auth_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(
        {
            "IOTAD_ALERTMANAGER__URL": "https://am:9093",
            "IOTAD_ALERTMANAGER__USERNAME": "iotad",
            "IOTAD_ALERTMANAGER__PASSWORD": SECRET,
        },
        monkeypatch,
    )
    # base64("iotad:" + SECRET), worked out independently with `printf %s ... | base64`
    expected = "Basic aW90YWQ6WnE5LXZlcnktc2VjcmV0LXZhbHVl"
    assert s.alertmanager.credentials().header() == expected
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.alertmanager.credentials())):
        assert SECRET not in text


def test_password_from_the_secrets_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "iotad_alertmanager__password").write_text(SECRET + "\n")
    s = load(
        {"IOTAD_ALERTMANAGER__URL": "https://am:9093", "IOTAD_ALERTMANAGER__USERNAME": "iotad"},
        monkeypatch,
        secrets_dir=secrets,
    )
    assert s.alertmanager.password is not None
    assert s.alertmanager.password.get_secret_value() == SECRET


def test_token_file_is_read_on_every_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    s = load(
        {
            "IOTAD_ALERTMANAGER__URL": "https://am:9093",
            "IOTAD_ALERTMANAGER__TOKEN_FILE": str(token),
        },
        monkeypatch,
    )
    credentials = s.alertmanager.credentials()
    assert credentials.header() == "Bearer first-token"
    token.write_text("rotated-token")
    assert credentials.header() == "Bearer rotated-token"
    token.unlink()
    with pytest.raises(SecretFileError, match="cannot read"):
        credentials.header()


@pytest.mark.parametrize(
    ("env", "name", "part"),
    [
        (
            {"IOTAD_ALERTMANAGER__PASSWORD": SECRET},
            "IOTAD_ALERTMANAGER",
            "a password needs IOTAD_ALERTMANAGER__USERNAME",
        ),
        (
            {"IOTAD_ALERTMANAGER__USERNAME": "iotad"},
            "IOTAD_ALERTMANAGER",
            "USERNAME needs IOTAD_ALERTMANAGER__PASSWORD",
        ),
        (
            {
                "IOTAD_ALERTMANAGER__USERNAME": "iotad",
                "IOTAD_ALERTMANAGER__PASSWORD": SECRET,
                "IOTAD_ALERTMANAGER__TOKEN": SECRET,
            },
            "IOTAD_ALERTMANAGER",
            "not both",
        ),
        ({"IOTAD_ALERTMANAGER__USERNAME": "a:b"}, "IOTAD_ALERTMANAGER__USERNAME", "without ':'"),
        ({"IOTAD_ALERTMANAGER__TOKEN": SECRET + "\r\nX: y"}, "IOTAD_ALERTMANAGER__TOKEN", "line"),
    ],
)
def test_bad_credentials_are_one_line_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str, part: str
) -> None:
    line = error_line({"IOTAD_ALERTMANAGER__URL": "https://am:9093", **env}, monkeypatch)
    assert line.startswith(f"setting {name}: ")
    assert part in line
    assert SECRET not in line


@pytest.mark.parametrize(
    ("content", "part"),
    [
        ("", "is empty"),
        ("\n", "is empty"),
        ("two\nlines\n", "more than one line"),
        ("x" * 5000, "is over 4096 bytes"),
    ],
)
def test_unusable_secret_files_are_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, part: str
) -> None:
    path = tmp_path / "pw"
    path.write_text(content)
    line = error_line(
        {
            "IOTAD_ALERTMANAGER__URL": "https://am:9093",
            "IOTAD_ALERTMANAGER__USERNAME": "iotad",
            "IOTAD_ALERTMANAGER__PASSWORD_FILE": str(path),
        },
        monkeypatch,
    )
    assert line.startswith("setting IOTAD_ALERTMANAGER__PASSWORD_FILE: ")
    assert part in line


def test_read_secret_file_strips_one_trailing_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b" pass word \r\n")
    assert read_secret_file(path) == " pass word "


def test_credentials_over_plain_http_are_refused_except_to_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = {"IOTAD_ALERTMANAGER__USERNAME": "iotad", "IOTAD_ALERTMANAGER__PASSWORD": SECRET}
    line = error_line({"IOTAD_ALERTMANAGER__URL": "http://am.plant:9093", **auth}, monkeypatch)
    assert "clear text to http://am.plant:9093" in line
    assert SECRET not in line
    s = load({"IOTAD_ALERTMANAGER__URL": "http://127.0.0.1:9093", **auth}, monkeypatch)
    assert s.alertmanager.credentials().scheme == "basic"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.2", True), ("::1", True), ("10.0.0.1", False), ("am", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_tls_files_load_and_build_a_context(
    monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]
) -> None:
    s = load(
        {
            "IOTAD_ALERTMANAGER__URL": "https://am:9093",
            "IOTAD_ALERTMANAGER__CA_FILE": str(pki["ca"]),
            "IOTAD_ALERTMANAGER__CERT_FILE": str(pki["cert"]),
            "IOTAD_ALERTMANAGER__KEY_FILE": str(pki["key"]),
        },
        monkeypatch,
    )
    ctx = s.alertmanager.ssl_context()
    assert ctx is not None
    assert ctx.verify_mode.name == "CERT_REQUIRED" and ctx.check_hostname


def test_tls_problems_are_one_line(
    monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path], tmp_path: Path
) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    https = {"IOTAD_ALERTMANAGER__URL": "https://am:9093"}
    line = error_line({**https, "IOTAD_ALERTMANAGER__CA_FILE": str(not_pem)}, monkeypatch)
    assert line.startswith("setting IOTAD_ALERTMANAGER: IOTAD_ALERTMANAGER__CA_FILE ")
    line = error_line({**https, "IOTAD_ALERTMANAGER__KEY_FILE": str(pki["key"])}, monkeypatch)
    assert "KEY_FILE needs IOTAD_ALERTMANAGER__CERT_FILE" in line
    line = error_line(  # the key of another certificate
        {
            **https,
            "IOTAD_ALERTMANAGER__CERT_FILE": str(pki["ca"]),
            "IOTAD_ALERTMANAGER__KEY_FILE": str(pki["key"]),
        },
        monkeypatch,
    )
    assert "IOTAD_ALERTMANAGER__CERT_FILE" in line
    line = error_line(
        {
            "IOTAD_ALERTMANAGER__URL": "http://am:9093",
            "IOTAD_ALERTMANAGER__CA_FILE": str(pki["ca"]),
        },
        monkeypatch,
    )
    assert "no URL is https://" in line
    line = error_line({**https, "IOTAD_ALERTMANAGER__CA_FILE": "/no/such/ca.pem"}, monkeypatch)
    assert line.startswith("setting IOTAD_ALERTMANAGER__CA_FILE: ")


def test_every_new_variable_is_a_known_setting() -> None:
    names = [
        f"IOTAD_ALERTMANAGER__{n}"
        for n in [
            "URL",
            "LABELS",
            "USERNAME",
            "PASSWORD",
            "PASSWORD_FILE",
            "TOKEN",
            "TOKEN_FILE",
            "CA_FILE",
            "CERT_FILE",
            "KEY_FILE",
        ]
    ]
    assert unknown_env_vars(dict.fromkeys(names, "x")) == []


def test_credentials_repr_names_the_scheme_only() -> None:
    assert repr(Credentials(username="u", password=SECRET)) == "Credentials(basic)"
    assert repr(Credentials(token=SECRET)) == "Credentials(bearer)"
