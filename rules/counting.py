"""Runtime of ``count`` rules: the trigger held at least N times within a window, per group.

The group key joins the ``group_by`` values (hierarchy tags or reading fields) with ``/``,
e.g. ``B03/north`` for ``[building, facade]``; a missing value shows as ``?``. Each group
keeps its occurrences (time, device) sorted by time; the window is inclusive (an event
exactly ``within`` old still counts). The alert fires when the count reaches ``at_least``,
repeats on each further occurrence, and resolves once the count within the window drops
below ``at_least`` (on ``tick`` or on the group's next occurrence).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from rules.conditions import describe, evaluate
from rules.model import Condition, Count, Rule
from rules.records import Observation, State, Transition
from rules.runtime import NS, RuleRuntime, StateDoc, fmt_duration, int_of, scalars
from rules.table import Batch, KindTable


@dataclass(slots=True)
class Group:
    """Occurrences of one group within the window, and whether its alert fires."""

    events: list[tuple[int, str]] = field(default_factory=list)
    firing: bool = False
    since_ns: int | None = None
    values: Mapping[str, object] = field(default_factory=dict)
    device_id: str = ""


class CountRuntime(RuleRuntime):
    """Occurrence windows per group."""

    def __init__(self, rule: Rule, table: KindTable) -> None:
        super().__init__(rule, table)
        assert rule.count is not None and rule.when is not None
        self.count: Count = rule.count
        self.when: Condition = rule.when
        self.within_ns = round(self.count.within * NS)
        self.groups: dict[str, Group] = {}
        self.changed: set[str] = set()

    def key(self, row: Observation) -> str:
        """The group of one reading."""
        parts = []
        for name in self.count.group_by:
            if name == "device_id":
                value: object = row.device_id
            else:
                value = row.tags.get(name, row.values.get(name))
            parts.append("?" if value is None else str(value))
        return "/".join(parts)

    def evaluate(self, batch: Batch) -> list[Transition]:
        """Add each triggering reading to its group's window."""
        hits = evaluate(self.when, batch.columns) & batch.fresh
        out: list[Transition] = []
        for row in np.flatnonzero(hits).tolist():
            self._occur(batch.rows[row], int(batch.ts[row]), out)
        return out

    def _occur(self, row: Observation, ts: int, out: list[Transition]) -> None:
        key = self.key(row)
        group = self.groups.setdefault(key, Group())
        newest = max(ts, group.events[-1][0]) if group.events else ts
        if ts < newest - self.within_ns:
            return  # too late to count: outside the window already
        bisect.insort(group.events, (ts, row.device_id))
        self._prune(group, newest)
        self.changed.add(key)
        enough = len(group.events) >= self.count.at_least
        if group.firing and not enough:
            self._resolve(key, group, ts, out)
        elif enough:
            group.values, group.device_id = row.values, row.device_id
            repeat = group.firing
            if not repeat:
                group.firing, group.since_ns = True, ts
            message = f"{self._summary(group)}; {describe(self.when, row.values)}"
            out.append(self._edge(row.device_id, "firing", ts, row.values, key, message, repeat))

    def _prune(self, group: Group, now_ns: int) -> None:
        cut = bisect.bisect_left(group.events, (now_ns - self.within_ns, ""))
        if cut:
            del group.events[:cut]

    def _summary(self, group: Group) -> str:
        within = fmt_duration(self.count.within)
        return f"{len(group.events)} times within {within} (at least {self.count.at_least})"

    def _resolve(self, key: str, group: Group, ts: int, out: list[Transition]) -> None:
        group.firing, group.since_ns = False, None
        message = f"fewer than {self.count.at_least} within {fmt_duration(self.count.within)}"
        out.append(self._edge(group.device_id, "resolved", ts, group.values, key, message, False))
        self.changed.add(key)

    def _edge(
        self,
        device_id: str,
        state: State,
        ts: int,
        values: Mapping[str, object],
        key: str,
        message: str,
        repeat: bool,
    ) -> Transition:
        return self.transition(device_id, state, ts, values, message, key, repeat)

    def tick(self, now_ns: int) -> list[Transition]:
        """Expire old occurrences; resolve groups that dropped below the threshold."""
        out: list[Transition] = []
        for key in sorted(self.groups):
            group = self.groups[key]
            before = len(group.events)
            self._prune(group, now_ns)
            if len(group.events) != before:
                self.changed.add(key)
            if group.firing and len(group.events) < self.count.at_least:
                self._resolve(key, group, now_ns, out)
            if not group.events and not group.firing:
                del self.groups[key]
        return out

    def resolve_all(self, ts_ns: int) -> list[Transition]:
        """Resolve every firing group and forget all windows."""
        out: list[Transition] = []
        for key, group in sorted(self.groups.items()):
            if group.firing:
                message = "rule removed or disabled"
                out.append(
                    self._edge(
                        group.device_id, "resolved", ts_ns, group.values, key, message, False
                    )
                )
            self.changed.add(key)
        self.groups.clear()
        return out

    def dirty(self) -> dict[str, StateDoc | None]:
        """Groups changed since the last call (None: the group is gone)."""
        changed, self.changed = self.changed, set()
        return {key: self._doc(key) for key in sorted(changed)}

    def _doc(self, key: str) -> StateDoc | None:
        group = self.groups.get(key)
        if group is None:
            return None
        return {
            "firing": group.firing,
            "since_ns": group.since_ns,
            "events": [[ts, device_id] for ts, device_id in group.events],
            "values": scalars(group.values),
            "device_id": group.device_id,
        }

    def load(self, key: str, state: Mapping[str, object]) -> None:
        """Restore one group."""
        events = state.get("events")
        values = state.get("values", {})
        if not isinstance(events, list) or not isinstance(values, dict):
            raise ValueError(f"bad count state {state!r}")
        firing = state.get("firing") is True
        since = int_of(state, "since_ns") if firing else None
        loaded = sorted((int(ts), str(device_id)) for ts, device_id in events)
        self.groups[key] = Group(loaded, firing, since, values, str(state.get("device_id", "")))
        self.changed.discard(key)

    def adopt(self, old: RuleRuntime) -> None:
        """Keep the windows of the previous version of this rule."""
        assert isinstance(old, CountRuntime)
        self.groups, self.changed = old.groups, old.changed

    def can_adopt(self, old: RuleRuntime) -> bool:
        """Windows only carry over when the grouping is the same."""
        return (
            super().can_adopt(old)
            and isinstance(old, CountRuntime)
            and old.count.group_by == self.count.group_by
        )
