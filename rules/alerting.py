"""Runtime of ``when`` rules: trigger, ``for`` hold time and clear condition, per device.

The trigger and clear masks are computed over the whole batch with numpy; only rows whose
trigger is true, or whose device already has an alert (pending, or firing with the clear
condition true), reach the per-row Python state machine:

    (none) --trigger--> pending --held for `for`--> firing --clear--> resolved
    (none) --trigger, for = 0--> firing;  pending --stops holding--> resolved (dropped)
    firing --trigger again--> firing (repeat=True)

While firing, a reading that meets neither trigger nor clear (the hysteresis band) changes
nothing. "Stops holding" (and, without a clear condition, "clears") means a reading that
carries a trigger field but does not trigger; a reading without any trigger field (a
battery report, say) says nothing about the condition and changes nothing.

Alert state is sparse (a dict of positions) with an int8 status array, so a batch can tell
in one gather which devices have state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rules.checks import walk
from rules.conditions import BoolArray, describe, evaluate
from rules.model import Rule
from rules.records import State, Transition
from rules.runtime import NS, RuleRuntime, StateDoc, fmt_duration, int_of, scalars
from rules.table import Batch, KindTable, grown

PENDING, FIRING = 1, 2
STATUS_NAMES = {PENDING: "pending", FIRING: "firing"}
STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}


@dataclass(slots=True)
class Alert:
    """One (rule, device) alert that is pending or firing."""

    status: int
    since_ns: int
    fired_ns: int | None
    values: Mapping[str, object]


class ConditionRuntime(RuleRuntime):
    """State machine of a rule with a ``when`` trigger."""

    def __init__(self, rule: Rule, table: KindTable) -> None:
        super().__init__(rule, table)
        self.for_ns = round(rule.for_ * NS)
        self.trigger_fields = tuple(
            dict.fromkeys(leaf.field for _, leaf in walk(rule.when, ""))
            if rule.when is not None
            else ()
        )
        self.status = np.zeros(table.capacity, dtype=np.int8)
        self.alerts: dict[int, Alert] = {}
        self.pending: set[int] = set()
        self.changed: set[int] = set()

    def fit(self) -> None:
        """Grow per-device arrays to the table's capacity."""
        self.status = grown(self.status, self.table.capacity, 0)

    def trigger(self, batch: Batch) -> BoolArray:
        """Rows whose reading meets the trigger (stale rows never do)."""
        assert self.rule.when is not None
        return evaluate(self.rule.when, batch.columns) & batch.fresh

    def stop_mask(self, batch: Batch, trigger: BoolArray) -> BoolArray:
        """Rows that carry a trigger field yet do not trigger: the condition stopped holding.

        A reading without any of the trigger's fields (a battery report, say) says nothing
        about the condition, so it neither drops a pending alert nor clears by default.
        """
        columns = batch.columns
        informative = np.zeros(len(batch), dtype=np.bool_)
        for key in self.trigger_fields:
            informative |= columns.present(key)
        return informative & ~trigger & batch.fresh

    def clear_mask(self, batch: Batch, stop: BoolArray) -> BoolArray:
        """Rows whose reading meets the clear condition (default: the stop mask)."""
        if self.rule.clear is not None:
            return evaluate(self.rule.clear, batch.columns) & batch.fresh
        return stop

    def describe_trigger(self, batch: Batch, row: int) -> str:
        """Why a row triggers, for the message."""
        assert self.rule.when is not None
        return describe(self.rule.when, batch.rows[row].values)

    def describe_clear(self, values: Mapping[str, object]) -> str:
        """Why a reading clears, for the message."""
        tree = self.rule.clear if self.rule.clear is not None else self.rule.when
        assert tree is not None
        prefix = "cleared" if self.rule.clear is not None else "no longer"
        return f"{prefix}: {describe(tree, values)}"

    def evaluate(self, batch: Batch) -> list[Transition]:
        """Vectorised masks, then the state machine for the few rows that need it."""
        self.fit()
        trigger = self.trigger(batch)
        status = self.status[batch.idx]
        if not (trigger.any() or status.any()):
            return []
        stop = self.stop_mask(batch, trigger)
        clear = self.clear_mask(batch, stop)
        pending, firing = status == PENDING, status == FIRING
        rows = batch.fresh & (trigger | (pending & stop) | (firing & clear))
        if rows.any() and batch.multi.any():
            # A device's earlier row may change its state, so its later rows count too.
            rows |= batch.fresh & batch.multi & np.isin(batch.idx, batch.idx[rows])
        out: list[Transition] = []
        for row in np.flatnonzero(rows).tolist():
            flags = (bool(trigger[row]), bool(stop[row]), bool(clear[row]))
            self._step(batch, row, flags, out)
        return out

    def _step(
        self, batch: Batch, row: int, flags: tuple[bool, bool, bool], out: list[Transition]
    ) -> None:
        trigger, stop, clear = flags
        position = int(batch.idx[row])
        ts = int(batch.ts[row])
        values = batch.rows[row].values
        alert = self.alerts.get(position)
        if trigger:
            if alert is None:
                alert = Alert(PENDING, ts, None, values)
                self._set(position, alert)
                if self.for_ns > 0:
                    hold = f" (pending, must hold {fmt_duration(self.rule.for_)})"
                    message = self.describe_trigger(batch, row) + hold
                    out.append(self._edge(position, "pending", ts, values, message))
                    return
            alert.values = values
            if alert.status == FIRING:
                message = self.describe_trigger(batch, row)
                out.append(self._edge(position, "firing", ts, values, message, repeat=True))
            elif ts - alert.since_ns >= self.for_ns:
                self._fire(position, alert, ts, self.describe_trigger(batch, row), out)
        elif alert is not None and ((alert.status == PENDING and stop) or clear):
            if alert.status == PENDING:
                message = f"did not hold for {fmt_duration(self.rule.for_)}"
            else:
                message = self.describe_clear(values)
            self._set(position, None)
            out.append(self._edge(position, "resolved", ts, values, message))

    def _fire(
        self, position: int, alert: Alert, ts: int, message: str, out: list[Transition]
    ) -> None:
        alert.status, alert.fired_ns = FIRING, ts
        self._set(position, alert)
        out.append(self._edge(position, "firing", ts, alert.values, message))

    def _set(self, position: int, alert: Alert | None) -> None:
        self.changed.add(position)
        self.pending.discard(position)
        if alert is None:
            self.alerts.pop(position, None)
            self.status[position] = 0
            return
        self.alerts[position] = alert
        self.status[position] = alert.status
        if alert.status == PENDING:
            self.pending.add(position)

    def _edge(
        self,
        position: int,
        state: State,
        ts: int,
        values: Mapping[str, object],
        message: str,
        repeat: bool = False,
    ) -> Transition:
        device_id = self.table.ids[position]
        return self.transition(device_id, state, ts, values, message, repeat=repeat)

    def tick(self, now_ns: int) -> list[Transition]:
        """Pending alerts whose hold time has passed fire now."""
        out: list[Transition] = []
        for position in sorted(self.pending):
            alert = self.alerts[position]
            if now_ns - alert.since_ns >= self.for_ns:
                held = f" (held for {fmt_duration(self.rule.for_)})"
                assert self.rule.when is not None
                message = describe(self.rule.when, alert.values) + held
                self._fire(position, alert, now_ns, message, out)
        return out

    def resolve_all(self, ts_ns: int) -> list[Transition]:
        """Resolve every alert of this rule (removed or disabled)."""
        out = []
        for position, alert in sorted(self.alerts.items()):
            message = "rule removed or disabled"
            out.append(self._edge(position, "resolved", ts_ns, alert.values, message))
            self._set(position, None)
        return out

    def dirty(self) -> dict[str, StateDoc | None]:
        """Alerts created, changed or deleted since the last call."""
        changed, self.changed = self.changed, set()
        ids = self.table.ids
        return {ids[position]: self.state_doc(position) for position in sorted(changed)}

    def state_doc(self, position: int) -> StateDoc | None:
        """JSON form of one device's state, None when it has none."""
        alert = self.alerts.get(position)
        if alert is None:
            return None
        return {
            "status": STATUS_NAMES[alert.status],
            "since_ns": alert.since_ns,
            "fired_ns": alert.fired_ns,
            "values": scalars(alert.values),
        }

    def load(self, key: str, state: Mapping[str, object]) -> None:
        """Restore one device's alert."""
        status = STATUS_CODES.get(str(state.get("status")))
        values = state.get("values", {})
        fired = state.get("fired_ns")
        if status is None or not isinstance(values, dict):
            raise ValueError(f"bad alert state {state!r}")
        position = self.table.ensure(key)
        self.fit()
        fired_ns = fired if isinstance(fired, int) and not isinstance(fired, bool) else None
        self._set(position, Alert(status, int_of(state, "since_ns"), fired_ns, values))
        self.changed.discard(position)

    def adopt(self, old: RuleRuntime) -> None:
        """Keep the alerts of the previous version of this rule."""
        assert isinstance(old, ConditionRuntime)
        self.status, self.alerts = old.status, old.alerts
        self.pending, self.changed = old.pending, old.changed
        self.fit()
