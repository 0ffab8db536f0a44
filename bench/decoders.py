"""Decoder throughput of each payload format on the same readings, beside the JSON path's.

Builds one set of readings (devices x metrics x times) and encodes it in every form the
decoder reads: JSON one reading per message (the hot path), JSON ``values`` maps, Telegraf
JSON (one metric per message, and batches), InfluxDB line protocol (one line per message,
and several), Sparkplug B NDATA by alias (each node's NBIRTH first, built with protobuf).
Each form is decoded by one `PayloadDecoder`, best of `--repeat` runs, after checking that
it yields exactly the same readings. Prints readings/s and the ratio to the
JSON path. Usage::

    .venv/bin/python bench/decoders.py [--readings 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.worker.lineprotocol import format_line
from detector.worker.payloads import PayloadDecoder, PayloadLimits
from detector.worker.sparkplug_schema import DataType, Payload

T0 = 1_700_000_000
METRICS = [f"m{j}" for j in range(8)]
Message = tuple[str, bytes]


def value(device: int, metric: int, step: int) -> float:
    return round(20.0 + device % 7 + metric * 0.5 + (step % 13) * 0.25, 3)


def forms(n_readings: int) -> dict[str, list[Message]]:
    steps = max(1, n_readings // (100 * len(METRICS)))
    grid = [(d, s) for s in range(steps) for d in range(100)]
    out: dict[str, list[Message]] = {}
    out["json, 1 reading/msg"] = [
        (f"sensors/dev{d}/{m}", json.dumps({"ts": float(T0 + s), "value": value(d, j, s)}).encode())
        for d, s in grid
        for j, m in enumerate(METRICS)
    ]
    out["json values, 8/msg"] = [
        (
            f"sensors/dev{d}",
            json.dumps(
                {"ts": T0 + s, "values": {m: value(d, j, s) for j, m in enumerate(METRICS)}}
            ).encode(),
        )
        for d, s in grid
    ]

    def telegraf(d: int, s: int) -> dict[str, object]:
        return {
            "name": "plc",
            "tags": {"host": f"dev{d}"},
            "fields": {m: value(d, j, s) for j, m in enumerate(METRICS)},
            "timestamp": T0 + s,
        }

    out["telegraf, 8/msg"] = [("telegraf/gw", json.dumps(telegraf(d, s)).encode()) for d, s in grid]
    out["telegraf batch, 80/msg"] = [
        (
            "telegraf/gw",
            json.dumps({"metrics": [telegraf(d, s) for d, s in grid[i : i + 10]]}).encode(),
        )
        for i in range(0, len(grid), 10)
    ]

    def line(d: int, s: int) -> str:
        fields = {m: repr(value(d, j, s)) for j, m in enumerate(METRICS)}
        return format_line("plc", {"host": f"dev{d}"}, fields, (T0 + s) * 10**9)

    out["influx, 1 line/msg, 8/msg"] = [("influx/gw", line(d, s).encode()) for d, s in grid]
    out["influx, 10 lines/msg, 80/msg"] = [
        ("influx/gw", "\n".join(line(d, s) for d, s in grid[i : i + 10]).encode())
        for i in range(0, len(grid), 10)
    ]
    out["sparkplug NDATA, 8/msg"] = sparkplug(grid)
    return out


def sparkplug(grid: list[tuple[int, int]]) -> list[Message]:
    """Each device is an edge node: its NBIRTH (names and aliases, null values: no readings),
    then one NDATA by alias per step, as gateways send them."""
    messages: list[Message] = []
    for d in range(100):
        born = Payload(timestamp=T0 * 1000, seq=0)
        for j, m in enumerate(METRICS):
            born.metrics.add(name=m, alias=j, datatype=DataType.Double, is_null=True)
        messages.append((f"spBv1.0/bench/NBIRTH/dev{d}", born.SerializeToString()))
    for d, s in grid:
        msg = Payload(timestamp=(T0 + s) * 1000, seq=s % 256)
        for j in range(len(METRICS)):
            msg.metrics.add(alias=j, double_value=value(d, j, s))
        messages.append((f"spBv1.0/bench/NDATA/dev{d}", msg.SerializeToString()))
    return messages


def make_decoder() -> PayloadDecoder:
    limits = PayloadLimits(
        formats={"telegraf/#": "telegraf", "influx/#": "influx", "spBv1.0/#": "sparkplug"},
        measurement_prefix=False,
    )
    return PayloadDecoder(limits=limits, clock=lambda: T0 + 10**6)


def rate(messages: list[Message], repeat: int) -> tuple[float, int]:
    best, n = 0.0, 0
    for _ in range(repeat):
        decode: Callable[[str, bytes], object] = make_decoder().decode
        start = time.perf_counter()
        n = 0
        for topic, payload in messages:
            n += len(decode(topic, payload).readings)  # type: ignore[attr-defined]
        best = max(best, n / (time.perf_counter() - start))
    return best, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    all_forms = forms(args.readings)
    reference = None
    for name, messages in all_forms.items():
        dec = make_decoder()
        got = sorted(r for topic, p in messages for r in dec.decode(topic, p).readings)
        if reference is None:
            reference = got
        if got != reference or not got:
            print(f"{name}: does not yield the same readings", file=sys.stderr)
            return 1
    print(f"{len(reference or [])} readings (100 devices x 8 metrics), best of {args.repeat}")
    base = 0.0
    for name, messages in all_forms.items():
        per_s, _ = rate(messages, args.repeat)
        base = base or per_s
        print(f"{name:30s} {per_s:>12,.0f} readings/s  {per_s / base:5.2f} x json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
