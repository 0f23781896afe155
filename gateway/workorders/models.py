"""Work-order tables (SQLAlchemy 2, on ``gateway.core.db.Base``) and the data around them.

Besides the tables: the rule metadata alerts and orders need (``RuleInfo``), the work-order
state machine as a table (``STEPS``), the JSON shape of an order in events, and what an order
reads of the alert that raised it (``RaisingAlert``; the alert tables are in
``gateway.alerting.models``, above this package).

Idempotence under concurrency comes from the database, not from locks in the process:
an active alert and an open sensor work order each carry an ``active_key`` (``rule|device``,
or ``rule|@group`` for count rules) with a UNIQUE index. The key is set while the alert is
active (or the order is not closed) and NULL afterwards; NULLs never collide, so history can
hold any number of finished rows while at most one live row exists per key. Two writers racing
to create the same row get one row and one ``IntegrityError``, which the loser handles
by reading again (see ``gateway.alerting.alerts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    Select,
    String,
    Text,
    and_,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.core.clock import after, iso
from gateway.core.db import Base, UtcDateTime
from gateway.registry.models import Node
from gateway.workorders.routing import PathNode

ORDER_STATES: tuple[str, ...] = ("open", "dispatched", "in_progress", "resolved", "closed")
SENSOR_STATES: tuple[str, ...] = ("ok", "fault")
ORDER_SOURCES: tuple[str, ...] = ("sensor", "manual")
ACTIVE_ORDER_STATES: tuple[str, ...] = ("open", "dispatched", "in_progress")
# action → (states it may start from, state it leads to, event type)
STEPS: Mapping[str, tuple[frozenset[str], str, str]] = {
    "dispatch": (frozenset({"open", "dispatched"}), "dispatched", "workorder.dispatched"),
    "start": (frozenset({"dispatched"}), "in_progress", "workorder.started"),
    "resolve": (frozenset({"in_progress"}), "resolved", "workorder.resolved"),
    "close": (frozenset({"resolved"}), "closed", "workorder.closed"),
    "reopen": (frozenset(ORDER_STATES[1:]), "open", "workorder.reopened"),
}
NEXT_STEP: Mapping[str, str] = {
    "open": "dispatch it",
    "dispatched": "start it",
    "in_progress": "resolve it",
    "resolved": "close it",
    "closed": "reopen it",
}


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What alerts and work orders need to know about a rule (durations in seconds)."""

    rule_id: str
    title: str
    severity: str
    category: str | None = None  # None: the rule opens no work order
    sla_ack_s: float | None = None
    sla_resolve_s: float | None = None


class RaisingAlert(Protocol):
    """What a sensor order reads of the alert that raises it (``gateway.alerting.models.Alert``
    is one; this package sits below alerting and does not import it)."""

    @property
    def id(self) -> int: ...
    @property
    def active_key(self) -> str | None: ...
    @property
    def rule_id(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def group_key(self) -> str | None: ...
    @property
    def severity(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def node_id(self) -> int | None: ...
    @property
    def node_path(self) -> str: ...
    @property
    def last_values(self) -> dict[str, Any]: ...


def active_key(rule_id: str, device_id: str, group: str | None) -> str:
    """The identity of a live alert or sensor order: ``rule|device``, or ``rule|@group``.

    Count rules fire per group (e.g. a facade) and report whichever device triggered last,
    so their identity leaves the device out; ``@`` never occurs in a device id.
    """
    return f"{rule_id}|{device_id}" if group is None else f"{rule_id}|@{group}"


class WorkOrder(Base):
    """A job for people: open → dispatched → in_progress → resolved → closed (or reopened)."""

    __tablename__ = "work_orders"
    __table_args__ = (Index("ix_work_orders_state_node", "state", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    active_key: Mapped[str | None] = mapped_column(String(512), unique=True)
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id"), index=True)
    rule_id: Mapped[str | None] = mapped_column(String(128))
    device_id: Mapped[str | None] = mapped_column(String(128), index=True)
    group_key: Mapped[str | None] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(16))
    reporter: Mapped[str | None] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"), index=True)  # owner
    origin_node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))  # the place
    node_path: Mapped[str] = mapped_column(String(512), default="/")  # of the origin node
    assignee: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sla_ack_s: Mapped[float | None] = mapped_column(Float)
    sla_resolve_s: Mapped[float | None] = mapped_column(Float)
    ack_due: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolve_due: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    overdue_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # breached at the top
    overdue_breach: Mapped[str | None] = mapped_column(String(16))  # "ack" | "resolve"
    sensor_state: Mapped[str | None] = mapped_column(String(8))  # None for manual orders
    sensor_normal_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_reading_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurrence_count: Mapped[int] = mapped_column(Integer, default=0)
    rating: Mapped[int | None] = mapped_column(Integer)
    rating_comment: Mapped[str | None] = mapped_column(Text)
    rated_by: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)  # optimistic lock: no lost updates

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012  (SQLAlchemy's own protocol)


class WorkOrderOccurrence(Base):
    """One more trigger of the problem a sensor work order is about."""

    __tablename__ = "work_order_occurrences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message: Mapped[str] = mapped_column(Text, default="")


class WorkOrderEvent(Base):
    """The audit trail: who did what to an order, when, with note and optional photo."""

    __tablename__ = "work_order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    photo_url: Mapped[str | None] = mapped_column(String(1024))
    override_reason: Mapped[str | None] = mapped_column(Text)


def refusal(order_id: int, action: str, state: str) -> str:
    """Why ``action`` cannot happen to an order in ``state``, and what to do first."""
    if action == "reopen":
        return f"cannot reopen order {order_id}: it is already {state}"
    target = STEPS[action][1]
    ahead = ORDER_STATES.index(state) < ORDER_STATES.index(target)
    hint = NEXT_STEP[state] if ahead else "reopen it"
    return f"cannot {action} order {order_id}: it is {state}; {hint} first"


def fault_refusal(order: WorkOrder) -> str:
    """Why a sensor order cannot be resolved yet: the device still reports the fault."""
    return (
        f"cannot resolve order {order.id}: device {order.device_id} still reports the fault "
        f"(latest reading at {iso(order.last_reading_at)}: {order.last_values}); wait until "
        "the sensor reports normal, or give an override_reason"
    )


def breach_of(order: WorkOrder, now: datetime) -> str | None:
    """``"ack"`` or ``"resolve"`` when that deadline of an active order has passed."""
    if order.acked_at is None and order.ack_due is not None and now > order.ack_due:
        return "ack"
    if order.resolve_due is not None and now > order.resolve_due:
        return "resolve"
    return None


def audit_row(
    order: WorkOrder, at: datetime, actor: str, action: str, **fields: Any
) -> WorkOrderEvent:
    """An audit-trail entry for ``order``; ``from_state`` defaults to its state now.

    ``fields``: from_state, note, photo_url, override_reason.
    """
    fields.setdefault("from_state", order.state)
    return WorkOrderEvent(
        order_id=order.id, at=at, actor=actor, action=action, to_state=order.state, **fields
    )


def restart_deadlines(order: WorkOrder, now: datetime) -> WorkOrder:
    """Fresh ack and resolve deadlines from ``now`` (same durations); clears overdue marks."""
    order.ack_due = after(now, order.sla_ack_s)
    order.resolve_due = after(now, order.sla_resolve_s)
    order.overdue_at = order.overdue_breach = None
    return order


def order_dict(order: WorkOrder, owner: PathNode | None) -> dict[str, Any]:
    """The ``order`` part of a notification event (JSON-ready)."""
    return {
        "id": order.id,
        "state": order.state,
        "source": order.source,
        "category": order.category,
        "title": order.title,
        "severity": order.severity,
        "rule_id": order.rule_id,
        "device_id": order.device_id,
        "alert_id": order.alert_id,
        "node": None if owner is None else owner.code,
        "node_level": None if owner is None else owner.level,
        "node_path": order.node_path,
        "assignee": order.assignee,
        "reporter": order.reporter,
        "escalation_level": order.escalation_level,
        "created_at": iso(order.created_at),
        "ack_due": iso(order.ack_due),
        "resolve_due": iso(order.resolve_due),
        "sensor_state": order.sensor_state,
        "sensor_normal_since": iso(order.sensor_normal_since),
        "occurrences": order.occurrence_count,
    }


def orders_query(
    *,
    state: str | None = None,
    node: str | None = None,
    category: str | None = None,
    device_id: str | None = None,
    limit: int = 100,
) -> Select[Any]:
    """Work orders newest first; ``node`` keeps those whose place lies at or under it."""
    query = select(WorkOrder).order_by(WorkOrder.id.desc()).limit(limit)
    if node is not None:
        query = query.where(WorkOrder.node_path.contains(f"/{node}/", autoescape=True))
    for column, wanted in (
        (WorkOrder.state, state),
        (WorkOrder.category, category),
        (WorkOrder.device_id, device_id),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    return query


def overdue_query(now: datetime, level: str | None = None) -> Select[Any]:
    """Active orders past a deadline at ``now``, optionally only those owned at ``level``."""
    late = or_(
        and_(WorkOrder.acked_at.is_(None), WorkOrder.ack_due < now),
        WorkOrder.resolve_due < now,
    )
    query = (
        select(WorkOrder)
        .join(Node, Node.id == WorkOrder.node_id)
        .where(WorkOrder.state.in_(ACTIVE_ORDER_STATES), late)
        .order_by(WorkOrder.id)
    )
    return query if level is None else query.where(Node.level == level)
