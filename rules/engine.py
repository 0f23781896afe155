"""The rules engine: pure, batched, with state that can be saved and restored.

No I/O and no clock: readings come in through ``evaluate``, time through ``tick``, and
``Transition`` records go out for the alert layer. Per batch, observations are grouped by
kind; each kind's table prepares positions, time order and freshness once, and each rule
evaluates its conditions over numpy columns (see ``rules.conditions``), so readings that
neither trigger nor touch an existing alert cost a few array operations and nothing else.

Ordering: within a batch, readings are applied in time order. A reading not newer than the
last one applied for its device (late or redelivered) still counts as activity for
absence but changes no alert state. A reading's time is its device ``ts`` but never later
than the batch's receive time, so a device clock running ahead cannot make the device's
later readings "not newer" (which would mute its alarms). Transitions are returned sorted
by time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter

from devices import KINDS, load_kind
from rules.absence import AbsenceRuntime
from rules.alerting import ConditionRuntime
from rules.conditions import Vocabulary
from rules.counting import CountRuntime
from rules.model import Rule, RuleSet
from rules.rate import DEFAULT_POINTS, RateRuntime
from rules.records import Observation, Transition
from rules.runtime import NS, RuleRuntime, StateDoc
from rules.table import ACTIVITY, UNSET, KindTable

__all__ = ["ACTIVITY", "Engine", "Observation", "Transition"]

log = logging.getLogger(__name__)
StateKey = tuple[str, str]
_BY_TIME = attrgetter("ts_ns")


class Engine:
    """Evaluates a rule set over batches of observations and keeps per-device alert state.

    ``heartbeat_s`` maps a kind to its heartbeat interval; absence rules written as
    ``"<n>x heartbeat"`` use it instead of the kind's default. ``rate_points`` is the ring
    size of rate windows. ``activity_resolution_s`` bounds how often a device's activity
    time is reported by ``dirty_states`` (a restart may lose at most that much of it).
    """

    def __init__(
        self,
        rules: RuleSet,
        heartbeat_s: Mapping[str, float],
        *,
        rate_points: int = DEFAULT_POINTS,
        activity_resolution_s: float = 60.0,
    ) -> None:
        self._heartbeat_s = dict(heartbeat_s)
        self._rate_points = rate_points
        self._resolution_ns = round(activity_resolution_s * NS)
        self._tables: dict[str, KindTable] = {}
        self._vocab: dict[str, Vocabulary] = {}
        self._by_kind: dict[str, list[RuleRuntime]] = {}
        self._by_id: dict[str, RuleRuntime] = {}
        self._outbox: list[Transition] = []
        self._carried: dict[StateKey, StateDoc | None] = {}
        self._clock_ns = 0
        self.rules = rules
        self._install(rules)

    def evaluate(
        self, observations: Sequence[Observation], received_ns: int | None = None
    ) -> list[Transition]:
        """Apply a batch of readings; return the transitions they cause, in time order.

        ``received_ns``, when given, is used as the activity time for absence instead of
        each reading's own time, and bounds the time readings are ordered and timed by
        (``rules.table.ordering_times``): both protect against devices with a wrong clock,
        so that no reading can make a device's later ones look stale.
        """
        out, self._outbox = self._outbox, []
        groups: dict[str, list[Observation]] = {}
        for observation in observations:
            rows = groups.get(observation.kind)
            if rows is None:
                groups[observation.kind] = [observation]
            else:
                rows.append(observation)
        for kind, rows in groups.items():
            batch = self._table(kind).prepare(rows, self._vocabulary(kind), received_ns)
            self._clock_ns = max(self._clock_ns, int(batch.ts[-1]))
            for runtime in self._by_kind.get(kind, ()):
                out.extend(runtime.evaluate(batch))
        if len(out) > 1:
            out.sort(key=_BY_TIME)
        return out

    def tick(self, now_ns: int) -> list[Transition]:
        """Let time pass: absence, ``for`` hold times and count windows expiring."""
        out, self._outbox = self._outbox, []
        self._clock_ns = max(self._clock_ns, now_ns)
        for runtimes in self._by_kind.values():
            for runtime in runtimes:
                out.extend(runtime.tick(now_ns))
        if len(out) > 1:
            out.sort(key=_BY_TIME)
        return out

    def seen(self, device_id: str, kind: str, ts_ns: int) -> None:
        """Activity without a reading (status online, registration).

        A device registered but never heard from goes offline once the absence duration has
        passed since this time. Alerts it clears come out of the next ``evaluate``/``tick``.
        """
        position = self._table(kind).touch(device_id, ts_ns)
        self._clock_ns = max(self._clock_ns, ts_ns)
        for runtime in self._by_kind.get(kind, ()):
            self._outbox.extend(runtime.seen(position, ts_ns))

    def register(self, devices: Iterable[tuple[str, str]], ts_ns: int) -> None:
        """``seen`` for many (device id, kind) at once: registration of a million devices
        at start-up, vectorised per kind."""
        by_kind: dict[str, list[str]] = {}
        for device_id, kind in devices:
            by_kind.setdefault(kind, []).append(device_id)
        for kind, ids in by_kind.items():
            positions = self._table(kind).touch_many(ids, ts_ns)
            self._clock_ns = max(self._clock_ns, ts_ns)
            for runtime in self._by_kind.get(kind, ()):
                self._outbox.extend(runtime.seen_many(positions, ts_ns))

    def reload(self, rules: RuleSet) -> list[Transition]:
        """Switch to a new rule set.

        Rules that still exist (same id, same kind and trigger type) keep their state and
        see the new thresholds from the next batch on; alerts of rules that were removed,
        disabled or changed beyond that are resolved at the engine's latest known time.
        """
        old = self._by_id
        self.rules = rules
        self._install(rules)
        out: list[Transition] = []
        for rule_id, runtime in old.items():
            new = self._by_id.get(rule_id)
            if new is not None and new.can_adopt(runtime):
                new.adopt(runtime)
                continue
            out.extend(runtime.resolve_all(self._clock_ns))
            for key, doc in runtime.dirty().items():
                self._carried[(rule_id, key)] = doc
        out.sort(key=_BY_TIME)
        return out

    def latest_reading(self, device_id: str, kind: str) -> int | None:
        """The time of the newest reading applied for a device (restored after a restart;
        readings from ahead of their receive time do not count), None if there is none."""
        table = self._tables.get(kind)
        position = None if table is None else table.index.get(device_id)
        if table is None or position is None:
            return None
        latest = int(table.last_reading[position])
        return None if latest == UNSET else latest

    def dirty_states(self) -> dict[StateKey, StateDoc | None]:
        """State per (rule id, device id or group key) changed since the last call.

        ``None`` means the state was deleted. Device activity is reported under the key
        ``("@activity", device_id)``. Every value is JSON-serialisable.
        """
        out, self._carried = self._carried, {}
        for table in self._tables.values():
            for device_id, activity in table.dirty_activity(self._resolution_ns).items():
                out[(ACTIVITY, device_id)] = activity
        for rule_id, runtime in self._by_id.items():
            for key, doc in runtime.dirty().items():
                out[(rule_id, key)] = doc
        return out

    def mark_saved(self) -> None:
        """Forget what changed so far, as ``dirty_states`` does, without building the
        states (after registering a million devices that would be ~300 MiB of dicts)."""
        self._carried = {}
        for table in self._tables.values():
            table.mark_saved(self._resolution_ns)
        for runtime in self._by_id.values():
            runtime.dirty()

    def load_states(self, states: Iterable[tuple[str, str, Mapping[str, object]]]) -> None:
        """Restore states saved from ``dirty_states`` (after a restart).

        States of rules that no longer exist are skipped; a malformed state is logged and
        skipped, never fatal.
        """
        for rule_id, key, state in states:
            try:
                self._load_one(rule_id, key, state)
            except (KeyError, TypeError, ValueError) as err:
                log.warning("ignoring saved rule state %s / %s: %s", rule_id, key, err)

    def _load_one(self, rule_id: str, key: str, state: Mapping[str, object]) -> None:
        if rule_id == ACTIVITY:
            self._table(str(state["kind"])).load_activity(key, state)
            seen = state.get("last_seen_ns")
            if isinstance(seen, int):
                self._clock_ns = max(self._clock_ns, seen)
            return
        runtime = self._by_id.get(rule_id)
        if runtime is None:
            log.debug("saved state of unknown or disabled rule %s skipped", rule_id)
            return
        runtime.load(key, state)

    def _install(self, rules: RuleSet) -> None:
        self._vocab = {}
        self._by_kind = {}
        self._by_id = {}
        for kind in rules.kinds:
            table = self._table(kind)
            for rule in rules.for_kind(kind):
                runtime = self._runtime(rule, table)
                self._by_kind.setdefault(kind, []).append(runtime)
                self._by_id[rule.id] = runtime

    def _runtime(self, rule: Rule, table: KindTable) -> RuleRuntime:
        if rule.absent is not None:
            return AbsenceRuntime(rule, table, self._heartbeat_s)
        if rule.rate is not None:
            return RateRuntime(rule, table, self._rate_points)
        if rule.count is not None:
            return CountRuntime(rule, table)
        return ConditionRuntime(rule, table)

    def _table(self, kind: str) -> KindTable:
        table = self._tables.get(kind)
        if table is None:
            table = self._tables[kind] = KindTable(kind)
        return table

    def _vocabulary(self, kind: str) -> Vocabulary:
        vocab = self._vocab.get(kind)
        if vocab is None:
            fields = load_kind(kind).fields if kind in KINDS else ()
            specs = {spec.key: spec for spec in fields}
            vocab = self._vocab[kind] = Vocabulary(specs, self.rules.for_kind(kind))
        return vocab
