"""What a device's other sensors say about one of its readings.

A machine's sensors move together when its state changes: at a start-up, a stop or a new
setpoint, current, vibration and pressure rise or fall as one, and temperature follows. Judged
one series at a time, every such change looks like a fault; judged against the device's other
sensors, it is what the machine does. A fault is a sensor departing from what its siblings
imply: a current that rises while vibration does not follow, a drift in one sensor only, a
spike on one channel.

For each device with two or more metrics, `DeviceRelations` keeps an exponentially weighted
mean vector and covariance matrix of an observation vector with one position per metric (the
scaled values, or the forecast residuals). Given the metrics present at one timestamp, the
conditional Gaussian residual of metric i is ``(P d)_i / P_ii`` and its deviation
``z = (P d)_i / sqrt(P_ii)``, where P inverts the covariance of the present metrics and d is
their deviation from the mean (the conditional-residual form of multivariate statistical
process control). A metric is never judged by its own past: a drifting sensor must not
explain itself.

Readings of a device relate when they carry the same timestamp and arrive in the same batch,
as a ``sensors/{device}`` payload with ``values`` delivers them. Devices with one metric have
no relations and cost nothing here.
"""

from __future__ import annotations

import numpy as np

from detector.engine.slot_arrays import grown

RELATION_HALFLIFE = 20_000
"""Readings over which a device's relations forget half: two weeks at one a minute. A
machine's physics changes slowly, and a shorter memory forgets over a weekend's standstill
how the machine relates when it runs (measured: every Monday start-up alerted)."""
MAX_POSITIONS = 6
"""Metrics of one device that take part in its relations; further metrics are scored alone."""
_RIDGE = 1e-3
"""Relative ridge on a covariance before inverting: two sensors measuring the same thing
would otherwise make it singular. A numerical guard, far below any sensor's noise share."""
_MIN_VAR = 1e-8


class DeviceRelations:
    """Per-device online Gaussian model of the metrics observed at one timestamp."""

    def __init__(self, halflife: float, clip: float, learn: int) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / max(halflife, 1.0))
        self.clip = clip
        self.learn = max(1, learn)
        self.ids: dict[str, int] = {}
        self._free_ids: list[int] = []
        self.names: list[list[str | None]] = []  # metric at each position, per device id
        self.device_names: list[str | None] = []  # the device of each id (None: free)
        self.row_of = np.zeros(0, dtype=np.int64)  # numeric row per device id, -1: none yet
        self._free_rows: list[int] = []
        self._rows_used = 0
        p = MAX_POSITIONS
        self.mean = np.zeros((0, p))
        self.cov = np.zeros((0, p, p))
        self.seen_count = np.zeros((0, p), dtype=np.int32)

    # -- membership ----------------------------------------------------------------------------

    def attach(self, device: str, metric: str) -> tuple[int, int]:
        """The (device id, position) of a device's metric, taking a free position; position
        -1 when the device already has `MAX_POSITIONS` metrics. A device gets its model
        (a numeric row) when its second metric attaches."""
        dev = self.ids.get(device)
        if dev is None:
            dev = self._free_ids.pop() if self._free_ids else len(self.names)
            if dev == len(self.names):
                self.names.append([None] * MAX_POSITIONS)
                self.device_names.append(None)
                self.row_of = grown(self.row_of, max(16, dev + 1 + dev // 8), -1)
            self.ids[device] = dev
            self.device_names[dev] = device
        names = self.names[dev]
        if metric in names:
            return dev, names.index(metric)
        if None not in names:
            return dev, -1
        pos = names.index(None)
        names[pos] = metric
        if self.row_of[dev] < 0 and sum(n is not None for n in names) >= 2:
            self.row_of[dev] = self._take_row()
        elif self.row_of[dev] >= 0:
            self._reset(int(self.row_of[dev]), pos)
        return dev, pos

    def detach(self, dev: int, pos: int) -> None:
        """A metric's slot was released: free its position (and the device once empty).
        `dev` is the device id `attach` gave."""
        device = self.device_names[dev] if 0 <= dev < len(self.device_names) else None
        if device is None:
            return
        row = int(self.row_of[dev])
        if pos >= 0:
            self.names[dev][pos] = None
            if row >= 0:
                self._reset(row, pos)
        if all(name is None for name in self.names[dev]):
            del self.ids[device]
            self.device_names[dev] = None
            self._free_ids.append(dev)
            if row >= 0:
                self._free_rows.append(row)
                self.row_of[dev] = -1

    def _take_row(self) -> int:
        if self._free_rows:
            row = self._free_rows.pop()
        else:
            row = self._rows_used
            self._rows_used += 1
            if row >= self.mean.shape[0]:
                n = max(16, row + 1 + row // 8)
                self.mean = grown(self.mean, n, 0.0)
                self.cov = grown(self.cov, n, 0.0)
                self.seen_count = grown(self.seen_count, n, 0)
        for pos in range(MAX_POSITIONS):
            self._reset(row, pos)
        return row

    def _reset(self, row: int, pos: int) -> None:
        self.mean[row, pos] = 0.0
        self.cov[row, pos, :] = 0.0
        self.cov[row, :, pos] = 0.0
        self.cov[row, pos, pos] = 1.0
        self.seen_count[row, pos] = 0

    # -- scoring -------------------------------------------------------------------------------

    def observe(
        self,
        devs: np.ndarray,
        pos: np.ndarray,
        ts: np.ndarray,
        x: np.ndarray,
        suspect: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Conditional residuals of observations, then learn them.

        One observation per series: `devs`/`pos` from `attach` (pos -1: not related), `ts`
        groups the observations of a device that belong together, `x` the observed values.
        Returns the conditional residual and its z (residual / conditional std) per
        observation, NaN where the device has no other learnt metric present. `suspect`
        marks observations already known to be off (their series is in an alert): they are
        left out of what their siblings are judged against.
        """
        n = x.shape[0]
        resid = np.full(n, np.nan)
        z = np.full(n, np.nan)
        rows = self._rows(devs)
        use = np.flatnonzero((rows >= 0) & (pos >= 0) & np.isfinite(x))
        if use.size < 2:
            return resid, z
        order = use[np.lexsort((ts[use], rows[use]))]
        r_o, t_o = rows[order], ts[order]
        start = np.ones(order.size, dtype=bool)
        start[1:] = (r_o[1:] != r_o[:-1]) | (t_o[1:] != t_o[:-1])
        group = np.cumsum(start) - 1
        g_rows = r_o[start]
        shape = (g_rows.size, MAX_POSITIONS)
        obs = np.zeros(shape)
        present = np.zeros(shape, dtype=bool)
        suspects = np.zeros(shape, dtype=bool)
        q = pos[order]
        obs[group, q] = x[order]
        present[group, q] = True
        if suspect is not None:
            suspects[group, q] = suspect[order]
        res_g, z_g = self._conditional(g_rows, obs, present, suspects)
        resid[order] = res_g[group, q]
        z[order] = z_g[group, q]
        self._learn(g_rows, obs, present)
        return resid, z

    def _conditional(
        self, g_rows: np.ndarray, obs: np.ndarray, present: np.ndarray, suspects: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Conditional residuals and z of every learnt present metric of each group.

        One faulty sensor shifts what its siblings are expected to be too: a current spike
        makes vibration look low for its current. So the metric with the largest |z| of a
        group (the likeliest culprit) and the suspects keep their z, and every other metric
        is judged again without them (when two or more others remain), keeping the smaller
        of its two deviations.
        """
        learnt = present & (self.seen_count[g_rows] >= self.learn)
        prec = self._precision(g_rows, learnt)
        dev = np.where(learnt, obs - self.mean[g_rows], 0.0)
        resid, z = _residuals(prec, dev, learnt)
        third = learnt.sum(axis=1) >= 3
        if not third.any():
            return resid, z
        culprits = suspects & learnt & third[:, None]
        top = np.argmax(np.where(np.isfinite(z), np.abs(z), -1.0), axis=1)
        culprits[np.arange(top.size), top] |= third
        rest = learnt & ~culprits
        rest &= (rest.sum(axis=1) >= 2)[:, None]
        for c in range(MAX_POSITIONS):
            g = np.flatnonzero(culprits[:, c] & rest.any(axis=1))
            if g.size:
                # Marginalising a position out of a Gaussian: the Schur complement of its
                # precision.
                col = prec[g, :, c]
                pcc = np.maximum(prec[g, c, c], _MIN_VAR)
                prec[g] -= col[:, :, None] * col[:, None, :] / pcc[:, None, None]
                prec[g, c, :] = 0.0
                prec[g, :, c] = 0.0
        resid2, z2 = _residuals(prec, np.where(rest, dev, 0.0), rest)
        better = np.isfinite(z2) & (np.abs(z2) < np.abs(z))
        return np.where(better, resid2, resid), np.where(better, z2, z)

    def _precision(self, g_rows: np.ndarray, use: np.ndarray) -> np.ndarray:
        """Inverse covariance of each group's used positions (zero rows and columns for the
        rest); groups sharing a pattern of positions invert in one call."""
        prec = np.zeros((g_rows.size, MAX_POSITIONS, MAX_POSITIONS))
        codes = use @ (1 << np.arange(MAX_POSITIONS))
        for code in np.unique(codes).tolist():
            s = np.flatnonzero((code >> np.arange(MAX_POSITIONS)) & 1)
            if s.size < 2:
                continue
            g = np.flatnonzero(codes == code)
            cov = self.cov[g_rows[g]][:, s][:, :, s]
            diag = np.maximum(np.diagonal(cov, axis1=1, axis2=2), _MIN_VAR)
            cov = cov + (_RIDGE * diag)[:, :, None] * np.eye(s.size)
            prec[np.ix_(g, s, s)] = np.linalg.inv(cov)
        return prec

    def _learn(self, g_rows: np.ndarray, obs: np.ndarray, present: np.ndarray) -> None:
        """Fold each group's observation into its device's mean and covariance.

        Metrics still learning use running means (alpha >= 1/(n+1)); learnt ones are clipped
        to `clip` standard deviations, so a fault cannot teach the device that it is normal
        within a few readings.
        """
        seen = self.seen_count[g_rows]
        a = np.where(present, np.maximum(self.alpha, 1.0 / (seen + 1.0)), 0.0)
        mean = self.mean[g_rows]
        cov = self.cov[g_rows]
        sd = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), _MIN_VAR))
        dev = obs - mean
        dev = np.where(seen >= self.learn, np.clip(dev, -self.clip * sd, self.clip * sd), dev)
        dev = np.where(present, dev, 0.0)
        self.mean[g_rows] = mean + a * dev
        pair = np.maximum(a[:, :, None], a[:, None, :])
        both = present[:, :, None] & present[:, None, :]
        updated = (1.0 - pair) * (cov + pair * dev[:, :, None] * dev[:, None, :])
        self.cov[g_rows] = np.where(both, updated, cov)
        self.seen_count[g_rows] = np.where(present, np.minimum(seen, 2**30) + 1, seen)

    # -- checkpoints ---------------------------------------------------------------------------

    def _rows(self, devs: np.ndarray) -> np.ndarray:
        """The numeric row of each device id (-1: none; every id is -1 while no device was
        ever attached, e.g. with relate_devices off)."""
        if not self.row_of.size:
            return np.full(devs.shape, -1, dtype=np.int64)
        return np.where(devs >= 0, self.row_of[np.maximum(devs, 0)], -1)

    def rescale(
        self, devs: np.ndarray, pos: np.ndarray, gain: np.ndarray, shift: np.ndarray | None
    ) -> None:
        """Convert the model in place to new units of its metrics: the metric of each
        (device id, position) pair to ``gain * x + shift`` (no shift: ``gain * x``, e.g.
        for residuals), its covariances with it by the gains."""
        if not self.mean.shape[0]:
            return
        rows = self._rows(devs)
        member = (rows >= 0) & (pos >= 0)
        factor = np.ones_like(self.mean)
        offset = np.zeros_like(self.mean)
        factor[rows[member], pos[member]] = gain[member]
        if shift is not None:
            offset[rows[member], pos[member]] = shift[member]
        self.mean[:] = self.mean * factor + offset
        self.cov[:] = self.cov * factor[:, :, None] * factor[:, None, :]

    def nbytes(self) -> int:
        return self.mean.nbytes + self.cov.nbytes + self.seen_count.nbytes

    def slot_state(self, devs: np.ndarray, pos: np.ndarray) -> dict[str, np.ndarray]:
        """The model as per-series rows (checkpoints hold one row per series): each series'
        position, mean, covariance row over positions and readings learnt."""
        n = devs.shape[0]
        rows = self._rows(devs)
        related = (rows >= 0) & (pos >= 0)
        r, q = rows[related], pos[related]
        out: dict[str, np.ndarray] = {
            "pos": np.where(related, pos, -1).astype(np.int32),
            "mean": np.zeros(n),
            "cov": np.zeros((n, MAX_POSITIONS)),
            "seen": np.zeros(n, dtype=np.int32),
        }
        out["mean"][related] = self.mean[r, q]
        out["cov"][related] = self.cov[r, q]
        out["seen"][related] = self.seen_count[r, q]
        return out

    def restore_slots(
        self, devs: np.ndarray, pos: np.ndarray, state: dict[str, np.ndarray]
    ) -> None:
        """Load `slot_state` rows into the series now at (`devs`, `pos`): positions may have
        changed, so covariances are mapped through each device's old positions."""
        rows = self._rows(devs)
        old_pos = state["pos"]
        for row in np.unique(rows[rows >= 0]).tolist():
            members = np.flatnonzero((rows == row) & (pos >= 0) & (old_pos >= 0))
            if not members.size:
                continue
            new_q, old_q = pos[members], old_pos[members]
            self.mean[row, new_q] = state["mean"][members]
            self.seen_count[row, new_q] = state["seen"][members]
            self.cov[row][np.ix_(new_q, new_q)] = state["cov"][members][:, old_q]


def _residuals(prec: np.ndarray, dev: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conditional residual ``(P d)_i / P_ii`` and z ``(P d)_i / sqrt(P_ii)`` of the used
    positions of groups that use two or more; NaN elsewhere."""
    u = np.einsum("gij,gj->gi", prec, dev)
    pd = np.diagonal(prec, axis1=1, axis2=2)
    ok = use & (use.sum(axis=1) >= 2)[:, None] & (pd > 0)
    safe = np.where(ok, pd, 1.0)
    return np.where(ok, u / safe, np.nan), np.where(ok, u / np.sqrt(safe), np.nan)
