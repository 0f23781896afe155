"""Per-kind device table: compact numpy state indexed by a device position.

Each device of a kind gets a position on first sight; ids live in one list and one dict,
times in int64 arrays (last activity for absence, last reading for ordering). A batch of
one kind is prepared here once: positions, times sorted ascending (never later than the
batch's receive time, see ``ordering_times``), which rows are fresh (newer than anything
seen from that device) and which devices occur more than once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rules.conditions import BoolArray, Columns, IntArray, Vocabulary
from rules.records import Observation

UNSET = int(np.iinfo(np.int64).min)
ACTIVITY = "@activity"


@dataclass(slots=True)
class Batch:
    """One kind's observations of one ``evaluate`` call, sorted by time."""

    rows: list[Observation]
    idx: IntArray
    ts: IntArray
    fresh: BoolArray
    multi: BoolArray
    columns: Columns

    def __len__(self) -> int:
        return len(self.rows)


def grown(array: np.ndarray, capacity: int, fill: object) -> np.ndarray:
    """``array`` extended along its first axis to ``capacity`` rows filled with ``fill``."""
    if len(array) >= capacity:
        return array
    shape = (capacity, *array.shape[1:])
    bigger = np.full(shape, fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


def ordering_times(ts: IntArray, received_ns: int) -> tuple[IntArray, BoolArray | None]:
    """The times the engine orders and times readings by, and which rows were ahead.

    A reading's time is the device's own ``ts``, but never later than when the batch was
    received: rows ahead of that (a device clock running fast, within the accepted skew, or
    a reading without a ts stamped just after the receive time) get the receive time, one
    nanosecond apart in arrival order so that two are never taken for the same reading. The
    mask (None when no row was ahead) tells ``prepare`` not to let those rows move the
    device's "latest reading" mark: otherwise one payload from the future would make every
    later reading of that device look late, and change no alert state (a muted fire alarm).
    """
    ahead = ts > received_ns
    if not ahead.any():
        return ts, None
    rank = np.cumsum(ahead, dtype=np.int64)  # 1, 2, ... over the rows ahead, in input order
    return np.where(ahead, received_ns + rank, ts), ahead


class KindTable:
    """Device positions and activity times of one device kind."""

    def __init__(self, kind: str, capacity: int = 1024) -> None:
        self.kind = kind
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.last_activity = np.full(capacity, UNSET, dtype=np.int64)
        self.last_reading = np.full(capacity, UNSET, dtype=np.int64)
        self._saved = np.full(capacity, UNSET, dtype=np.int64)

    @property
    def size(self) -> int:
        """How many devices have a position."""
        return len(self.ids)

    @property
    def capacity(self) -> int:
        """Rows allocated in every per-device array of this kind."""
        return len(self.last_activity)

    def ensure(self, device_id: str) -> int:
        """The device's position, allocating one (and growing the arrays) if new."""
        position = self.index.get(device_id)
        if position is None:
            position = len(self.ids)
            self.index[device_id] = position
            self.ids.append(device_id)
            if position >= len(self.last_activity):
                capacity = max(1024, self.capacity * 2)
                self.last_activity = grown(self.last_activity, capacity, UNSET)
                self.last_reading = grown(self.last_reading, capacity, UNSET)
                self._saved = grown(self._saved, capacity, UNSET)
        return position

    def touch(self, device_id: str, ts_ns: int) -> int:
        """Record activity without a reading (status message, registration)."""
        position = self.ensure(device_id)
        self.last_activity[position] = max(int(self.last_activity[position]), ts_ns)
        return position

    def touch_many(self, device_ids: Sequence[str], ts_ns: int) -> IntArray:
        """``touch`` for many devices at once (registration at start-up); their positions."""
        ensure = self.ensure
        positions = np.fromiter((ensure(d) for d in device_ids), np.int64, len(device_ids))
        np.maximum.at(self.last_activity, positions, ts_ns)
        return positions

    def prepare(
        self, rows: Sequence[Observation], vocab: Vocabulary, received_ns: int | None
    ) -> Batch:
        """Positions, sorted times, freshness; records the batch's activity and readings."""
        get = self.index.get
        positions = [get(row.device_id, -1) for row in rows]
        if -1 in positions:
            ensure = self.ensure
            positions = [
                position if position >= 0 else ensure(row.device_id)
                for position, row in zip(positions, rows, strict=True)
            ]
        idx = np.array(positions, dtype=np.int64)
        ts = np.array([row.ts_ns for row in rows], dtype=np.int64)
        ahead = None
        if received_ns is not None:
            ts, ahead = ordering_times(ts, received_ns)
        ordered = list(rows)
        if len(ts) > 1 and bool((ts[1:] < ts[:-1]).any()):
            order = np.argsort(ts, kind="stable")
            idx, ts = idx[order], ts[order]
            ordered = [ordered[i] for i in order.tolist()]
            ahead = None if ahead is None else ahead[order]
        fresh = ts > self.last_reading[idx]
        multi = self._repeated(idx, ts, fresh)
        if ahead is None:
            np.maximum.at(self.last_reading, idx, ts)
        else:  # rows from ahead of the receive time apply, but set no "latest" mark
            np.maximum.at(self.last_reading, idx[~ahead], ts[~ahead])
        activity = ts if received_ns is None else np.full(len(ts), received_ns, dtype=np.int64)
        np.maximum.at(self.last_activity, idx, activity)
        columns = Columns([row.values for row in ordered], vocab)
        return Batch(ordered, idx, ts, fresh, multi, columns)

    @staticmethod
    def _repeated(idx: IntArray, ts: IntArray, fresh: BoolArray) -> BoolArray:
        """Rows of devices seen more than once; clears ``fresh`` for same-time duplicates."""
        multi = np.zeros(len(idx), dtype=np.bool_)
        if len(idx) < 2:
            return multi
        by_device = np.argsort(idx, kind="stable")  # stable: time order kept per device
        sorted_idx = idx[by_device]
        same = sorted_idx[1:] == sorted_idx[:-1]
        if not same.any():
            return multi
        multi[by_device[1:][same]] = True
        multi[by_device[:-1][same]] = True
        sorted_ts = ts[by_device]
        duplicate = same & (sorted_ts[1:] == sorted_ts[:-1])
        fresh[by_device[1:][duplicate]] = False
        return multi

    def dirty_activity(self, resolution_ns: int) -> dict[str, dict[str, object]]:
        """Activity of devices that moved on by at least ``resolution_ns`` since last asked."""
        changed = self._advance_saved(resolution_ns)
        return {self.ids[position]: self.activity_state(position) for position in changed.tolist()}

    def mark_saved(self, resolution_ns: int) -> None:
        """``dirty_activity`` without building the states."""
        self._advance_saved(resolution_ns)

    def _advance_saved(self, resolution_ns: int) -> IntArray:
        """Positions whose activity moved on by ``resolution_ns``; now counted as saved."""
        size = self.size
        activity = self.last_activity[:size]
        saved = self._saved[:size]
        changed = np.flatnonzero(activity >= saved + max(resolution_ns, 1))
        saved[changed] = activity[changed]
        return changed

    def activity_state(self, position: int) -> dict[str, object]:
        """JSON form of one device's times."""
        reading = int(self.last_reading[position])
        return {
            "kind": self.kind,
            "last_seen_ns": int(self.last_activity[position]),
            "last_reading_ns": None if reading == UNSET else reading,
        }

    def load_activity(self, device_id: str, state: Mapping[str, object]) -> None:
        """Restore one device's times (from ``activity_state``)."""
        position = self.ensure(device_id)
        seen = state.get("last_seen_ns")
        reading = state.get("last_reading_ns")
        if isinstance(seen, int):
            self.last_activity[position] = max(int(self.last_activity[position]), seen)
            self._saved[position] = self.last_activity[position]
        if isinstance(reading, int):
            self.last_reading[position] = max(int(self.last_reading[position]), reading)
