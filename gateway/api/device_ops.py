"""Device operations behind the devices router: scope checks, writes, provisioning.

Registration writes the row and provisions broker credentials in one unit: the row is
committed only after the broker accepted the login, and a login whose row could not be
committed is revoked again, so neither exists without the other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.api.auth import NodeIndex, NotInScopeError, Principal
from gateway.api.context import ApiContext
from gateway.api.errors import ConflictError, UnprocessableError
from gateway.api.schemas import (
    DeviceCreate,
    DevicePage,
    DevicePublic,
    DeviceRegistered,
    DeviceUpdate,
    MqttCredentials,
)
from gateway.provisioning.dynsec import Credentials, DynsecError, Provisioner
from gateway.registry.device_ids import device_id_problem
from gateway.registry.models import Device

logger = logging.getLogger(__name__)

DECOMMISSIONED = "decommissioned"


def to_public(device: Device, index: NodeIndex) -> DevicePublic:
    """The public shape of a device row."""
    path = [node.code for node in index.path(device.node_id)]
    return DevicePublic(
        device_id=device.device_id,
        kind=device.kind,
        model=device.model,
        codec=device.codec,
        node=path[-1] if path else "",
        path=path,
        location=device.location,
        params=dict(device.params or {}),
        installed_at=device.installed_at,
        status=device.status,
        created_at=device.created_at,
    )


def _credentials(creds: Credentials | None) -> MqttCredentials | None:
    if creds is None:
        return None
    return MqttCredentials(
        username=creds.username,
        password=creds.password,
        client_id=creds.client_id or creds.username,
        publish_topics=list(creds.publish_topics),
        command_topic=creds.command_topic,
    )


def find_device(session: Session, principal: Principal, device_id: str) -> Device:
    """The device if it exists inside the caller's scope, else :class:`NotInScopeError`."""
    device = session.get(Device, device_id) if len(device_id) <= 128 else None
    if device is None or not principal.sees(device.node_id):
        raise NotInScopeError(f"device {device_id!r} not found")
    return device


def check_id(ctx: ApiContext, device_id: str, where: str = "path.device_id") -> None:
    """A 422 unless ``device_id`` is a valid device id that no broker name of ours takes."""
    problem = device_id_problem(device_id, ctx.reserved_ids())
    if problem is not None:
        raise UnprocessableError(f"{where}: {problem}")


def find_active(session: Session, principal: Principal, device_id: str) -> Device:
    """Like :func:`find_device`, but a decommissioned device is a 409."""
    device = find_device(session, principal, device_id)
    if device.status == DECOMMISSIONED:
        raise ConflictError(
            f"device {device_id!r} is decommissioned; register a new device instead"
        )
    return device


def existing_ids(session: Session, device_ids: Sequence[str]) -> list[str]:
    """Those of ``device_ids`` that are registered already (decommissioned ones too)."""
    found: list[str] = []
    for start in range(0, len(device_ids), 500):
        chunk = list(device_ids[start : start + 500])
        found += session.scalars(select(Device.device_id).where(Device.device_id.in_(chunk)))
    return sorted(found)


def new_device(body: DeviceCreate, node_id: int) -> Device:
    """A device row from a validated create body."""
    return Device(
        device_id=body.device_id,
        kind=body.kind,
        model=body.model,
        codec=body.codec,
        node_id=node_id,
        location=body.location,
        params=dict(body.params),
        installed_at=body.installed_at.isoformat() if body.installed_at else None,
        status="active",
    )


def register(
    session: Session, ctx: ApiContext, principal: Principal, bodies: Sequence[DeviceCreate]
) -> list[DeviceRegistered]:
    """Insert devices (already checked), provision their logins, commit; all or nothing."""
    for body in bodies:
        check_id(ctx, body.device_id, "body.device_id")
    rows = [new_device(body, principal.node_in_scope(body.node).id) for body in bodies]
    taken = existing_ids(session, [row.device_id for row in rows])
    if taken:
        raise ConflictError(f"device {taken[0]!r} is already registered")
    session.add_all(rows)
    try:
        session.flush()
    except IntegrityError as err:
        session.rollback()
        raise ConflictError("a device with one of these ids is already registered") from err
    logins = provision_all(ctx.provisioner, [row.device_id for row in rows])
    try:
        session.commit()
    except Exception:
        revoke_quietly(ctx.provisioner, list(logins))
        raise
    return [
        DeviceRegistered(
            device=to_public(row, principal.index),
            credentials=_credentials(logins.get(row.device_id)),
        )
        for row in rows
    ]


def provision_all(provisioner: Provisioner | None, device_ids: list[str]) -> dict[str, Credentials]:
    """Credentials for every device, or none at all (those made are revoked on failure)."""
    if provisioner is None:
        return {}
    made: dict[str, Credentials] = {}
    try:
        for device_id in device_ids:
            made[device_id] = provisioner.create(device_id)
    except DynsecError:
        revoke_quietly(provisioner, list(made))
        raise
    return made


def revoke_quietly(provisioner: Provisioner | None, device_ids: list[str]) -> None:
    """Best-effort clean-up after a failure that is already being reported."""
    if provisioner is None:
        return
    for device_id in device_ids:
        with contextlib.suppress(DynsecError):
            provisioner.revoke(device_id)


def update(
    session: Session, ctx: ApiContext, principal: Principal, device_id: str, body: DeviceUpdate
) -> Device:
    """Apply the fields given in ``body``."""
    check_id(ctx, device_id)
    device = find_active(session, principal, device_id)
    given = body.model_fields_set
    if "model" in given and body.model is not None:
        device.model = body.model
    if "location" in given and body.location is not None:
        device.location = body.location
    if "params" in given and body.params is not None:
        device.params = dict(body.params)
    if "installed_at" in given:
        device.installed_at = body.installed_at.isoformat() if body.installed_at else None
    session.commit()
    return device


def move(
    session: Session, ctx: ApiContext, principal: Principal, device_id: str, node_code: str
) -> Device:
    """Hang the device at another node (both places must be in scope)."""
    check_id(ctx, device_id)
    device = find_active(session, principal, device_id)
    device.node_id = principal.node_in_scope(node_code).id
    session.commit()
    return device


def decommission(session: Session, ctx: ApiContext, principal: Principal, device_id: str) -> Device:
    """Revoke the device's own broker login first, then mark the device decommissioned.

    A row whose id is not a device's (left from before ids were checked, e.g. one named
    like the gateway's login) is decommissioned without touching the broker: that login
    is not the device's to revoke."""
    device = find_device(session, principal, device_id)
    problem = device_id_problem(device_id, ctx.reserved_ids())
    if problem is not None:
        logger.warning("decommissioning %r without touching the broker: %s", device_id, problem)
    elif ctx.provisioner is not None:
        ctx.provisioner.revoke(device_id)
    device.status = DECOMMISSIONED
    session.commit()
    logger.info("device %s decommissioned by token %s", device_id, principal.token_prefix)
    return device


def page(
    session: Session,
    principal: Principal,
    filters: tuple[str | None, str | None, str | None],
    limit: int,
    offset: int,
) -> DevicePage:
    """One page of in-scope devices filtered by (kind, node subtree, status)."""
    kind, node, status = filters
    node_ids = principal.node_ids
    if node is not None:
        node_ids = principal.index.subtree(principal.node_in_scope(node).id)
    where: list[ColumnElement[bool]] = [Device.node_id.in_(sorted(node_ids))]
    if kind is not None:
        where.append(Device.kind == kind)
    if status is not None:
        where.append(Device.status == status)
    total = session.scalar(select(func.count()).select_from(Device).where(*where)) or 0
    query = select(Device).where(*where).order_by(Device.device_id).limit(limit).offset(offset)
    items = [to_public(device, principal.index) for device in session.scalars(query)]
    return DevicePage(items=items, total=total, limit=limit, offset=offset)
