"""Work orders: open → dispatched → in_progress → resolved → closed, reopen, audit, SLA.

``gateway.alerting.alerts`` drives sensor orders inside its own transaction through the
session-level primitives (``find_open``, ``open_from_alert``, ``add_occurrence``, ``step``,
``audit``, ``event``), which return events without emitting them; every other method runs
one transaction of its own and emits its events after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from gateway.core.clock import Clock, iso
from gateway.core.db import json_values
from gateway.registry.models import Staff
from gateway.workorders.models import (
    ACTIVE_ORDER_STATES,
    STEPS,
    RaisingAlert,
    RuleInfo,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderOccurrence,
    active_key,
    audit_row,
    breach_of,
    fault_refusal,
    order_dict,
    orders_query,
    overdue_query,
    refusal,
    restart_deadlines,
)
from gateway.workorders.routing import Route, Router, path_string

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]
Event = dict[str, Any]
Events = list[Event]
Action = Literal["dispatch", "start", "resolve", "close", "reopen"]


class WorkOrderError(ValueError):
    """A work-order request was refused; the message says why and what to do instead."""


def emit_all(sink: EventSink | None, events: Events) -> None:
    """Hand events to ``sink``; a failing sink is logged and never undoes what was stored."""
    for event in events:
        try:
            if sink is not None:
                sink(event)
        except Exception:
            log.exception("event sink failed on %s", event.get("type"))


class WorkOrderService:
    """Creates, moves, escalates and lists work orders."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        router: Router,
        on_event: EventSink | None = None,
        *,
        reopen_window_s: float = 7 * 86400.0,
        manual_sla_s: tuple[float | None, float | None] = (4 * 3600.0, 3 * 86400.0),
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.router = router
        self.on_event = on_event
        self.reopen_window_s = reopen_window_s
        self.manual_sla_s = manual_sla_s

    # -- session-level primitives, for AlertService inside its own transaction ----------
    def find_open(self, session: Session, key: str | None) -> WorkOrder | None:
        """The sensor order not yet closed with this ``active_key``, if any."""
        if key is None:
            return None
        return session.scalar(select(WorkOrder).where(WorkOrder.active_key == key))

    def open_from_alert(
        self, session: Session, alert: RaisingAlert, rule: RuleInfo, at: datetime
    ) -> dict[str, Any]:
        """Open the routed order for a firing alert (with its first occurrence)."""
        category = rule.category or "maintenance"
        route = self.router.route(session, alert.node_id, category)
        order = self._new_order(route, category, rule.sla_ack_s, rule.sla_resolve_s)
        order.active_key, order.alert_id, order.source = alert.active_key, alert.id, "sensor"
        order.rule_id, order.device_id = alert.rule_id, alert.device_id
        order.group_key, order.sensor_state = alert.group_key, "fault"
        order.title, order.description, order.severity = rule.title, alert.message, alert.severity
        order.origin_node_id, order.node_path = alert.node_id, alert.node_path
        session.add(order)
        session.flush()
        self.add_occurrence(session, order, at, alert.last_values, alert.message)
        note = f"raised by rule {alert.rule_id} on device {alert.device_id}"
        self.audit(session, order, "sensor", "open", from_state=None, note=note)
        return self.event(session, "workorder.opened", order, route)

    def _new_order(
        self, route: Route, category: str, ack_s: float | None, resolve_s: float | None
    ) -> WorkOrder:
        if route.owner is None:
            log.warning("no team found for a %s work order; it is left unowned", category)
        owner = None if route.owner is None else route.owner.node_id
        order = WorkOrder(
            category=category, state="open", node_id=owner, created_at=self.clock.now()
        )
        order.sla_ack_s, order.sla_resolve_s = ack_s, resolve_s
        order.escalation_level, order.occurrence_count = 0, 0
        return restart_deadlines(order, order.created_at)

    def add_occurrence(
        self, session: Session, order: WorkOrder, at: datetime, values: Mapping[str, Any], msg: str
    ) -> None:
        """Record one more trigger of the problem (time, reading, message)."""
        clean = json_values(values)
        session.add(WorkOrderOccurrence(order_id=order.id, at=at, values=clean, message=msg))
        order.occurrence_count += 1
        order.last_values, order.last_reading_at = clean, at

    # -- manual orders and the lifecycle, one transaction each ---------------------------
    def create_manual(
        self,
        *,
        title: str,
        description: str,
        node_code: str,
        reporter: str,
        category: str = "manual",
        severity: str = "warning",
        photo_url: str | None = None,
    ) -> WorkOrder:
        """A resident's report (一键报修) at ``node_code``, routed like a sensor order."""
        if not title.strip():
            raise WorkOrderError("a work order needs a title")
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            node = self.router.node_by_code(session, node_code)
            if node is None:
                raise WorkOrderError(f"node {node_code!r} is not in the hierarchy")
            route = self.router.route(session, node.node_id, category)
            order = self._new_order(route, category, *self.manual_sla_s)
            order.source, order.reporter, order.severity = "manual", reporter, severity
            order.title, order.description = title.strip(), description
            order.origin_node_id = node.node_id
            order.node_path = path_string(self.router.path(session, node.node_id))
            session.add(order)
            session.flush()
            fields = {"from_state": None, "note": description, "photo_url": photo_url}
            self.audit(session, order, reporter, "open", **fields)
            events = [self.event(session, "workorder.opened", order, route)]
        emit_all(self.on_event, events)
        return order

    def transition(
        self,
        order_id: int,
        action: Action,
        *,
        actor: str,
        note: str = "",
        photo_url: str | None = None,
        assignee: int | None = None,
        override_reason: str | None = None,
    ) -> WorkOrder:
        """Move an order by ``action`` (see ``STEPS``); refused moves raise WorkOrderError.

        ``dispatch`` needs an ``assignee`` and acknowledges the order; ``resolve`` is refused
        while the sensor still reports the fault unless ``override_reason`` is given (it is
        audited); ``reopen`` from closed works within the reopen window.
        """

        def work(session: Session, order: WorkOrder) -> Events:
            detail = (note, photo_url)
            return [self.step(session, order, action, actor, *detail, assignee, override_reason)]

        return self._transact(order_id, work)

    def comment(
        self, order_id: int, *, actor: str, note: str, photo_url: str | None = None
    ) -> WorkOrder:
        """Add a note (and photo) to the audit trail without changing the state."""

        def work(session: Session, order: WorkOrder) -> Events:
            self.audit(session, order, actor, "comment", note=note, photo_url=photo_url)
            return [self.event(session, "workorder.commented", order, actor=actor, note=note)]

        return self._transact(order_id, work)

    def rate(self, order_id: int, score: int, comment: str, actor: str) -> WorkOrder:
        """The requester's rating of a closed order: 1 (poor) to 5 (excellent)."""

        def work(session: Session, order: WorkOrder) -> Events:
            if order.state != "closed":
                raise WorkOrderError(f"cannot rate order {order_id}: {order.state}, not closed")
            if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
                raise WorkOrderError(f"cannot rate order {order_id}: score {score!r} is not 1-5")
            order.rating, order.rating_comment, order.rated_by = score, comment, actor
            self.audit(session, order, actor, "rate", note=f"{score}/5 {comment}".strip())
            return [self.event(session, "workorder.rated", order, rating=score, comment=comment)]

        return self._transact(order_id, work)

    # -- SLA --------------------------------------------------------------------------
    def check_sla(self, now: datetime | None = None) -> Events:
        """Escalate every order past its ack or resolve deadline one level up.

        The new owner gets fresh deadlines (same durations, from ``now``), so an order
        escalates once per breach; at the top it stays and is marked overdue once per kind.
        """
        now = now or self.clock.now()
        query = select(WorkOrder).where(WorkOrder.state.in_(ACTIVE_ORDER_STATES))
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            orders = session.scalars(query.order_by(WorkOrder.id)).all()
            events = [e for o in orders if (e := self._check_one(session, o, now)) is not None]
        emit_all(self.on_event, events)
        return events

    def _check_one(self, session: Session, order: WorkOrder, now: datetime) -> Event | None:
        breach = breach_of(order, now)
        if breach is None:
            return None
        due = iso(order.ack_due if breach == "ack" else order.resolve_due)
        route = self._route(session, order)
        here = None if route.owner is None else route.owner.code
        if route.escalation is None:
            if order.overdue_breach == breach:
                return None
            order.overdue_at, order.overdue_breach = now, breach
            note = f"{breach} deadline {due} passed; no level above {here}"
            self.audit(session, order, "sla", "overdue", note=note)
            return self.event(session, "workorder.overdue", order, route, breach=breach, due=due)
        target = route.escalation
        order.node_id, order.escalation_level = target.node_id, order.escalation_level + 1
        restart_deadlines(order, now)
        note = f"{breach} deadline {due} passed; escalated from {here} to {target.code}"
        self.audit(session, order, "sla", "escalate", note=note)
        extra: Event = {"breach": breach, "due": due, "from_node": here, "to_node": target.code}
        return self.event(session, "workorder.escalated", order, **extra)

    # -- reading ----------------------------------------------------------------------
    def overdue(self, level: str | None = None, now: datetime | None = None) -> list[WorkOrder]:
        """Active orders past a deadline, optionally only those owned at hierarchy ``level``."""
        return self._read(overdue_query(now or self.clock.now(), level))

    def search(
        self,
        *,
        state: str | None = None,
        node: str | None = None,
        category: str | None = None,
        device_id: str | None = None,
        limit: int = 100,
    ) -> list[WorkOrder]:
        """Newest first; ``node`` keeps orders whose place lies at or under that node code."""
        filters = {"state": state, "node": node, "category": category, "device_id": device_id}
        return self._read(orders_query(**filters, limit=limit))

    def get(self, order_id: int) -> WorkOrder:
        """One order (raises WorkOrderError when unknown)."""
        with Session(self.engine, expire_on_commit=False) as session:
            order = session.get(WorkOrder, order_id)
        if order is None:
            raise WorkOrderError(f"work order {order_id} not found")
        return order

    def history(self, order_id: int) -> list[WorkOrderEvent]:
        """The audit trail of an order, oldest first."""
        where = WorkOrderEvent.order_id == order_id
        return self._read(select(WorkOrderEvent).where(where).order_by(WorkOrderEvent.id))

    def occurrences(self, order_id: int) -> list[WorkOrderOccurrence]:
        """Every trigger recorded on a sensor order, oldest first."""
        where = WorkOrderOccurrence.order_id == order_id
        return self._read(select(WorkOrderOccurrence).where(where).order_by(WorkOrderOccurrence.id))

    def _read(self, query: Any) -> list[Any]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    # -- helpers ----------------------------------------------------------------------
    def _transact(self, order_id: int, work: Callable[[Session, WorkOrder], Events]) -> WorkOrder:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                order = session.get(WorkOrder, order_id)
                if order is None:
                    raise WorkOrderError(f"work order {order_id} not found")
                events = work(session, order)
        except StaleDataError as err:
            raise WorkOrderError(f"work order {order_id} changed meanwhile; try again") from err
        emit_all(self.on_event, events)
        return order

    def step(
        self,
        session: Session,
        order: WorkOrder,
        action: str,
        actor: str,
        note: str = "",
        photo_url: str | None = None,
        assignee: int | None = None,
        override: str | None = None,
    ) -> Event:
        """Move ``order`` by ``action`` if the state table and the checks allow it."""
        sources, target, event_type = STEPS[action]
        if order.state not in sources:
            raise WorkOrderError(refusal(order.id, action, order.state))
        changes, reason = self._checks(session, order, action, assignee, override)
        before, order.state = order.state, target
        for name, value in changes.items():
            setattr(order, name, value)
        details: Event = {"note": note, "photo_url": photo_url, "override_reason": reason}
        self.audit(session, order, actor, action, from_state=before, **details)
        extra = {"from_state": before, "to_state": target, **details}
        return self.event(session, event_type, order, actor=actor, **extra)

    def _checks(
        self, session: Session, order: WorkOrder, action: str, staff: int | None, given: str | None
    ) -> tuple[dict[str, Any], str | None]:
        """Checks beyond the state table; the fields the action sets and any override."""
        now = self.clock.now()
        if action == "dispatch":
            if staff is None or session.get(Staff, staff) is None:
                raise WorkOrderError(f"cannot dispatch order {order.id}: staff {staff} unknown")
            return {"assignee": staff, "acked_at": order.acked_at or now}, None
        if action == "resolve":
            reason = (given or "").strip() if order.sensor_state == "fault" else ""
            if order.sensor_state == "fault" and not reason:
                raise WorkOrderError(fault_refusal(order))
            return {"resolved_at": now}, reason or None
        if action == "close":
            return {"closed_at": now, "active_key": None}, None
        if action == "reopen" and order.state == "closed":
            self._check_reopen_closed(session, order)
        if action == "reopen":
            restart_deadlines(order, now)
            return dict.fromkeys(("acked_at", "resolved_at", "closed_at", "overdue_at")), None
        return {}, None

    def _check_reopen_closed(self, session: Session, order: WorkOrder) -> None:
        closed = order.closed_at or order.created_at
        if self.clock.now() - closed > timedelta(seconds=self.reopen_window_s):
            raise WorkOrderError(
                f"cannot reopen order {order.id}: closed at {iso(closed)}, more than "
                f"{self.reopen_window_s / 86400:g} days ago; open a new order instead"
            )
        if order.source != "sensor" or order.rule_id is None or order.device_id is None:
            return
        key = active_key(order.rule_id, order.device_id, order.group_key)
        newer = self.find_open(session, key)
        if newer is not None:
            raise WorkOrderError(
                f"cannot reopen order {order.id}: order {newer.id} is already open for "
                f"{order.device_id} / {order.rule_id}; add to that one"
            )
        order.active_key = key

    def audit(
        self, session: Session, order: WorkOrder, actor: str, action: str, **fields: Any
    ) -> None:
        """Audit ``order``: fields are from_state, note, photo_url and override_reason."""
        session.add(audit_row(order, self.clock.now(), actor, action, **fields))

    def _route(self, session: Session, order: WorkOrder) -> Route:
        return self.router.route(session, order.origin_node_id, order.category, order.node_id)

    def event(
        self,
        session: Session,
        kind: str,
        order: WorkOrder,
        route: Route | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A notification event about ``order`` (recipients from its current route)."""
        route = route or self._route(session, order)
        return {
            "type": kind,
            "at": iso(self.clock.now()),
            "order": order_dict(order, route.owner),
            "recipients": route.recipients(),
            **extra,
        }
