"""Runtime of ``absent`` rules: no message from a device for a duration → offline alert.

Activity lives in the kind's table (one int64 per device); this runtime adds one int64 per
device, the time its alert fired (``UNSET`` when not firing). ``tick`` is one vectorised
comparison over every device of the kind; only devices that just went silent cost Python
work. Any message from a device (reading, status, registration) clears its alert.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rules.conditions import IntArray
from rules.model import Rule
from rules.records import Transition
from rules.runtime import (
    NS,
    RuleRuntime,
    StateDoc,
    fmt_duration,
    fmt_time,
    fmt_times,
    int_of,
)
from rules.table import UNSET, Batch, KindTable, grown


class AbsenceRuntime(RuleRuntime):
    """Offline detection for every device of one kind."""

    def __init__(self, rule: Rule, table: KindTable, heartbeat_s: Mapping[str, float]) -> None:
        super().__init__(rule, table)
        assert rule.absent is not None
        seconds = rule.absent
        times = rule.absent_heartbeats
        if times is not None and rule.device_type in heartbeat_s:
            seconds = times * float(heartbeat_s[rule.device_type])
        self.duration_s = seconds
        self.duration_ns = round(seconds * NS)
        self.fired = np.full(table.capacity, UNSET, dtype=np.int64)
        self.changed: set[int] = set()

    def fit(self) -> None:
        """Grow the per-device array to the table's capacity."""
        self.fired = grown(self.fired, self.table.capacity, UNSET)

    def evaluate(self, batch: Batch) -> list[Transition]:
        """Every message, fresh or late, clears its device's offline alert."""
        self.fit()
        hit = self.fired[batch.idx] != UNSET
        if not hit.any():
            return []
        out: list[Transition] = []
        for row in np.flatnonzero(hit).tolist():
            position = int(batch.idx[row])
            if self.fired[position] != UNSET:
                out.append(self._resolve(position, int(batch.ts[row])))
        return out

    def seen(self, position: int, ts_ns: int) -> list[Transition]:
        """Activity without a reading clears the alert too."""
        self.fit()
        if self.fired[position] == UNSET:
            return []
        return [self._resolve(position, ts_ns)]

    def seen_many(self, positions: IntArray, ts_ns: int) -> list[Transition]:
        """``seen`` vectorised: only devices with an offline alert cost Python work."""
        self.fit()
        firing = positions[self.fired[positions] != UNSET]
        return [self._resolve(position, ts_ns) for position in firing.tolist()]

    def _resolve(self, position: int, ts_ns: int) -> Transition:
        fired = int(self.fired[position])
        offline = fmt_duration(max(0, ts_ns - fired) / NS)
        # The device spoke after we declared it offline: it was alive at least then, even if
        # its message carries an older time (a late reading, a clock behind).
        activity = self.table.last_activity
        activity[position] = max(int(activity[position]), fired)
        self.fired[position] = UNSET
        self.changed.add(position)
        message = f"message received at {fmt_time(ts_ns)} (alert was firing for {offline})"
        device_id = self.table.ids[position]
        return self.transition(device_id, "resolved", ts_ns, {"last_seen_ns": ts_ns}, message)

    def tick(self, now_ns: int) -> list[Transition]:
        """Devices silent for at least the duration go offline (one vectorised test)."""
        self.fit()
        size = self.table.size
        activity = self.table.last_activity[:size]
        fired = self.fired[:size]
        due = np.flatnonzero(
            (activity != UNSET) & (activity <= now_ns - self.duration_ns) & (fired == UNSET)
        )
        if due.size == 0:
            return []
        fired[due] = now_ns
        positions = due.tolist()
        self.changed.update(positions)
        ids = self.table.ids
        silent = f"no message for {fmt_duration(self.duration_s)}, last at"
        lasts = activity[due]
        return [
            self.transition(
                ids[position], "firing", now_ns, {"last_seen_ns": last}, f"{silent} {stamp}"
            )
            for position, last, stamp in zip(
                positions, lasts.tolist(), fmt_times(lasts), strict=True
            )
        ]

    def resolve_all(self, ts_ns: int) -> list[Transition]:
        """Resolve every offline alert of this rule."""
        self.fit()
        out = []
        ids = self.table.ids
        for position in np.flatnonzero(self.fired != UNSET).tolist():
            self.fired[position] = UNSET
            self.changed.add(position)
            last = int(self.table.last_activity[position])
            message = "rule removed or disabled"
            out.append(
                self.transition(ids[position], "resolved", ts_ns, {"last_seen_ns": last}, message)
            )
        return out

    def dirty(self) -> dict[str, StateDoc | None]:
        """Offline alerts raised or cleared since the last call."""
        changed, self.changed = self.changed, set()
        ids = self.table.ids
        out: dict[str, StateDoc | None] = {}
        for position in sorted(changed):
            fired = int(self.fired[position])
            out[ids[position]] = None if fired == UNSET else {"status": "firing", "since_ns": fired}
        return out

    def load(self, key: str, state: Mapping[str, object]) -> None:
        """Restore one device's offline alert."""
        if state.get("status") != "firing":
            raise ValueError(f"bad absence state {state!r}")
        position = self.table.ensure(key)
        self.fit()
        self.fired[position] = int_of(state, "since_ns")
        self.changed.discard(position)

    def adopt(self, old: RuleRuntime) -> None:
        """Keep the offline alerts of the previous version of this rule."""
        assert isinstance(old, AbsenceRuntime)
        self.fired, self.changed = old.fired, old.changed
        self.fit()
