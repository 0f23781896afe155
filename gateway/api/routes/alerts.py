"""Alerts: list and filter, read, acknowledge.

An alert is placed where its device hung when the alert began (its node and path); a token
sees the alerts placed inside its scope, and no other alert exists for it (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from devices import KINDS
from gateway.alerting.alerts import AlertError, AlertService, alerts_query
from gateway.alerting.models import Alert
from gateway.api.auth import NotInScopeError, Principal
from gateway.api.deps import AlertsDep, PrincipalDep, in_scope, place_clause
from gateway.api.errors import UnprocessableError
from gateway.api.schemas import ErrorBody
from gateway.api.schemas_ops import AlertPage, AlertPublic, AlertState
from rules.model import Severity

router = APIRouter(
    prefix="/alerts",
    tags=["alerts"],
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        503: {"model": ErrorBody, "description": "the API runs without the alerts"},
    },
)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
AlertId = Annotated[int, Path(ge=1, le=2**62, description="alert id")]


def page_of(session: Session, query: Select[Any], offset: int) -> tuple[int, list[Any]]:
    """The total count of ``query`` (limit aside) and the rows of its page at ``offset``."""
    counted = query.order_by(None).limit(None).subquery()
    total = session.scalar(select(func.count()).select_from(counted)) or 0
    return total, list(session.scalars(query.offset(offset)))


@router.get("", summary="List alerts", response_model=AlertPage)
def list_alerts(
    principal: PrincipalDep,
    alerts: AlertsDep,
    state: AlertState | None = None,
    severity: Severity | None = None,
    kind: Annotated[str | None, Query(description="device kind, e.g. smoke")] = None,
    device_id: Annotated[str | None, Query(max_length=128)] = None,
    node: Annotated[str | None, Query(max_length=64, description="node code (and below)")] = None,
    rule_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AlertPage:
    """Alerts inside the token's scope, newest first, filtered."""
    principal.require("alerts", "read")
    if kind is not None and kind not in KINDS:
        raise UnprocessableError(f"query.kind: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    filters = {"state": state, "severity": severity, "kind": kind, "device_id": device_id}
    query = alerts_query(**filters, rule_id=rule_id, limit=limit)
    clause = place_clause(principal, node, Alert.node_path, Alert.node_id)
    if clause is not None:
        query = query.where(clause)
    with Session(alerts.engine) as session:
        total, rows = page_of(session, query, offset)
    items = [AlertPublic.of(alert, principal.index) for alert in rows]
    return AlertPage(items=items, total=total, limit=limit, offset=offset)


def _visible(alerts: AlertService, principal: Principal, alert_id: int) -> Alert:
    try:
        alert = alerts.get(alert_id)
    except AlertError:
        alert = None
    if alert is None or not in_scope(principal, alert.node_path, alert.node_id):
        raise NotInScopeError(f"alert {alert_id} not found")
    return alert


@router.get("/{alert_id}", summary="Get an alert", response_model=AlertPublic, responses=_NOT_FOUND)
def get_alert(alert_id: AlertId, principal: PrincipalDep, alerts: AlertsDep) -> AlertPublic:
    """One alert with its latest reading and acknowledgement."""
    principal.require("alerts", "read")
    return AlertPublic.of(_visible(alerts, principal, alert_id), principal.index)


@router.post(
    "/{alert_id}/ack",
    summary="Acknowledge an alert",
    response_model=AlertPublic,
    responses=_NOT_FOUND,
)
def acknowledge_alert(alert_id: AlertId, principal: PrincipalDep, alerts: AlertsDep) -> AlertPublic:
    """Record that the token's holder (its name) took note; its open work order counts as
    acknowledged too. Acknowledging again changes nothing."""
    principal.require("alerts", "write")
    _visible(alerts, principal, alert_id)
    try:
        alert = alerts.acknowledge(alert_id, principal.name)
    except AlertError as err:
        raise NotInScopeError(f"alert {alert_id} not found") from err
    return AlertPublic.of(alert, principal.index)
