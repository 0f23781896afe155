"""Hierarchy nodes (street → community → grid → compound → building → unit) and the staff
attached to them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.api.auth import ForbiddenError, NodeIndex, NodeRow, NotInScopeError, Principal
from gateway.api.deps import PrincipalDep, SessionDep
from gateway.api.errors import UnprocessableError
from gateway.api.schemas import (
    ErrorBody,
    NodeDetail,
    NodeSummary,
    NodeTree,
    StaffCreate,
    StaffPublic,
    StaffUpdate,
)
from gateway.registry.models import Node, Staff
from gateway.workorders.routing import grant_problem

router = APIRouter(
    prefix="/nodes",
    tags=["nodes"],
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
StaffId = Annotated[int, Path(ge=1, le=2**62, description="staff entry id")]


def _summary(node: NodeRow) -> NodeSummary:
    return NodeSummary(code=node.code, level=node.level, name=node.name)


def _tree(index: NodeIndex, node_id: int) -> NodeTree:
    node = index.nodes[node_id]
    children = [_tree(index, child) for child in index.children.get(node_id, ())]
    return NodeTree(code=node.code, level=node.level, name=node.name, children=children)


@router.get("", summary="The hierarchy tree", response_model=NodeTree)
def node_tree(principal: PrincipalDep) -> NodeTree:
    """The tree under the token's scope node (the whole community for a root token)."""
    principal.require("nodes", "read")
    return _tree(principal.index, principal.scope_node_id)


@router.get("/{code}", summary="Get a node", response_model=NodeDetail, responses=_NOT_FOUND)
def get_node(code: str, principal: PrincipalDep, session: SessionDep) -> NodeDetail:
    """A node with its ancestors (street first), direct children and attributes."""
    principal.require("nodes", "read")
    node = principal.node_in_scope(code)
    index = principal.index
    attributes = session.scalar(select(Node.attributes).where(Node.id == node.id)) or {}
    return NodeDetail(
        code=node.code,
        level=node.level,
        name=node.name,
        attributes=dict(attributes),
        path=[_summary(row) for row in index.path(node.id)[:-1]],
        children=[_summary(index.nodes[c]) for c in index.children.get(node.id, ())],
    )


def _staff_public(staff: Staff, code: str) -> StaffPublic:
    return StaffPublic(
        id=staff.id,
        node=code,
        name=staff.name,
        role=staff.role,
        email=staff.email,
        phone=staff.phone,
    )


@router.get(
    "/{code}/staff",
    summary="Staff of a node",
    response_model=list[StaffPublic],
    responses=_NOT_FOUND,
)
def list_staff(code: str, principal: PrincipalDep, session: SessionDep) -> list[StaffPublic]:
    """People attached to this node (not those of the nodes below)."""
    principal.require("staff", "read")
    node = principal.node_in_scope(code)
    rows = session.scalars(select(Staff).where(Staff.node_id == node.id).order_by(Staff.id))
    return [_staff_public(staff, node.code) for staff in rows]


@router.post(
    "/{code}/staff",
    summary="Attach a person to a node",
    status_code=201,
    response_model=StaffPublic,
    responses=_NOT_FOUND,
)
def create_staff(
    code: str, body: StaffCreate, principal: PrincipalDep, session: SessionDep
) -> StaffPublic:
    """Add a staff entry (grid member, property manager, …) at this node. A role sits at
    its own level or below, and only a token scoped at that level or above grants it: a
    compound's manager adds property managers and building or unit heads, not grid heads
    (403), since a role below its level takes that level's work orders there."""
    principal.require("staff", "write")
    node = principal.node_in_scope(code)
    check_grant(principal, node, body.role)
    staff = Staff(node_id=node.id, **body.model_dump())
    session.add(staff)
    session.commit()
    return _staff_public(staff, node.code)


def check_grant(principal: Principal, node: NodeRow, role: str) -> None:
    """403 unless the token is entitled to the role's level, 422 for a role above its level
    (the rule: :func:`gateway.workorders.routing.grant_problem`)."""
    scope = principal.index.nodes[principal.scope_node_id]
    problem = grant_problem(role, node.level, scope.level)
    if problem is None:
        return
    kind, message = problem
    if kind == "placement":
        raise UnprocessableError(f"body.role: {message}; {node.code} is a {node.level}")
    raise ForbiddenError(message)


def _find_staff(session: Session, principal: Principal, code: str, staff_id: int) -> Staff:
    node = principal.node_in_scope(code)
    staff = session.get(Staff, staff_id)
    if staff is None or staff.node_id != node.id:
        raise NotInScopeError(f"staff entry {staff_id} not found at node {code!r}")
    return staff


@router.patch(
    "/{code}/staff/{staff_id}",
    summary="Update a staff entry",
    response_model=StaffPublic,
    responses=_NOT_FOUND,
)
def update_staff(
    code: str, staff_id: StaffId, body: StaffUpdate, principal: PrincipalDep, session: SessionDep
) -> StaffPublic:
    """Change name, role, e-mail or phone; fields left out stay as they are."""
    principal.require("staff", "write")
    staff = _find_staff(session, principal, code, staff_id)
    node = principal.node_in_scope(code)
    check_grant(principal, node, staff.role)
    if body.role is not None:
        check_grant(principal, node, body.role)
    for key, value in body.model_dump(exclude_unset=True).items():
        if value is not None or key in {"email", "phone"}:
            setattr(staff, key, value)
    session.commit()
    return _staff_public(staff, code)


@router.delete(
    "/{code}/staff/{staff_id}",
    summary="Remove a staff entry",
    status_code=204,
    responses=_NOT_FOUND,
)
def delete_staff(
    code: str, staff_id: StaffId, principal: PrincipalDep, session: SessionDep
) -> None:
    """Detach the person from the node."""
    principal.require("staff", "write")
    staff = _find_staff(session, principal, code, staff_id)
    check_grant(principal, principal.node_in_scope(code), staff.role)
    session.delete(staff)
    session.commit()
