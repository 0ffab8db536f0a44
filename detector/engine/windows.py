"""Per-series rolling windows in preallocated numpy ring buffers.

Every series owns one *slot*: a row of a 2-D float32 array of `window_len` values and a row
of float64 timestamps (the model's calendar features, and how a redelivered reading is
recognised as one). Slots come from a free list and are reused after eviction, so memory
per series is fixed and small.

Each slot also keeps the *order bound* of its series: the time a new reading must be after
to be new. It is the newest reading's ts, but never more than `future_slack_s` ahead of the
clock at which that reading was taken: one reading stamped minutes ahead (inside the
decoder's `max_future_s`) used to make every genuine reading of those minutes
``out_of_order``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from detector.engine.slot_arrays import grown

_INITIAL_SLOTS = 1024

FUTURE_SLACK_S = 2.0
"""How far ahead of the clock a reading may move its series' order bound. Devices on NTP are
well within it (their readings arrive *after* their ts). A device whose clock runs further
ahead still has its readings taken in order; only a repeat of one of its readings that has
already left the window is no longer recognised as one."""


class WindowStore:
    """Ring buffers of the last `window_len` readings of up to `max_series` series.

    Storage grows by doubling up to `max_series` rows, so a worker with a handful of series
    does not pay for 100,000.
    """

    def __init__(
        self,
        window_len: int,
        max_series: int,
        *,
        keep_ts: bool = False,
        future_slack_s: float = FUTURE_SLACK_S,
    ) -> None:
        """`keep_ts`: `windows` returns the timestamps too (the model's calendar features)."""
        if window_len < 1 or max_series < 1:
            raise ValueError("window_len and max_series must be positive")
        self.window_len = window_len
        self.max_series = max_series
        self.keep_ts = keep_ts
        self.future_slack_s = future_slack_s
        self._slot_of: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._free: list[int] = []
        cap = min(_INITIAL_SLOTS, max_series)
        self.values = np.zeros((cap, window_len), dtype=np.float32)
        # Always kept (8 bytes per reading in the window): a redelivered reading is told from
        # a late one by its (ts, value) in the window.
        self.ts = np.zeros((cap, window_len), dtype=np.float64)
        # int32: 8 bytes less per series than int64 (0.8 MB per 100,000)
        self.pos = np.zeros(cap, dtype=np.int32)  # next write position in the ring
        self.count = np.zeros(cap, dtype=np.int32)  # readings seen, saturating at window_len
        self.last_ts = np.full(cap, -np.inf, dtype=np.float64)  # the newest reading's ts
        self.order_ts = np.full(cap, -np.inf, dtype=np.float64)  # see the module docstring
        self.last_value = np.full(cap, np.nan, dtype=np.float64)  # the last reading pushed
        self.last_seen_at = np.zeros(cap, dtype=np.float64)  # clock time of the last reading

    # -- slots -------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.values.shape[0]

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: str) -> bool:
        return key in self._slot_of

    def slot(self, key: str) -> int | None:
        """The slot of series `key`, or None when it has none."""
        return self._slot_of.get(key)

    def key(self, slot: int) -> str | None:
        return self._keys[slot]

    def keys(self) -> list[str]:
        return list(self._slot_of)

    def allocate(self, key: str) -> int | None:
        """Give series `key` a fresh, empty slot; None when `max_series` are active."""
        if key in self._slot_of:
            return self._slot_of[key]
        if self._free:
            slot = self._free.pop()
        elif len(self._keys) < self.max_series:
            slot = len(self._keys)
            if slot >= self.capacity:
                # By an eighth, not doubling: on average 6 % of the rows are spare, not 25 %
                # (every per-slot array of the core follows this capacity, ~500 bytes a row).
                self._grow(min(self.max_series, self.capacity + max(self.capacity // 8, 1024)))
            self._keys.append(None)
        else:
            return None
        self._keys[slot] = key
        self._slot_of[key] = slot
        self._reset(slot)
        return slot

    def release(self, key: str) -> int | None:
        """Forget series `key`; returns the slot it had (now free) or None."""
        slot = self._slot_of.pop(key, None)
        if slot is not None:
            self._keys[slot] = None
            self._free.append(slot)
            self._reset(slot)
        return slot

    def used_slots(self) -> np.ndarray:
        """Slots of all active series."""
        return np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))

    def idle(self, older_than: float) -> list[str]:
        """Keys of series whose last reading was seen before clock time `older_than`."""
        used = self.used_slots()
        stale = used[self.last_seen_at[used] < older_than]
        return [k for k in (self._keys[s] for s in stale.tolist()) if k is not None]

    def _reset(self, slot: int) -> None:
        self.values[slot] = 0.0
        self.ts[slot] = 0.0
        self.pos[slot] = 0
        self.count[slot] = 0
        self.last_ts[slot] = -np.inf
        self.order_ts[slot] = -np.inf
        self.last_value[slot] = np.nan
        self.last_seen_at[slot] = 0.0

    def _grow(self, new_cap: int) -> None:
        self.values = grown(self.values, new_cap, 0.0)
        self.ts = grown(self.ts, new_cap, 0.0)
        self.pos = grown(self.pos, new_cap, 0)
        self.count = grown(self.count, new_cap, 0)
        self.last_ts = grown(self.last_ts, new_cap, -np.inf)
        self.order_ts = grown(self.order_ts, new_cap, -np.inf)
        self.last_value = grown(self.last_value, new_cap, np.nan)
        self.last_seen_at = grown(self.last_seen_at, new_cap, 0.0)

    # -- data --------------------------------------------------------------------------------

    def ready(self, slots: np.ndarray) -> np.ndarray:
        """Mask of `slots` whose window is full."""
        full: np.ndarray = self.count[slots] >= self.window_len
        return full

    def has_readings(self) -> np.ndarray:
        """Mask of every slot (the whole capacity) that holds a reading."""
        held: np.ndarray = self.count > 0
        return held

    def order_bounds(self, slots: np.ndarray | None = None) -> np.ndarray:
        """The order bound of each of `slots`; None: of every slot, the whole capacity (the
        store's own array, not a copy, for the per-batch sweeps: read it, never write)."""
        bounds: np.ndarray = self.order_ts if slots is None else self.order_ts[slots]
        return bounds

    def order_bound_of(self, slot: int) -> float:
        return float(self.order_ts[slot])

    def newest_ts(self, slots: np.ndarray) -> np.ndarray:
        """The ts of the newest reading of each of `slots` (-inf: none yet)."""
        newest: np.ndarray = self.last_ts[slots]
        return newest

    def last_values(self, slots: np.ndarray) -> np.ndarray:
        """The value of the last reading pushed to each of `slots` (exact, unlike the
        float32 window; NaN: none yet)."""
        last: np.ndarray = self.last_value[slots]
        return last

    def last_value_of(self, slot: int) -> float:
        return float(self.last_value[slot])

    def windows(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Windows of `slots`, oldest first: values ``(n, W)`` and timestamps (None unless
        `keep_ts`)."""
        order = (self.pos[slots, np.newaxis] + np.arange(self.window_len)) % self.window_len
        rows = slots[:, np.newaxis]
        values = self.values[rows, order]
        ts = self.ts[rows, order] if self.keep_ts else None
        return values, ts

    def push(self, slots: np.ndarray, values: np.ndarray, ts: np.ndarray, seen_at: float) -> None:
        """Append one reading to each of `slots` (which must be distinct)."""
        pos = self.pos[slots]
        self.values[slots, pos] = values
        self.ts[slots, pos] = ts
        self.pos[slots] = (pos + 1) % self.window_len
        self.count[slots] = np.minimum(self.count[slots] + 1, self.window_len)
        self.last_ts[slots] = np.maximum(self.last_ts[slots], ts)
        self.order_ts[slots] = np.maximum(self.order_ts[slots], self.order_bound(ts, seen_at))
        self.last_value[slots] = values
        self.last_seen_at[slots] = seen_at

    def order_bound(self, ts: np.ndarray | float, seen_at: float) -> np.ndarray | float:
        """What a reading stamped `ts` and taken at clock time `seen_at` makes its series'
        order bound (at least): its ts, but at most `future_slack_s` ahead of the clock."""
        return np.minimum(ts, seen_at + self.future_slack_s)

    def repeat_of(self, slot: int, ts: float, value: float) -> bool | None:
        """Whether the window of `slot` holds a reading at `ts`: True when it has that value
        too (a repeat: a redelivery), False when another value (not a repeat, but not new
        either), None when no reading at `ts` is in the window.

        Values are compared at the window's float32 precision.
        """
        n = int(self.count[slot])
        if n == 0:
            return None
        held = self.ts[slot] if n == self.window_len else self._filled(slot, n)
        at = np.flatnonzero(held == ts)
        if not at.size:
            return None
        if n < self.window_len:
            at = (int(self.pos[slot]) - n + at) % self.window_len
        return bool(np.any(self.values[slot, at] == np.float32(value)))

    def _filled(self, slot: int, n: int) -> np.ndarray:
        """The `n` timestamps a slot that is not full yet holds (the rest of its row is 0)."""
        positions = (int(self.pos[slot]) - n + np.arange(n)) % self.window_len
        filled: np.ndarray = self.ts[slot, positions]
        return filled

    # -- SlotState (`detector.engine.slot_state`) ------------------------------------------

    name = "windows"
    version = 1
    required = ("values", "ts", "count", "last_ts", "last_value", "last_seen")

    def grow(self, capacity: int) -> None:
        if capacity > self.capacity:
            self._grow(capacity)

    def reset(self, slot: int) -> None:
        self._reset(slot)

    def snapshot(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Compact copy of the windows of `slots`, oldest reading first."""
        order = (self.pos[slots, np.newaxis] + np.arange(self.window_len)) % self.window_len
        rows = slots[:, np.newaxis]
        return {
            "values": self.values[rows, order],
            "ts": self.ts[rows, order],
            "count": self.count[slots].copy(),
            "last_ts": self.last_ts[slots].copy(),
            "order_ts": self.order_ts[slots].copy(),
            "last_value": self.last_value[slots].copy(),
            "last_seen": self.last_seen_at[slots].copy(),  # the checkpoints' name for it
        }

    def restore(self, slots: np.ndarray, state: Mapping[str, np.ndarray]) -> None:
        """Write row i of a `snapshot` into allocated slot ``slots[i]``."""
        # Checkpoints from before the order bound (and before timestamps were always kept)
        # restore too: the bound is then the newest ts, and repeats are not recognised until
        # the window has filled again.
        order = state.get("order_ts", state["last_ts"])
        for i, slot in enumerate(slots.tolist()):
            self.values[slot] = state["values"][i]
            if state["ts"].shape[1] == self.window_len:
                self.ts[slot] = state["ts"][i]
            self.pos[slot] = 0  # windows are stored oldest first
            self.count[slot] = state["count"][i]
            self.last_ts[slot] = state["last_ts"][i]
            self.order_ts[slot] = order[i]
            self.last_value[slot] = state["last_value"][i]
            self.last_seen_at[slot] = state["last_seen"][i]

    def nbytes(self) -> int:
        arrays = (self.values, self.ts, self.pos, self.count, self.last_ts, self.order_ts)
        return sum(a.nbytes for a in (*arrays, self.last_value, self.last_seen_at))
