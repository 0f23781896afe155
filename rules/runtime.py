"""What every rule runtime shares: its rule, its kind's table, and building transitions.

A runtime holds the state of one enabled rule for all devices (or groups) of its kind.
The engine calls ``evaluate`` per batch, ``tick`` per clock tick, and moves state from the
previous runtime of the same rule on reload (``adopt``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np

from rules.conditions import IntArray
from rules.model import Rule
from rules.records import State, Transition
from rules.table import Batch, KindTable

NS = 1_000_000_000
StateDoc = dict[str, object]


class RuleRuntime:
    """Base class: a rule with no state. Subclasses override what they need."""

    def __init__(self, rule: Rule, table: KindTable) -> None:
        self.rule = rule
        self.table = table

    def evaluate(self, batch: Batch) -> list[Transition]:
        """Transitions caused by one batch of this rule's kind."""
        return []

    def tick(self, now_ns: int) -> list[Transition]:
        """Transitions due to time passing (timers, windows, absence)."""
        return []

    def seen(self, position: int, ts_ns: int) -> list[Transition]:
        """Transitions caused by activity without a reading."""
        return []

    def seen_many(self, positions: IntArray, ts_ns: int) -> list[Transition]:
        """``seen`` for many devices at once."""
        if type(self).seen is RuleRuntime.seen:  # no state that activity changes
            return []
        return [t for position in positions.tolist() for t in self.seen(position, ts_ns)]

    def resolve_all(self, ts_ns: int) -> list[Transition]:
        """Resolve every alert (the rule was removed or disabled) and forget all state."""
        return []

    def dirty(self) -> dict[str, StateDoc | None]:
        """State per key changed since the last call (None: deleted)."""
        return {}

    def load(self, key: str, state: Mapping[str, object]) -> None:
        """Restore the state of one key (from ``dirty``)."""

    def can_adopt(self, old: RuleRuntime) -> bool:
        """Whether the state of ``old`` (same rule id, previous rule set) fits this rule."""
        return type(old) is type(self) and old.table is self.table

    def adopt(self, old: RuleRuntime) -> None:
        """Take over the state of ``old`` (only called when ``can_adopt``)."""

    def transition(
        self,
        device_id: str,
        state: State,
        ts_ns: int,
        values: Mapping[str, object],
        message: str,
        group: str | None = None,
        repeat: bool = False,
    ) -> Transition:
        """A transition of this rule; the message is prefixed with the rule's title."""
        rule = self.rule
        return Transition(
            rule.id,
            device_id,
            rule.device_type,
            state,
            rule.severity,
            ts_ns,
            values,
            group,
            f"{rule.title}: {message}",
            repeat,
        )


def fmt_duration(seconds: float) -> str:
    """Seconds as the largest whole unit that fits: ``90s``, ``10m``, ``1h``, ``1.5h``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def fmt_time(ts_ns: int) -> str:
    """Epoch nanoseconds as UTC ISO 8601 to the second, e.g. ``2023-11-14T22:13:20Z``."""
    return datetime.fromtimestamp(ts_ns // NS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_times(ts_ns: IntArray) -> list[str]:
    """``fmt_time`` for a whole array at once."""
    stamps = np.datetime_as_string(ts_ns.astype("datetime64[ns]"), unit="s", timezone="UTC")
    return [str(stamp) for stamp in stamps.tolist()]


def scalars(values: Mapping[str, object]) -> dict[str, object]:
    """The JSON-safe scalar part of a reading (lists such as a trajectory are left out)."""
    return {
        key: value
        for key, value in values.items()
        if isinstance(value, str | int | bool)
        or (isinstance(value, float) and not math.isnan(value))
    }


def int_of(state: Mapping[str, object], key: str) -> int:
    """An int member of a stored state; ValueError when missing or not an int."""
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"state {key!r} must be an integer, got {value!r}")
    return value
