"""Alerts: the rules engine's transitions become stored alerts, and alerts drive work orders.

One alert per (rule, device), or per (rule, group) for count rules, is active at a time:
pending → firing → resolved, plus acknowledged (who, when). Repeated triggers update the
active alert (last time, reading, occurrences) instead of creating new ones; a redelivered
transition (same time and state) changes nothing, so at-least-once delivery is safe.

Concurrency (ThingsBoard #15583): the active alert's ``active_key`` is UNIQUE in the
database, so two writers racing to create the same alert end with one row; the loser's
transaction fails with ``IntegrityError``, is rolled back and runs again, and then finds the
winner's alert. Each ``apply`` call is one transaction; events are emitted after the commit.

For rules with a work order, a firing alert opens a routed order (or adds an occurrence to
the one still open for the same device and rule); a resolved alert marks the order's sensor
as normal without closing it; a new fault marks it faulty again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import Engine, Select, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from gateway.alerting.models import Alert, alert_dict
from gateway.core.backoff import Backoff
from gateway.core.clock import Clock, from_ns, iso
from gateway.core.db import json_values
from gateway.workorders.lifecycle import Event, Events, EventSink, WorkOrderService, emit_all
from gateway.workorders.models import RuleInfo, active_key
from gateway.workorders.routing import Router, path_string

__all__ = ["AlertError", "AlertService", "RuleInfo", "Transition", "TransitionLike"]

log = logging.getLogger(__name__)

#: Waits between attempts when SQLite says the database is locked (0.02, 0.04, … s).
LOCKED_BACKOFF = Backoff(first_s=0.02, max_s=1.0)
T = TypeVar("T")


class AlertError(ValueError):
    """An alert request was refused (unknown alert, …)."""


class TransitionLike(Protocol):
    """What the rules engine emits (its own class; only these attributes are read)."""

    @property
    def rule_id(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def ts_ns(self) -> int: ...
    @property
    def values(self) -> Mapping[str, object]: ...
    @property
    def group(self) -> str | None: ...
    @property
    def message(self) -> str: ...
    @property
    def repeat(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Transition:
    """A rule's state change for one device (same shape as the rules engine's)."""

    rule_id: str
    device_id: str
    kind: str
    state: Literal["pending", "firing", "resolved"]
    severity: str
    ts_ns: int
    values: Mapping[str, object] = field(default_factory=dict)
    group: str | None = None
    message: str = ""
    repeat: bool = False


def alerts_query(
    *,
    state: str | None = None,
    severity: str | None = None,
    node: str | None = None,
    kind: str | None = None,
    device_id: str | None = None,
    rule_id: str | None = None,
    limit: int = 100,
) -> Select[Any]:
    """Alerts newest first; ``node`` keeps those whose device lies at or under that node."""
    query = select(Alert).order_by(Alert.id.desc()).limit(limit)
    if node is not None:
        query = query.where(Alert.node_path.contains(f"/{node}/", autoescape=True))
    for column, wanted in (
        (Alert.state, state),
        (Alert.severity, severity),
        (Alert.kind, kind),
        (Alert.device_id, device_id),
        (Alert.rule_id, rule_id),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    return query


class AlertService:
    """Stores transitions as alerts and opens, updates and annotates their work orders."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        rules: Mapping[str, RuleInfo],
        on_event: EventSink | None = None,
        *,
        orders: WorkOrderService | None = None,
        attempts: int = 5,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.rules = rules
        self.on_event = on_event
        self.orders = orders or WorkOrderService(engine, clock, Router(), on_event)
        self.router = self.orders.router
        self.attempts = attempts

    # -- writing ----------------------------------------------------------------------
    def apply(self, transitions: Iterable[TransitionLike]) -> Events:
        """Store a batch of transitions in one transaction; returns (and emits) the events."""
        batch = self._coalesce(list(transitions))
        if not batch:
            return []

        def work(session: Session) -> Events:
            return [event for t, extra in batch for event in self._apply_one(session, t, extra)]

        events = self._retrying(work)
        emit_all(self.on_event, events)
        return events

    def acknowledge(self, alert_id: int, actor: str) -> Alert:
        """Record who acknowledged an alert and when; also acknowledges its open order."""

        def work(session: Session) -> tuple[Alert, Events]:
            alert = session.get(Alert, alert_id)
            if alert is None:
                raise AlertError(f"alert {alert_id} not found")
            if alert.acked_at is not None:
                return alert, []
            alert.acked_by, alert.acked_at = actor, self.clock.now()
            events = [self._event(session, "alert.acknowledged", alert, actor=actor)]
            order = self.orders.find_open(session, alert.active_key)
            if order is not None and order.acked_at is None:
                order.acked_at = alert.acked_at
                self.orders.audit(session, order, actor, "acknowledge", note="alert acknowledged")
                events.append(self.orders.event(session, "workorder.acknowledged", order))
            return alert, events

        alert, events = self._retrying(work)
        emit_all(self.on_event, events)
        return alert

    # -- reading ----------------------------------------------------------------------
    def get(self, alert_id: int) -> Alert:
        """One alert (raises AlertError when unknown)."""
        with Session(self.engine, expire_on_commit=False) as session:
            alert = session.get(Alert, alert_id)
        if alert is None:
            raise AlertError(f"alert {alert_id} not found")
        return alert

    def search(
        self,
        *,
        state: str | None = None,
        severity: str | None = None,
        node: str | None = None,
        kind: str | None = None,
        device_id: str | None = None,
        rule_id: str | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Alerts newest first, filtered; ``node`` is any node code above the device."""
        query = alerts_query(
            state=state,
            severity=severity,
            node=node,
            kind=kind,
            device_id=device_id,
            rule_id=rule_id,
            limit=limit,
        )
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    def _coalesce(self, batch: list[TransitionLike]) -> list[tuple[TransitionLike, int]]:
        """Fold runs of repeats of an alert that opens no work order into their last one.

        A sensor that keeps reporting a warning (a bin at 85 %) repeats on every reading;
        such repeats only count occurrences, so one row update per batch does. Repeats of
        alerts with a work order each append an occurrence to it and are kept.
        """
        out: list[tuple[TransitionLike, int]] = []
        last: dict[tuple[str, str, str | None], int] = {}
        for t in batch:
            key = (t.rule_id, t.device_id, t.group)
            rule = self.rules.get(t.rule_id)
            foldable = t.repeat and (rule is None or rule.category is None)
            at = last.get(key)
            if foldable and at is not None and out[at][0].repeat:
                out[at] = (t, out[at][1] + 1)
                continue
            last[key] = len(out)
            out.append((t, 0))
        return out

    # -- one transition -----------------------------------------------------------------
    def _apply_one(self, session: Session, t: TransitionLike, extra: int = 0) -> Events:
        key = active_key(t.rule_id, t.device_id, t.group)
        alert = session.scalar(select(Alert).where(Alert.active_key == key))
        rule = self._rule(t)
        at = from_ns(t.ts_ns)
        if alert is not None and alert.last_ts_ns == t.ts_ns and alert.state == t.state:
            log.debug("transition %s %s at %d seen before; ignored", key, t.state, t.ts_ns)
            return []
        if t.state == "resolved":
            return [] if alert is None else self._resolve(session, alert, rule, t, at)
        if alert is None:
            return self._create(session, key, rule, t, at)
        if t.state == "firing" and alert.state == "pending":
            alert.state, alert.fired_at = "firing", at
            self._touch(alert, t, at)
            return [
                self._event(session, "alert.firing", alert),
                *self._fault(session, alert, rule, at),
            ]
        if alert.state != t.state:
            log.debug("transition %s %s while the alert is %s; ignored", key, t.state, alert.state)
            return []
        alert.occurrences += 1 + extra  # extra: repeats folded into this one
        self._touch(alert, t, at)
        repeat = self._event(session, "alert.repeat", alert)
        return [repeat, *(self._fault(session, alert, rule, at) if t.state == "firing" else [])]

    def _create(
        self, session: Session, key: str, rule: RuleInfo, t: TransitionLike, at: datetime
    ) -> Events:
        node_id = self.router.device_node(session, t.device_id)
        alert = Alert(
            active_key=key,
            rule_id=t.rule_id,
            device_id=t.device_id,
            group_key=t.group,
            kind=t.kind,
            state=t.state,
            title=rule.title,
            node_id=node_id,
            node_path=path_string(self.router.path(session, node_id)),
            first_at=at,
            fired_at=at if t.state == "firing" else None,
            occurrences=1,
        )
        self._touch(alert, t, at)
        session.add(alert)
        session.flush()  # a concurrent writer holding the same key fails here
        events = [self._event(session, f"alert.{t.state}", alert)]
        return events + (self._fault(session, alert, rule, at) if t.state == "firing" else [])

    def _resolve(
        self, session: Session, alert: Alert, rule: RuleInfo, t: TransitionLike, at: datetime
    ) -> Events:
        key = alert.active_key
        alert.state, alert.resolved_at, alert.active_key = "resolved", at, None
        self._touch(alert, t, at)
        events = [self._event(session, "alert.resolved", alert)]
        order = self.orders.find_open(session, key) if rule.category else None
        if order is None or order.sensor_state != "fault":
            return events
        order.sensor_state, order.sensor_normal_since = "ok", at
        note = f"sensor reports normal since {iso(at)}"
        self.orders.audit(session, order, "sensor", "sensor_ok", note=note)
        return [*events, self.orders.event(session, "workorder.sensor_ok", order)]

    def _fault(self, session: Session, alert: Alert, rule: RuleInfo, at: datetime) -> Events:
        """The firing alert's work order: open it, or record one more occurrence on it."""
        if rule.category is None:
            return []
        orders = self.orders
        order = orders.find_open(session, alert.active_key)
        if order is None:
            return [orders.open_from_alert(session, alert, rule, at)]
        orders.add_occurrence(session, order, at, alert.last_values, alert.message)
        events = []
        if order.sensor_state == "ok":
            order.sensor_state, order.sensor_normal_since = "fault", None
            orders.audit(session, order, "sensor", "sensor_fault", note=alert.message)
            events.append(orders.event(session, "workorder.sensor_fault", order))
        if order.state == "resolved":  # fixed too early: the problem is back
            events.append(orders.step(session, order, "reopen", "sensor", "the fault is back"))
        occurrence = {"at": iso(at), "values": order.last_values, "message": alert.message}
        return [
            *events,
            orders.event(session, "workorder.occurrence", order, occurrence=occurrence),
        ]

    # -- helpers ----------------------------------------------------------------------
    def _rule(self, t: TransitionLike) -> RuleInfo:
        rule = self.rules.get(t.rule_id)
        if rule is None:
            log.debug("rule %s has no metadata; no work order for it", t.rule_id)
            return RuleInfo(t.rule_id, t.rule_id, t.severity)
        return rule

    @staticmethod
    def _touch(alert: Alert, t: TransitionLike, at: datetime) -> None:
        alert.last_at, alert.last_ts_ns, alert.severity = at, t.ts_ns, t.severity
        alert.last_values, alert.message = json_values(t.values), t.message

    def _event(self, session: Session, kind: str, alert: Alert, **extra: Any) -> Event:
        rule = self.rules.get(alert.rule_id)
        category = "alert" if rule is None or rule.category is None else rule.category
        # A repeat notifies nobody (the work order's occurrence event does): skip routing.
        recipients = (
            []
            if kind == "alert.repeat"
            else self.router.route(session, alert.node_id, category).recipients()
        )
        return {
            "type": kind,
            "at": iso(self.clock.now()),
            "alert": alert_dict(alert),
            "recipients": recipients,
            **extra,
        }

    def _retrying(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a transaction; run it again when a concurrent writer got there first."""
        for attempt in range(1, self.attempts + 1):
            try:
                with Session(self.engine, expire_on_commit=False) as session, session.begin():
                    return work(session)
            except (IntegrityError, StaleDataError):
                if attempt == self.attempts:
                    raise
                log.debug("alert taken or changed by a concurrent writer; again (%d)", attempt)
            except OperationalError as err:
                if attempt == self.attempts or "locked" not in str(err).lower():
                    raise
                time.sleep(LOCKED_BACKOFF.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")
