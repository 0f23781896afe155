"""Rules in the running gateway: readings → engine → alerts, work orders, notifications.

The engine is pure and runs on the event loop next to the pipeline; everything with I/O
(alert and work-order rows, saved rule state, ``alerts`` points) happens in ``persist`` on
the gateway's persist thread, before the batch that caused it is acknowledged. So an alert
is never lost across a crash: either its readings are redelivered, or it is stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Dialect, Engine, Text, delete, select, type_coerce

from devices import KINDS, load_kind
from gateway.alerting.alerts import AlertService
from gateway.alerting.models import RuleStateRow
from gateway.core.clock import Clock
from gateway.core.db import json_dumps, json_loads, utcnow
from gateway.core.lineproto import escape_string_field, series_prefix
from gateway.ingest.pipeline import Accepted, device_tags
from gateway.registry.store import DeviceInfo
from gateway.workorders.lifecycle import WorkOrderService
from gateway.workorders.models import RuleInfo
from gateway.workorders.routing import Router
from rules import Engine as RuleEngine
from rules import Observation, RuleError, RuleSet, Transition, load_rules
from rules.table import ACTIVITY

log = logging.getLogger(__name__)

Event = dict[str, Any]


@dataclass(slots=True)
class Outcome:
    """What one evaluation produced: transitions and the engine state to save with them."""

    transitions: list[Transition] = field(default_factory=list)
    dirty: dict[tuple[str, str], dict[str, object] | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.transitions or self.dirty)


def _upsert_sql(dialect: Dialect) -> str:
    """Insert-or-update of ``rule_state`` rows in the driver's own parameter style (SQLite's
    ``?``, psycopg's ``%s``); SQLite and PostgreSQL spell the rest alike, PostgreSQL wants
    the JSON text cast explicitly."""
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    state = f"CAST({mark} AS JSON)" if dialect.name == "postgresql" else mark
    return (
        "INSERT INTO rule_state (rule_id, key, state, updated_at) "  # noqa: S608 - placeholders only
        f"VALUES ({mark}, {mark}, {state}, {mark}) ON CONFLICT (rule_id, key) DO UPDATE "
        "SET state = excluded.state, updated_at = excluded.updated_at"
    )


def rule_infos(ruleset: RuleSet) -> dict[str, RuleInfo]:
    """What the alert layer needs of each rule."""
    infos = {}
    for rule in ruleset:
        order = rule.work_order
        infos[rule.id] = RuleInfo(
            rule.id,
            rule.title,
            rule.severity,
            order.category if order else None,
            order.sla.ack if order and order.sla else None,
            order.sla.resolve if order and order.sla else None,
        )
    return infos


class RuleStage:
    """Owns the rules engine, the alert and work-order services, and rule reloading."""

    def __init__(
        self,
        db: Engine,
        clock: Clock,
        site_dir: Path | None,
        devices: Mapping[str, DeviceInfo],
        publish: Callable[[Event], None],
    ) -> None:
        self.db = db
        self.site_dir = site_dir
        self._publish = publish
        # What ``_save_states`` needs of the dialect, worked out once: the upsert in the
        # driver's parameter style and the conversion of its timestamp.
        self._upsert = _upsert_sql(db.dialect)
        stamp_type = RuleStateRow.__table__.c.updated_at.type.dialect_impl(db.dialect)
        self._stamp_to_db = stamp_type.bind_processor(db.dialect)
        self._site_stamp = self._stamp()
        self.ruleset = load_rules(site_dir)
        heartbeat = {kind: float(load_kind(kind).heartbeat_s) for kind in KINDS}
        self.engine = RuleEngine(self.ruleset, heartbeat)
        # Every alert and work-order event (from readings, SLA checks or API actions) is
        # emitted once, after its transaction committed, to notifications and the stream.
        self.orders = WorkOrderService(db, clock, Router(), on_event=self._emit)
        self.alerts = AlertService(
            db, clock, rule_infos(self.ruleset), on_event=self._emit, orders=self.orders
        )
        # Tags per place (model and hierarchy path), shared by its devices: one dict per
        # device would cost ~300 MiB once a million devices have spoken.
        self._places: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, str]] = {}
        self._devices = devices
        # Registration counts as activity: a device never heard from goes offline.
        self.engine.register(((i.device_id, i.kind) for i in devices.values()), time.time_ns())
        # Devices the engine remembers but the registry no longer has active (decommissioned
        # while we were down): they must not go "offline".
        self._retired: set[str] = set()
        self.engine.load_states(self._note_retired(self._saved_states()))
        self.engine.mark_saved()  # what was just loaded is saved already
        self.transitions_total = 0
        self.last_eval_s = 0.0

    # -- on the event loop -------------------------------------------------------------
    def observe(self, accepted: Sequence[Accepted], received_ns: int) -> Outcome:
        """Evaluate a batch's valid readings (pure CPU work)."""
        started = time.perf_counter()
        observations = []
        place = self.place
        for item in accepted:
            info = item.info
            if item.reading is None:  # status message: activity only
                self.engine.seen(info.device_id, info.kind, item.ts_ns)
                continue
            # The reading's own field dict, not a copy: the engine reads None as absent.
            observations.append(
                Observation(
                    info.device_id, info.kind, item.ts_ns, item.reading.__dict__, place(info)
                )
            )
        transitions = self.engine.evaluate(observations, received_ns)
        self.last_eval_s = time.perf_counter() - started
        return self._outcome(transitions)

    def tick(self, now_ns: int) -> Outcome:
        """Absence, ``for`` timers and window expiry."""
        return self._outcome(self.engine.tick(now_ns))

    def reload_if_changed(self) -> Outcome | None:
        """Reload site rules when a file changed; keep the old rules when the new ones are bad."""
        stamp = self._stamp()
        if stamp == self._site_stamp:
            return None
        self._site_stamp = stamp
        return self.reload()

    def reload(self) -> Outcome | None:
        """Load the rules again and switch the engine over (state of kept rules survives)."""
        try:
            ruleset = load_rules(self.site_dir)
        except RuleError as err:
            log.error("rules not reloaded, keeping the running ones: %s", err)
            return None
        same = ruleset.fingerprint == self.ruleset.fingerprint
        self.ruleset = ruleset  # sources may differ even when the rules do not
        if same:
            return None
        transitions = self.engine.reload(ruleset)
        self.alerts.rules = rule_infos(ruleset)
        log.info("rules reloaded: %d rules (%s)", len(list(ruleset)), ruleset.fingerprint[:12])
        return self._outcome(transitions)

    def place(self, info: DeviceInfo) -> Mapping[str, str]:
        """The tags a device shares with its place (model and hierarchy path; read-only)."""
        key = (info.model, info.path)
        tags = self._places.get(key)
        if tags is None:
            if len(self._places) > 100_000:
                self._places.clear()
            tags = self._places[key] = {"model": info.model, **dict(info.path)}
        return tags

    def device_changed(self, device_id: str, info: DeviceInfo | None) -> None:
        """A device was registered, changed, moved (``info``) or decommissioned (None)."""
        if info is None:
            self._retired.add(device_id)
            return
        self._retired.discard(device_id)
        self.engine.seen(device_id, info.kind, time.time_ns())

    def _tags_of(self, device_id: str) -> dict[str, str]:
        # the registry snapshot the gateway keeps current (device_changed updates it first)
        info = self._devices.get(device_id)
        return device_tags(info) if info is not None else {"device_id": device_id}

    def _outcome(self, transitions: list[Transition]) -> Outcome:
        if self._retired:
            transitions = [
                t for t in transitions if t.state == "resolved" or t.device_id not in self._retired
            ]
        self.transitions_total += len(transitions)
        return Outcome(transitions, self.engine.dirty_states())

    def _stamp(self) -> tuple[tuple[str, float], ...]:
        if self.site_dir is None or not self.site_dir.is_dir():
            return ()
        return tuple(sorted((p.name, p.stat().st_mtime) for p in self.site_dir.glob("*.yaml")))

    # -- on the persist thread ---------------------------------------------------------
    def persist(self, outcome: Outcome) -> list[str]:
        """Store alerts, work orders and engine state; return the ``alerts`` lines.

        Their events go out as each transaction commits (``_emit``)."""
        if outcome.transitions:
            self.alerts.apply(outcome.transitions)
        if outcome.dirty:
            self._save_states(outcome.dirty)
        return [self.alert_line(t) for t in outcome.transitions if not t.repeat]

    def check_sla(self) -> None:
        """Escalate work orders whose deadlines passed (escalations are emitted on commit)."""
        self.orders.check_sla()

    def alert_line(self, transition: Transition) -> str:
        """An ``alerts`` point (Grafana annotations and alert panels)."""
        tags = dict(self._tags_of(transition.device_id))
        tags.update(
            rule_id=transition.rule_id,
            kind=transition.kind,
            severity=transition.severity,
            state=transition.state,
        )
        title = self.alerts.rules.get(transition.rule_id)
        fields = [
            f"title={escape_string_field(title.title if title else transition.rule_id)}",
            f"message={escape_string_field(transition.message)}",
            f"firing={'true' if transition.state == 'firing' else 'false'}",
        ]
        return f"{series_prefix('alerts', tags)} {','.join(fields)} {transition.ts_ns}"

    def _saved_states(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Saved states streamed as plain rows (a million at start-up: no ORM objects; the
        JSON parsed by orjson)."""
        table = RuleStateRow.__table__
        query = select(table.c.rule_id, table.c.key, type_coerce(table.c.state, Text))
        with self.db.connect() as conn:
            for rule_id, key, state in conn.execute(query):
                # SQLite hands over the JSON text; PostgreSQL's driver may have decoded it
                yield rule_id, key, json_loads(state) if isinstance(state, str) else dict(state)

    def _note_retired(
        self, rows: Iterable[tuple[str, str, dict[str, Any]]]
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Pass rows through, noting devices with saved activity that are not registered."""
        devices = self._devices
        for row in rows:
            if row[0] == ACTIVITY and row[1] not in devices:
                self._retired.add(row[1])
            yield row

    def _save_states(self, dirty: Mapping[tuple[str, str], dict[str, object] | None]) -> None:
        """Upsert changed states and delete dropped ones, in bulk.

        Runs for every batch that changed a state (rate windows change with every reading),
        so the rows go to the driver ready-made: JSON text and the batch's one timestamp
        converted once, executed by the driver itself (SQLAlchemy's per-row parameter
        processing cost more than the database work).
        """
        to_db = self._stamp_to_db
        stamp = to_db(utcnow()) if to_db is not None else utcnow()
        upserts = [
            (rule_id, key, json_dumps(state), stamp)
            for (rule_id, key), state in dirty.items()
            if state is not None
        ]
        deletes = [(rule_id, key) for (rule_id, key), state in dirty.items() if state is None]
        with self.db.begin() as conn:
            if upserts:
                conn.exec_driver_sql(self._upsert, upserts)
            for rule_id, key in deletes:
                gone = delete(RuleStateRow).where(
                    RuleStateRow.rule_id == rule_id, RuleStateRow.key == key
                )
                conn.execute(gone)

    def _emit(self, event: Event) -> None:
        """Hand an event to notifications and the live stream (never blocks)."""
        self._publish(summarise(event))


_SUMMARY_KEYS = ("severity", "title", "message", "device_id", "rule_id", "node", "node_path")


def summarise(event: Event) -> Event:
    """Lift the subject's headline fields (severity, title, device, …) to the top level, where
    notification filters and templates look for them."""
    subject = event.get("alert") or event.get("order") or {}
    lifted = {key: subject[key] for key in _SUMMARY_KEYS if key in subject and key not in event}
    if "node_path" in lifted and "path" not in event:
        lifted["path"] = lifted["node_path"]
    return {**event, **lifted} if lifted else event
