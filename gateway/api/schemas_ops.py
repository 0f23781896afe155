"""Request and response models of alerts, work orders and the live event stream."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from gateway.alerting.models import Alert
from gateway.api.auth import NodeIndex
from gateway.api.deps import path_codes
from gateway.api.schemas import NodeCode, _In
from gateway.workorders.models import WorkOrder, WorkOrderEvent, WorkOrderOccurrence
from rules.model import Severity

AlertState = Literal["pending", "firing", "resolved"]
OrderState = Literal["open", "dispatched", "in_progress", "resolved", "closed"]
OrderAction = Literal["dispatch", "start", "resolve", "close", "reopen"]
Category = Annotated[
    str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z_]*$", examples=["maintenance"])
]
PhotoUrl = Annotated[
    str,
    Field(max_length=1024, pattern=r"^https?://\S+$", examples=["https://photos.example/1.jpg"]),
]
Note = Annotated[str, Field(max_length=4000)]


def _code(index: NodeIndex, node_id: int | None) -> str | None:
    node = index.nodes.get(node_id) if node_id is not None else None
    return None if node is None else node.code


# --- alerts ----------------------------------------------------------------------------------


class AlertPublic(BaseModel):
    """An alert: one episode of a rule on a device (pending → firing → resolved)."""

    id: int
    rule_id: str
    device_id: str
    group: str | None = Field(description="the group of a count rule (e.g. a facade)")
    kind: str = Field(description="device kind")
    severity: str
    state: str
    title: str
    message: str
    node: str | None = Field(description="the device's node when the alert began")
    path: list[str] = Field(description="node codes from the street down to that node")
    first_at: datetime
    fired_at: datetime | None
    last_at: datetime
    resolved_at: datetime | None
    occurrences: int
    values: dict[str, Any] = Field(description="the latest reading that changed the alert")
    acked_by: str | None
    acked_at: datetime | None

    @classmethod
    def of(cls, alert: Alert, index: NodeIndex) -> AlertPublic:
        """The public shape of an alert row."""
        return cls(
            id=alert.id,
            rule_id=alert.rule_id,
            device_id=alert.device_id,
            group=alert.group_key,
            kind=alert.kind,
            severity=alert.severity,
            state=alert.state,
            title=alert.title,
            message=alert.message,
            node=_code(index, alert.node_id),
            path=path_codes(alert.node_path),
            first_at=alert.first_at,
            fired_at=alert.fired_at,
            last_at=alert.last_at,
            resolved_at=alert.resolved_at,
            occurrences=alert.occurrences,
            values=dict(alert.last_values or {}),
            acked_by=alert.acked_by,
            acked_at=alert.acked_at,
        )


class AlertPage(BaseModel):
    """One page of alerts, newest first."""

    items: list[AlertPublic]
    total: int
    limit: int
    offset: int


# --- work orders -----------------------------------------------------------------------------


class WorkOrderCreate(_In):
    """A manual report (a resident's 一键报修), routed like a sensor order."""

    title: str = Field(min_length=1, max_length=256)
    description: Note = ""
    node: NodeCode = Field(description="where the problem is")
    category: Category = "manual"
    severity: Severity = "warning"
    photo_url: PhotoUrl | None = None


class WorkOrderTransition(_In):
    """Move an order: dispatch (needs ``assignee``), start, resolve, close or reopen."""

    action: OrderAction
    note: Note = ""
    photo_url: PhotoUrl | None = None
    assignee: int | None = Field(None, ge=1, le=2**62, description="staff entry id (dispatch)")
    override_reason: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="resolve although the sensor still reports the fault, saying why",
    )


class WorkOrderComment(_In):
    """A note (and photo) for the audit trail; the state stays as it is."""

    note: Note = Field(min_length=1)
    photo_url: PhotoUrl | None = None


class WorkOrderRating(_In):
    """The requester's rating of a closed order."""

    score: int = Field(ge=1, le=5, description="1 (poor) to 5 (excellent)")
    comment: str = Field("", max_length=2000)


class WorkOrderPublic(BaseModel):
    """A work order. ``node`` is the current owner (it moves up on escalation), ``origin``
    and ``path`` the place of the problem."""

    id: int
    state: str
    source: str = Field(description="sensor or manual")
    category: str
    title: str
    description: str
    severity: str
    rule_id: str | None
    device_id: str | None
    alert_id: int | None
    node: str | None = Field(description="the owning node (its team handles the order)")
    origin: str | None = Field(description="the node where the problem is")
    path: list[str] = Field(description="node codes from the street down to the origin")
    assignee: int | None = Field(description="staff entry id")
    reporter: str | None
    escalation_level: int
    created_at: datetime
    ack_due: datetime | None
    resolve_due: datetime | None
    acked_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    overdue: bool = Field(description="an active order past its ack or resolve deadline")
    sensor_state: str | None = Field(description="ok or fault (sensor orders only)")
    sensor_normal_since: datetime | None
    last_values: dict[str, Any]
    last_reading_at: datetime | None
    occurrence_count: int
    rating: int | None
    rating_comment: str | None
    rated_by: str | None

    @classmethod
    def fields_of(cls, order: WorkOrder, index: NodeIndex, overdue: bool) -> dict[str, Any]:
        """The public fields of an order row."""
        names = set(WorkOrderPublic.model_fields) - {"node", "origin", "path", "overdue"}
        values = {name: getattr(order, name) for name in names}
        values["last_values"] = dict(order.last_values or {})
        return {
            **values,
            "node": _code(index, order.node_id),
            "origin": _code(index, order.origin_node_id),
            "path": path_codes(order.node_path),
            "overdue": overdue,
        }


class OccurrencePublic(BaseModel):
    """One trigger of a sensor order's problem."""

    at: datetime
    values: dict[str, Any]
    message: str

    @classmethod
    def of(cls, row: WorkOrderOccurrence) -> OccurrencePublic:
        """From an occurrence row."""
        return cls(at=row.at, values=dict(row.values or {}), message=row.message)


class AuditEntryPublic(BaseModel):
    """One entry of the audit trail: who did what, when, with note and photo."""

    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    note: str
    photo_url: str | None
    override_reason: str | None

    @classmethod
    def of(cls, row: WorkOrderEvent) -> AuditEntryPublic:
        """From an audit row."""
        names = cls.model_fields
        return cls(**{name: getattr(row, name) for name in names})


class WorkOrderDetail(WorkOrderPublic):
    """A work order with its latest occurrences and its whole audit trail (oldest first)."""

    occurrences: list[OccurrencePublic] = Field(
        description="the latest occurrences (see occurrence_count for all)"
    )
    history: list[AuditEntryPublic]


class WorkOrderPage(BaseModel):
    """One page of work orders, newest first."""

    items: list[WorkOrderPublic]
    total: int
    limit: int
    offset: int
