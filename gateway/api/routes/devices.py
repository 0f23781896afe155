"""Devices: register (one or a bulk import), list, read, update, move, decommission, and
a device's dead letters and recent readings."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from devices import KINDS
from gateway.api import device_ops, importing
from gateway.api.auth import Principal
from gateway.api.context import ApiContext, DeviceStatus
from gateway.api.deps import ContextDep, PrincipalDep, SessionDep
from gateway.api.errors import UnavailableError, UnprocessableError
from gateway.api.schemas import (
    DeadLetterPublic,
    DeviceCreate,
    DeviceDetail,
    DeviceMove,
    DevicePage,
    DevicePublic,
    DeviceRegistered,
    DeviceUpdate,
    ErrorBody,
    ImportErrorBody,
    ImportResult,
    ReadingsPublic,
)
from gateway.storage.deadletter import DeadLetter

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/devices",
    tags=["devices"],
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
_CONFLICT: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, 409: {"model": ErrorBody}}
_BROKER: dict[int | str, dict[str, Any]] = {503: {"model": ErrorBody}}
_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceCreate"}}
            },
        },
    }
}


@router.get("", summary="List devices", response_model=DevicePage)
def list_devices(
    principal: PrincipalDep,
    session: SessionDep,
    kind: Annotated[str | None, Query(description="device kind, e.g. smoke")] = None,
    node: Annotated[str | None, Query(max_length=64, description="node code (and below)")] = None,
    status: Literal["active", "decommissioned"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DevicePage:
    """Devices inside the token's scope, by id, filtered by kind, node subtree and status."""
    principal.require("devices", "read")
    if kind is not None and kind not in KINDS:
        raise UnprocessableError(f"query.kind: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    return device_ops.page(session, principal, (kind, node, status), limit, offset)


@router.post(
    "",
    summary="Register a device",
    status_code=201,
    response_model=DeviceRegistered,
    responses={**_CONFLICT, **_BROKER},
)
def register_device(
    body: DeviceCreate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> DeviceRegistered:
    """Register one device. With a broker provisioner, the answer carries the device's
    MQTT login (user name = device id): it is shown this once and not kept."""
    principal.require("devices", "write")
    registered = device_ops.register(session, ctx, principal, [body])[0]
    ctx.device_changed(body.device_id)
    return registered


@router.post(
    "/import",
    summary="Import devices from CSV or a JSON array",
    status_code=201,
    response_model=ImportResult,
    responses={
        413: {"model": ErrorBody},
        415: {"model": ErrorBody},
        422: {"model": ImportErrorBody},
        **_CONFLICT,
        **_BROKER,
    },
    openapi_extra=_IMPORT_BODY,
)
async def import_devices(
    request: Request, principal: PrincipalDep, ctx: ContextDep
) -> ImportResult:
    """All or nothing: every row is checked first and a 422 lists each problem as
    ``{row, field, message}``. CSV columns: ``device_id,kind,model,codec,node,location,
    params,installed_at`` (params as ``key=value;key=value``)."""
    principal.require("devices", "write")
    rows = importing.parse_body(
        await request.body(),
        request.headers.get("content-type"),
        ctx.settings.api_max_import_bytes,
    )
    return await run_in_threadpool(_import_rows, ctx, principal, rows)


def _import_rows(ctx: ApiContext, principal: Principal, rows: list[Any]) -> ImportResult:
    with Session(ctx.engine) as session:
        creates, errors = importing.check_rows(session, principal, rows, ctx.reserved_ids())
        if errors:
            raise importing.refuse(errors)
        items = device_ops.register(session, ctx, principal, creates)
    ctx.device_changed(*(create.device_id for create in creates))
    return ImportResult(imported=len(items), items=items)


@router.get(
    "/{device_id}", summary="Get a device", response_model=DeviceDetail, responses=_NOT_FOUND
)
def get_device(
    device_id: str, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> DeviceDetail:
    """A device with last seen, online and battery where the gateway knows them."""
    principal.require("devices", "read")
    device = device_ops.find_device(session, principal, device_id)
    public = device_ops.to_public(device, principal.index)
    status = _status(ctx, device_id) or DeviceStatus()
    return DeviceDetail(
        **public.model_dump(),
        last_seen=status.last_seen,
        online=status.online,
        battery=status.battery,
    )


def _status(ctx: ApiContext, device_id: str) -> DeviceStatus | None:
    try:
        return ctx.status_source(device_id)
    except Exception:  # live status is best effort; the record is still served
        logger.warning("status source failed for %s", device_id, exc_info=True)
        return None


@router.patch(
    "/{device_id}", summary="Update a device", response_model=DevicePublic, responses=_CONFLICT
)
def update_device(
    device_id: str,
    body: DeviceUpdate,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
) -> DevicePublic:
    """Change model, location, install parameters or install date (use /move for the node)."""
    principal.require("devices", "write")
    device = device_ops.update(session, ctx, principal, device_id, body)
    ctx.device_changed(device_id)
    return device_ops.to_public(device, principal.index)


@router.post(
    "/{device_id}/move", summary="Move a device", response_model=DevicePublic, responses=_CONFLICT
)
def move_device(
    device_id: str, body: DeviceMove, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> DevicePublic:
    """Hang the device at another node; its topics and login stay the same."""
    principal.require("devices", "write")
    device = device_ops.move(session, ctx, principal, device_id, body.node)
    ctx.device_changed(device_id)
    return device_ops.to_public(device, principal.index)


@router.delete(
    "/{device_id}",
    summary="Decommission a device",
    response_model=DevicePublic,
    responses={**_NOT_FOUND, **_BROKER},
)
def decommission_device(
    device_id: str, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> DevicePublic:
    """Revoke the device's broker login and mark it decommissioned (history is kept)."""
    principal.require("devices", "write")
    device = device_ops.decommission(session, ctx, principal, device_id)
    ctx.device_changed(device_id)
    return device_ops.to_public(device, principal.index)


@router.get(
    "/{device_id}/dead-letters",
    summary="Dead letters of a device",
    response_model=list[DeadLetterPublic],
    responses=_NOT_FOUND,
)
def device_dead_letters(
    device_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[DeadLetterPublic]:
    """The device's rejected messages, newest first."""
    principal.require("devices", "read")
    device_ops.find_device(session, principal, device_id)
    query = (
        select(DeadLetter)
        .where(DeadLetter.device_id == device_id)
        .order_by(DeadLetter.id.desc())
        .limit(limit)
    )
    return [
        DeadLetterPublic(
            id=letter.id,
            received_at=letter.received_at,
            topic=letter.topic,
            reason=letter.reason,
            detail=letter.detail,
            payload_text=letter.payload[:4096].decode("utf-8", "replace"),
            payload_size=len(letter.payload),
            replayed_at=letter.replayed_at,
        )
        for letter in session.scalars(query)
    ]


@router.get(
    "/{device_id}/readings",
    summary="Recent readings of a device",
    response_model=ReadingsPublic,
    responses={**_NOT_FOUND, 503: {"model": ErrorBody}},
)
def device_readings(
    device_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    minutes: Annotated[int, Query(ge=1, le=7 * 24 * 60)] = 60,
) -> ReadingsPublic:
    """The device's points of the last ``minutes`` minutes from InfluxDB."""
    principal.require("devices", "read")
    device = device_ops.find_device(session, principal, device_id)
    if ctx.influx_reader is None:
        raise UnavailableError(
            "readings are not available: this API runs without an InfluxDB reader"
        )
    try:
        points = ctx.influx_reader(device_id, device.kind, minutes)
    except Exception as err:  # any reader failure means the store is unavailable to us
        logger.warning("readings of %s failed: %s", device_id, err)
        raise UnavailableError(f"InfluxDB query failed: {err}") from err
    return ReadingsPublic(
        device_id=device_id, kind=device.kind, minutes=minutes, points=[dict(p) for p in points]
    )
