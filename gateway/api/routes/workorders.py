"""Work orders: list and filter, read with occurrences and audit trail, report one by hand,
move through the lifecycle, comment, rate.

Scope: an order is visible to a token whose scope holds the order's origin (the place of the
problem) or its current owner. Escalation moves the owner up (grid → community → street),
and the origin stays, so the grid that had an order still sees it after it escalated, and
the community it escalated to sees it too.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from gateway.api.auth import NotInScopeError, Principal
from gateway.api.deps import OrdersDep, PrincipalDep, SessionDep, in_scope, place_clause
from gateway.api.errors import ConflictError, UnprocessableError
from gateway.api.routes.alerts import page_of
from gateway.api.schemas import ErrorBody
from gateway.api.schemas_ops import (
    AuditEntryPublic,
    Category,
    OccurrencePublic,
    OrderState,
    WorkOrderComment,
    WorkOrderCreate,
    WorkOrderDetail,
    WorkOrderPage,
    WorkOrderPublic,
    WorkOrderRating,
    WorkOrderTransition,
)
from gateway.registry.models import Staff
from gateway.workorders.lifecycle import WorkOrderError, WorkOrderService
from gateway.workorders.models import ACTIVE_ORDER_STATES, WorkOrder, breach_of, orders_query

router = APIRouter(
    prefix="/work-orders",
    tags=["work orders"],
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        503: {"model": ErrorBody, "description": "the API runs without the work orders"},
    },
)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
_REFUSED: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody},
    409: {"model": ErrorBody, "description": "refused in the order's state; detail says why"},
}
OrderId = Annotated[int, Path(ge=1, le=2**62, description="work order id")]
LATEST_OCCURRENCES = 100


def _is_overdue(orders: WorkOrderService, order: WorkOrder) -> bool:
    active = order.state in ACTIVE_ORDER_STATES
    return active and breach_of(order, orders.clock.now()) is not None


def _public(orders: WorkOrderService, order: WorkOrder, principal: Principal) -> WorkOrderPublic:
    fields = WorkOrderPublic.fields_of(order, principal.index, _is_overdue(orders, order))
    return WorkOrderPublic(**fields)


def _detail(orders: WorkOrderService, order: WorkOrder, principal: Principal) -> WorkOrderDetail:
    fields = WorkOrderPublic.fields_of(order, principal.index, _is_overdue(orders, order))
    occurrences = orders.occurrences(order.id)[-LATEST_OCCURRENCES:]
    return WorkOrderDetail(
        **fields,
        occurrences=[OccurrencePublic.of(row) for row in occurrences],
        history=[AuditEntryPublic.of(row) for row in orders.history(order.id)],
    )


def _visible(orders: WorkOrderService, principal: Principal, order_id: int) -> WorkOrder:
    try:
        order = orders.get(order_id)
    except WorkOrderError:
        order = None
    places = (order.node_id, order.origin_node_id) if order is not None else ()
    if order is None or not in_scope(principal, order.node_path, *places):
        raise NotInScopeError(f"work order {order_id} not found")
    return order


@router.get("", summary="List work orders", response_model=WorkOrderPage)
def list_orders(
    principal: PrincipalDep,
    orders: OrdersDep,
    state: OrderState | None = None,
    category: Category | None = None,
    node: Annotated[str | None, Query(max_length=64, description="node code (and below)")] = None,
    device_id: Annotated[str | None, Query(max_length=128)] = None,
    overdue: Annotated[bool | None, Query(description="past an ack or resolve deadline")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> WorkOrderPage:
    """Orders whose origin or owner lies inside the token's scope (and under ``node``),
    newest first."""
    principal.require("work_orders", "read")
    query = orders_query(state=state, category=category, device_id=device_id, limit=limit)
    columns = (WorkOrder.node_id, WorkOrder.origin_node_id)
    clause = place_clause(principal, node, WorkOrder.node_path, *columns)
    if clause is not None:
        query = query.where(clause)
    if overdue is not None:
        late = [order.id for order in orders.overdue()]
        query = query.where(WorkOrder.id.in_(late) if overdue else WorkOrder.id.not_in(late))
    with Session(orders.engine) as session:
        total, rows = page_of(session, query, offset)
    items = [_public(orders, order, principal) for order in rows]
    return WorkOrderPage(items=items, total=total, limit=limit, offset=offset)


@router.post(
    "",
    summary="Report a problem (manual work order)",
    status_code=201,
    response_model=WorkOrderDetail,
    responses=_NOT_FOUND,
)
def create_order(
    body: WorkOrderCreate, principal: PrincipalDep, orders: OrdersDep
) -> WorkOrderDetail:
    """Open an order at ``node``, routed to the team responsible for its category there
    (the same lifecycle as sensor orders); the token's name is the reporter."""
    principal.require("work_orders", "write")
    node = principal.node_in_scope(body.node)
    try:
        order = orders.create_manual(
            title=body.title,
            description=body.description,
            node_code=node.code,
            reporter=principal.name,
            category=body.category,
            severity=body.severity,
            photo_url=body.photo_url,
        )
    except WorkOrderError as err:
        raise UnprocessableError(str(err)) from err
    return _detail(orders, order, principal)


@router.get(
    "/{order_id}", summary="Get a work order", response_model=WorkOrderDetail, responses=_NOT_FOUND
)
def get_order(order_id: OrderId, principal: PrincipalDep, orders: OrdersDep) -> WorkOrderDetail:
    """One order with its latest occurrences and its audit trail (oldest first)."""
    principal.require("work_orders", "read")
    return _detail(orders, _visible(orders, principal, order_id), principal)


def _check_assignee(session: Session, principal: Principal, staff_id: int | None) -> None:
    if staff_id is None:
        raise UnprocessableError("body.assignee: dispatch needs the staff entry id of the assignee")
    staff = session.get(Staff, staff_id)
    if staff is None or not principal.sees(staff.node_id):
        raise NotInScopeError(f"staff entry {staff_id} not found")


@router.post(
    "/{order_id}/transitions",
    summary="Move a work order",
    response_model=WorkOrderDetail,
    responses={422: {"model": ErrorBody}, **_REFUSED},
)
def transition_order(
    order_id: OrderId,
    body: WorkOrderTransition,
    principal: PrincipalDep,
    orders: OrdersDep,
    session: SessionDep,
) -> WorkOrderDetail:
    """open → dispatch → start → resolve → close, or reopen. ``dispatch`` needs an
    ``assignee`` (a staff entry inside the token's scope). A sensor order cannot be resolved
    while its device still reports the fault unless ``override_reason`` says why (audited).
    A refused move is a 409 that says why and what to do first."""
    principal.require("work_orders", "write")
    _visible(orders, principal, order_id)
    if body.action == "dispatch":
        _check_assignee(session, principal, body.assignee)
    try:
        order = orders.transition(
            order_id,
            body.action,
            actor=principal.name,
            note=body.note,
            photo_url=body.photo_url,
            assignee=body.assignee,
            override_reason=body.override_reason,
        )
    except WorkOrderError as err:
        raise ConflictError(str(err)) from err
    return _detail(orders, order, principal)


@router.post(
    "/{order_id}/comments",
    summary="Comment on a work order",
    status_code=201,
    response_model=WorkOrderDetail,
    responses=_REFUSED,
)
def comment_order(
    order_id: OrderId, body: WorkOrderComment, principal: PrincipalDep, orders: OrdersDep
) -> WorkOrderDetail:
    """Add a note (and photo URL) to the audit trail; the state does not change."""
    principal.require("work_orders", "write")
    _visible(orders, principal, order_id)
    try:
        order = orders.comment(
            order_id, actor=principal.name, note=body.note, photo_url=body.photo_url
        )
    except WorkOrderError as err:
        raise ConflictError(str(err)) from err
    return _detail(orders, order, principal)


@router.post(
    "/{order_id}/rating",
    summary="Rate a closed work order",
    response_model=WorkOrderDetail,
    responses=_REFUSED,
)
def rate_order(
    order_id: OrderId, body: WorkOrderRating, principal: PrincipalDep, orders: OrdersDep
) -> WorkOrderDetail:
    """The requester's rating, 1 (poor) to 5 (excellent), with a comment; only a closed
    order can be rated (409 otherwise); rating again replaces the rating."""
    principal.require("work_orders", "write")
    _visible(orders, principal, order_id)
    try:
        order = orders.rate(order_id, body.score, body.comment, principal.name)
    except WorkOrderError as err:
        raise ConflictError(str(err)) from err
    return _detail(orders, order, principal)
