from __future__ import annotations

import numpy as np

from detector.engine.windows import WindowStore


def push(store: WindowStore, slot: int, value: float, ts: float, seen_at: float = 0.0) -> None:
    store.push(np.array([slot]), np.array([value]), np.array([ts]), seen_at)


def test_window_wraps_around_oldest_first() -> None:
    store = WindowStore(window_len=3, max_series=4, keep_ts=True)
    slot = store.allocate("m1/temp")
    assert slot is not None
    for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        push(store, slot, v, ts=100.0 + i)
    values, ts = store.windows(np.array([slot]))
    assert values.tolist() == [[3.0, 4.0, 5.0]]
    assert ts is not None and ts.tolist() == [[102.0, 103.0, 104.0]]
    assert store.count[slot] == 3
    assert store.last_ts[slot] == 104.0


def test_ready_only_when_window_full() -> None:
    store = WindowStore(window_len=3, max_series=4)
    slot = store.allocate("a/b")
    assert slot is not None
    ready = []
    for i in range(4):
        ready.append(bool(store.ready(np.array([slot]))[0]))
        push(store, slot, float(i), ts=float(i))
    assert ready == [False, False, False, True]


def test_capacity_bound_and_slot_reuse_after_release() -> None:
    store = WindowStore(window_len=2, max_series=2)
    a, b = store.allocate("d/a"), store.allocate("d/b")
    assert {a, b} == {0, 1}
    assert store.allocate("d/c") is None
    assert store.release("d/a") == a
    c = store.allocate("d/c")
    assert c == a
    # A reused slot starts empty.
    assert store.count[c] == 0 and store.last_ts[c] == -np.inf


def test_idle_series_are_found_by_last_seen_at() -> None:
    store = WindowStore(window_len=2, max_series=8)
    a, b = store.allocate("d/old"), store.allocate("d/new")
    push(store, a, 1.0, ts=1.0, seen_at=100.0)
    push(store, b, 1.0, ts=1.0, seen_at=500.0)
    assert store.idle(older_than=200.0) == ["d/old"]


def test_storage_grows_beyond_initial_block() -> None:
    store = WindowStore(window_len=2, max_series=3000)
    slots = [store.allocate(f"d{i}/m") for i in range(2500)]
    assert None not in slots
    assert store.capacity >= 2500 and len(store) == 2500
    push(store, slots[-1], 7.0, ts=1.0)
    assert store.last_value[slots[-1]] == 7.0


def test_a_reading_in_the_window_is_found_by_its_ts_and_value() -> None:
    store = WindowStore(window_len=3, max_series=2)  # timestamps are kept without keep_ts
    slot = store.allocate("a/b")
    assert slot is not None
    assert store.repeat_of(slot, 100.0, 1.0) is None  # empty
    push(store, slot, 1.0, ts=100.0)
    push(store, slot, 2.0, ts=101.0)
    assert store.repeat_of(slot, 100.0, 1.0) is True  # not full yet
    assert store.repeat_of(slot, 101.0, 3.0) is False  # same ts, another value
    assert store.repeat_of(slot, 0.0, 0.0) is None  # the unfilled part is not a reading
    for i in range(2, 6):
        push(store, slot, float(i + 1), ts=100.0 + i)
    assert store.repeat_of(slot, 105.0, 6.0) is True
    assert store.repeat_of(slot, 103.0, 4.0) is True
    assert store.repeat_of(slot, 102.0, 3.0) is None  # left the window
    assert store.windows(np.array([slot]))[1] is None  # not asked for: no calendar features


def test_the_order_bound_stays_within_the_slack_of_the_clock() -> None:
    store = WindowStore(window_len=3, max_series=2, future_slack_s=2.0)
    slot = store.allocate("a/b")
    assert slot is not None
    push(store, slot, 1.0, ts=100.0, seen_at=105.0)
    assert (store.last_ts[slot], store.order_ts[slot]) == (100.0, 100.0)
    push(store, slot, 1.0, ts=400.0, seen_at=106.0)  # from the future
    assert (store.last_ts[slot], store.order_ts[slot]) == (400.0, 108.0)
    push(store, slot, 1.0, ts=110.0, seen_at=111.0)
    assert (store.last_ts[slot], store.order_ts[slot]) == (400.0, 110.0)
