"""InfluxDB line protocol parsing: the examples and escaping rules of InfluxDB's syntax page
(docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/), and what is not one."""

from __future__ import annotations

import pytest

from detector.worker.lineprotocol import Line, LineError, format_line, format_value, parse_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "weather,location=us-midwest temperature=82 1465839830100400200",
            Line(
                "weather", {"location": "us-midwest"}, [("temperature", 82.0)], 1465839830100400200
            ),
        ),
        (
            "home,room=Kitchen temp=21.0,hum=35.9,co=0i 1641024000",
            Line(
                "home", {"room": "Kitchen"}, [("temp", 21.0), ("hum", 35.9), ("co", 0)], 1641024000
            ),
        ),
        # As Telegraf writes it: several tags, no timestamp is allowed too.
        (
            "cpu,cpu=cpu0,host=raynor usage_idle=98.5,usage_user=1.2",
            Line(
                "cpu",
                {"cpu": "cpu0", "host": "raynor"},
                [("usage_idle", 98.5), ("usage_user", 1.2)],
                None,
            ),
        ),
        # Escapes: spaces and commas in the measurement, = , and space in keys and tag values.
        (
            'my\\ Measurement fieldKey="string value"',
            Line("my Measurement", {}, [("fieldKey", "string value")], None),
        ),
        (
            "myMeasurement,tag\\ Key1=tag\\ Value1,tag\\ Key2=tag\\ Value2 fieldKey=100",
            Line(
                "myMeasurement",
                {"tag Key1": "tag Value1", "tag Key2": "tag Value2"},
                [("fieldKey", 100.0)],
                None,
            ),
        ),
        ("m\\,x,k\\=1=v\\,2 f\\ 1=1", Line("m,x", {"k=1": "v,2"}, [("f 1", 1.0)], None)),
        (
            'myMeasurement fieldKey="\\"string\\" within a string"',
            Line("myMeasurement", {}, [("fieldKey", '"string" within a string')], None),
        ),
        ('m f="a\\\\b",g="c, d=e"', Line("m", {}, [("f", "a\\b"), ("g", "c, d=e")], None)),
        (
            "myMeasurement,tagKey=Emoji\\ 🌱 fieldKey=1",
            Line("myMeasurement", {"tagKey": "Emoji 🌱"}, [("fieldKey", 1.0)], None),
        ),
        # A backslash before anything else is itself.
        ("m\\x f=1", Line("m\\x", {}, [("f", 1.0)], None)),
    ],
)
def test_documented_lines(line: str, expected: Line) -> None:
    assert parse_line(line) == expected


def test_field_types() -> None:
    line = 'm a=1,b=-2i,c=3u,d=t,e=FALSE,f="s",g=-1.5e3,h=.5,i=True,j=f'
    assert parse_line(line).fields == [
        ("a", 1.0),
        ("b", -2),
        ("c", 3),
        ("d", True),
        ("e", False),
        ("f", "s"),
        ("g", -1500.0),
        ("h", 0.5),
        ("i", True),
        ("j", False),
    ]
    assert type(parse_line("m a=1").fields[0][1]) is float
    assert type(parse_line("m a=1i").fields[0][1]) is int


@pytest.mark.parametrize(
    "line",
    [
        "m",  # no fields
        "m a",
        "m a=",
        "m =1",
        "m a=1 x",  # timestamp not an integer
        "m a=1 1 2",
        ",t=1 a=1",  # no measurement
        "m,t a=1",
        "m,t= a=1",
        "m,=v a=1",
        "m a=abc",
        "m a=nan",  # NaN and Infinity are not line protocol
        "m a=inf",
        'm a="unclosed',
        'm a="x"y',
        "m a=1.5i",
        "m a=-1u",
        "m a=9223372036854775808i",  # past int64
        "m a=18446744073709551616u",  # past uint64
        "m a=1,",
        "m a=1_000",
        "m a=1.2.3",
        "m a=1e",
        "m a=\t1",
        "m a=0x10",
        "m a=١",  # a digit, but not an ASCII one
        "m a=1 ١٢",
        "m\\ ",
        "m,t=\\ x",
    ],
)
def test_not_line_protocol(line: str) -> None:
    with pytest.raises(LineError):
        parse_line(line)


def test_format_line_escapes_what_parse_line_reads() -> None:
    line = format_line(
        "my m,x", {"t k=": "v 1,="}, {"f=1": format_value(2, "i"), "s": format_value('a "b" \\')}, 5
    )
    assert line == 'my\\ m\\,x,t\\ k\\==v\\ 1\\,\\= f\\=1=2i,s="a \\"b\\" \\\\" 5'
    assert parse_line(line) == Line("my m,x", {"t k=": "v 1,="}, [("f=1", 2), ("s", 'a "b" \\')], 5)
