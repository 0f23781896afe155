"""Runtime of ``rate`` rules: the field rose (or fell) by at least an amount within a window.

Each device keeps its last ``points`` (time, value) pairs in a fixed-size ring: two numpy
matrices indexed by device position, so a batch is evaluated with a handful of array
operations. A device that occurs k times in a batch is handled in k rounds (its first
readings, then its second ones...), each round vectorised. A reading triggers when
``value - min(window)`` reaches the rise (``max(window) - value`` the fall), the window being
the ring's points no older than ``within`` before the reading. With readings more often than
``points`` per window only the newest ``points`` count. Alert states then follow the same
state machine as ``when`` rules; without a clear condition, a reading that no longer
exceeds the rate clears.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from rules.alerting import ConditionRuntime
from rules.conditions import BoolArray, FloatArray, IntArray
from rules.model import Rate, Rule
from rules.records import Transition
from rules.runtime import NS, RuleRuntime, StateDoc, fmt_duration
from rules.table import UNSET, Batch, KindTable, grown

DEFAULT_POINTS = 8


class RateRuntime(ConditionRuntime):
    """A ``when``-style state machine whose trigger is a rate of change."""

    def __init__(self, rule: Rule, table: KindTable, points: int = DEFAULT_POINTS) -> None:
        super().__init__(rule, table)
        assert rule.rate is not None
        self.rate: Rate = rule.rate
        self.trigger_fields = (rule.rate.field,)
        self.within_ns = round(self.rate.within * NS)
        self.points = max(2, min(points, 255))
        capacity = table.capacity
        self.ring_ts = np.full((capacity, self.points), UNSET, dtype=np.int64)
        self.ring_val = np.zeros((capacity, self.points), dtype=np.float64)
        self.ring_pos = np.zeros(capacity, dtype=np.uint8)
        self.ring_changed = np.zeros(capacity, dtype=np.bool_)
        self._ref: FloatArray = np.zeros(0)

    def fit(self) -> None:
        """Grow the status array and the rings to the table's capacity."""
        super().fit()
        capacity = self.table.capacity
        self.ring_ts = grown(self.ring_ts, capacity, UNSET)
        self.ring_val = grown(self.ring_val, capacity, 0.0)
        self.ring_pos = grown(self.ring_pos, capacity, 0)
        self.ring_changed = grown(self.ring_changed, capacity, False)

    def trigger(self, batch: Batch) -> BoolArray:
        """Rows whose value moved by the rate's amount within the window; fills the rings."""
        column = batch.columns.numeric(self.rate.field)
        exceeded = np.zeros(len(batch), dtype=np.bool_)
        self._ref = np.full(len(batch), np.nan)
        rows = np.flatnonzero(batch.fresh & ~np.isnan(column))
        for chosen in _rounds(batch.idx, batch.multi, rows):
            self._apply(chosen, batch, column, exceeded)
        return exceeded

    def _apply(self, rows: IntArray, batch: Batch, column: FloatArray, out: BoolArray) -> None:
        positions, ts, value = batch.idx[rows], batch.ts[rows], column[rows]
        times = self.ring_ts[positions]
        in_window = (times >= (ts - self.within_ns)[:, None]) & (times <= ts[:, None])
        window = self.ring_val[positions]
        if self.rate.rise is not None:
            ref = np.where(in_window, window, np.inf).min(axis=1)
            out[rows] = value - ref >= self.rate.rise
        else:
            ref = np.where(in_window, window, -np.inf).max(axis=1)
            out[rows] = ref - value >= (self.rate.fall or 0.0)
        self._ref[rows] = np.where(np.isfinite(ref), ref, np.nan)
        slot = self.ring_pos[positions]
        self.ring_ts[positions, slot] = ts
        self.ring_val[positions, slot] = value
        self.ring_pos[positions] = (slot + 1) % self.points
        self.ring_changed[positions] = True

    def describe_trigger(self, batch: Batch, row: int) -> str:
        """E.g. ``temperature rose 12 within 10m (28 → 40)``."""
        key = self.rate.field
        value = batch.rows[row].values.get(key)
        ref = float(self._ref[row]) if row < len(self._ref) else float("nan")
        if not isinstance(value, int | float) or math.isnan(ref):
            return f"{key} {value}"
        verb = "rose" if self.rate.rise is not None else "fell"
        within = fmt_duration(self.rate.within)
        return f"{key} {verb} {abs(value - ref):g} within {within} ({ref:g} → {value:g})"

    def describe_clear(self, values: Mapping[str, object]) -> str:
        """Why a reading clears."""
        if self.rule.clear is not None:
            return super().describe_clear(values)
        return f"{self.rate.field} {values.get(self.rate.field)}: rate no longer exceeded"

    def resolve_all(self, ts_ns: int) -> list[Transition]:
        """Resolve every alert and forget every window (so saved windows get deleted)."""
        out = super().resolve_all(ts_ns)
        size = self.table.size
        self.changed.update(np.flatnonzero((self.ring_ts[:size] != UNSET).any(axis=1)).tolist())
        self.ring_ts[:] = UNSET
        self.ring_changed[:] = False
        return out

    def dirty(self) -> dict[str, StateDoc | None]:
        """Alerts and windows changed since the last call.

        Every fresh reading moves a window, so this runs for most rows of a batch: the
        windows of all changed devices are sorted and converted at once."""
        size = self.table.size
        moved = np.flatnonzero(self.ring_changed[:size])
        self.ring_changed[:size] = False
        changed, self.changed = self.changed, set()
        extra = np.fromiter(changed, dtype=np.int64, count=len(changed))
        positions = np.union1d(moved, extra).astype(np.int64)
        ids = self.table.ids
        return dict(zip([ids[p] for p in positions.tolist()], self._docs(positions), strict=True))

    def state_doc(self, position: int) -> StateDoc | None:
        """The alert (if any) and the window's points, oldest first."""
        return self._docs(np.array([position], dtype=np.int64))[0]

    def _docs(self, positions: IntArray) -> list[StateDoc | None]:
        if not len(positions):
            return []
        times = self.ring_ts[positions]
        order = np.argsort(times, axis=1, kind="stable")
        times = np.take_along_axis(times, order, axis=1)
        values = np.take_along_axis(self.ring_val[positions], order, axis=1)
        alert_doc = super().state_doc
        out: list[StateDoc | None] = []
        for position, row_ts, row_val in zip(
            positions.tolist(), times.tolist(), values.tolist(), strict=True
        ):
            doc = alert_doc(position) or {}
            points = [[ts, val] for ts, val in zip(row_ts, row_val, strict=True) if ts != UNSET]
            if points:
                doc["window"] = points
            out.append(doc or None)
        return out

    def load(self, key: str, state: Mapping[str, object]) -> None:
        """Restore the alert (if any) and the window."""
        if "status" in state:
            super().load(key, state)
        position = self.table.ensure(key)
        self.fit()
        window = state.get("window", [])
        if not isinstance(window, list):
            raise ValueError(f"bad rate window {window!r}")
        points = [(int(ts), float(value)) for ts, value in window][-self.points :]
        self.ring_ts[position] = UNSET
        for slot, (ts, value) in enumerate(points):
            self.ring_ts[position, slot] = ts
            self.ring_val[position, slot] = value
        self.ring_pos[position] = len(points) % self.points

    def can_adopt(self, old: RuleRuntime) -> bool:
        """Same kind, same field and ring size: the window stays meaningful."""
        return (
            super().can_adopt(old)
            and isinstance(old, RateRuntime)
            and old.rate.field == self.rate.field
            and old.points == self.points
        )

    def adopt(self, old: RuleRuntime) -> None:
        """Keep alerts and windows of the previous version of this rule."""
        super().adopt(old)
        assert isinstance(old, RateRuntime)
        self.ring_ts, self.ring_val = old.ring_ts, old.ring_val
        self.ring_pos, self.ring_changed = old.ring_pos, old.ring_changed
        self.fit()


def _rounds(idx: IntArray, multi: BoolArray, rows: IntArray) -> Iterator[IntArray]:
    """Split rows (in time order) so that no device occurs twice in one part."""
    if rows.size == 0:
        return
    if not multi[rows].any():
        yield rows
        return
    positions = idx[rows]
    by_device = np.argsort(positions, kind="stable")
    sorted_positions = positions[by_device]
    starts = np.ones(len(rows), dtype=np.bool_)
    starts[1:] = sorted_positions[1:] != sorted_positions[:-1]
    counter = np.arange(len(rows))
    first = np.maximum.accumulate(np.where(starts, counter, 0))
    rank = np.empty(len(rows), dtype=np.int64)
    rank[by_device] = counter - first
    for occurrence in range(int(rank.max()) + 1):
        yield rows[rank == occurrence]
