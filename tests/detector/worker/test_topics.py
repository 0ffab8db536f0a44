"""MQTT filter arithmetic: which filters overlap, which topics they match."""

from __future__ import annotations

import pytest

from detector.worker.topics import enclosing_filters, filters_overlap, topic_matches, valid_filter


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("#", "iotad/deadletter", True),
        ("+/+", "iotad/deadletter", True),
        ("+", "iotad/deadletter", False),
        ("sensors/#", "iotad/deadletter", False),
        ("iotad/#", "iotad", True),  # x/# matches x itself
        ("alerts/+/+", "alerts/#", True),
        ("alerts/+/+", "alerts/x", False),
        ("a/+/c", "a/b/+", True),
        ("a/b/c", "a/b", False),
        ("#", "$SYS/broker", False),  # wildcards never match a $ level
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("$share/g/#", "iotad/deadletter", True),  # a shared subscription's filter
        ("$share/g/sensors/#", "iotad/deadletter", False),
    ],
)
def test_filters_overlap_both_ways(a: str, b: str, overlap: bool) -> None:
    assert filters_overlap(a, b) is overlap
    assert filters_overlap(b, a) is overlap


def test_topic_matches() -> None:
    assert topic_matches("sensors/+/temp", "sensors/d1/temp")
    assert not topic_matches("sensors/+/temp", "sensors/d1/rpm")
    assert topic_matches("sensors/#", "sensors")


def test_enclosing_filters_widest_first() -> None:
    assert enclosing_filters("a/b") == ["#", "a/#", "a/b/#"]
    assert enclosing_filters("$SYS/x") == ["$SYS/#", "$SYS/x/#"]


@pytest.mark.parametrize(
    ("f", "ok"),
    [("#", True), ("a/+/b", True), ("a/#", True), ("a#", False), ("a/#/b", False), ("", False)],
)
def test_valid_filter(f: str, ok: bool) -> None:
    assert valid_filter(f) is ok


# -- topic templates ----------------------------------------------------------------------------


def test_a_template_with_labels_matches_them() -> None:
    from detector.worker.topics import TopicPattern

    p = TopicPattern("plant/{site}/{line}/{device}/{metric}")
    assert p.labels == ("site", "line")
    assert p.match(["plant", "north", "L2", "press-4", "temp"]) == (
        "press-4",
        "temp",
        {"site": "north", "line": "L2"},
    )
    assert p.match(["plant", "north", "L2", "press-4"]) is None
    assert p.match(["other", "north", "L2", "press-4", "temp"]) is None
    # without {metric}: the payload names it; without labels: an empty map
    assert TopicPattern("plant/{cell}/{device}").match(["plant", "c1", "d"]) == (
        "d",
        None,
        {"cell": "c1"},
    )
    assert TopicPattern("sensors/{device}/{metric}").match(["sensors", "d", "m"]) == ("d", "m", {})


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("plant/{site}/{metric}", "has no {device}"),
        ("plant/{site}/{site}/{device}", "names {site} twice"),
        ("plant/{1site}/{device}", "must be a label name"),
        ("plant/{__x}/{device}", "must be a label name"),
        ("plant/{si-te}/{device}", "must be a label name"),
        ("plant/{severity}/{device}", "is reserved"),
        ("plant/{alertname}/{device}", "is reserved"),
        ("plant/{a}{b}/{device}", "must be a literal"),
        ("plant/{}/{device}", "must be a label name"),
    ],
)
def test_bad_templates_are_one_line_errors(pattern: str, says: str) -> None:
    from detector.worker.topics import TopicPattern

    with pytest.raises(ValueError) as err:
        TopicPattern(pattern)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert repr(pattern) in str(err.value)


def test_a_bad_template_setting_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from detector.config.settings import SettingsError, load_settings

    monkeypatch.setenv("IOTAD_MQTT__TOPIC_PATTERNS", "plant/{site}/{line}/{metric}")
    with pytest.raises(SettingsError) as err:
        load_settings({"model": {"path": "/tmp"}}, env_file=None, secrets_dir=None)
    assert err.value.lines == [
        "setting IOTAD_MQTT__TOPIC_PATTERNS: topic pattern 'plant/{site}/{line}/{metric}' "
        "has no {device} (got 'plant/{site}/{line}/{metric}')"
    ]


def test_the_decoder_gives_a_topics_labels_with_its_readings_and_rejections() -> None:
    from detector.worker.payloads import PayloadDecoder

    dec = PayloadDecoder(["plant/{site}/{line}/{device}/{metric}", "sensors/{device}/{metric}"])
    out = dec.decode("plant/north/L2/press-4/temp", b"21.5")
    assert [(r.device, r.metric, r.value) for r in out.readings] == [("press-4", "temp", 21.5)]
    assert out.labels == {"site": "north", "line": "L2"}
    bad = dec.decode("plant/north/L2/press-4/temp", b'{"value": "hot"}')
    assert [r.reason for r in bad.rejections] == ["not_a_number"]
    assert bad.labels == {"site": "north", "line": "L2"}
    # a label value is a name like any other: one outside the rules rejects the topic
    worse = dec.decode("plant/north site/L2/press-4/temp", b"1")
    assert [r.reason for r in worse.rejections] == ["bad_name"]
    assert "site 'north site'" in worse.rejections[0].detail
    assert dec.decode("sensors/d/m", b"1").labels is None


def test_the_readme_template_example_gives_the_labels_it_says() -> None:
    import shlex
    from pathlib import Path

    from detector.worker.payloads import PayloadDecoder

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("**Topic templates**", 1)[1]
    words = shlex.split(section.split("```sh\n", 1)[1].split("```", 1)[0], comments=True)
    env = dict(w.split("=", 1) for w in words if w.startswith("IOTAD_"))
    dec = PayloadDecoder(env["IOTAD_MQTT__TOPIC_PATTERNS"].split(","))
    i = words.index("mosquitto_pub")
    out = dec.decode(words[i + 2], words[i + 4].encode())
    assert [(r.device, r.metric, r.value) for r in out.readings] == [
        ("press01", "temperature", 23.4)
    ]
    assert out.labels == {"site": "north", "line": "assembly"}
