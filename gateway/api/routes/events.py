"""The live event stream (server-sent events) of alerts and work orders, within the scope.

An event is sent to a token when a node code on its path (``path`` / ``node_path``, also
those of its ``alert`` or ``order``), or the node owning its order, lies inside the token's
scope. People notified about an event are listed in ``recipients``; a scoped token sees
only those attached inside its scope (others are outside it, like ``/nodes/{code}/staff``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from gateway.api.deps import HubDep, StreamPrincipalDep, codes_in_scope, path_codes
from gateway.api.errors import UnavailableError
from gateway.api.schemas import ErrorBody
from gateway.auth import Principal
from gateway.sse import SSE_HEADERS, Subscription, format_frame

router = APIRouter(
    prefix="/events",
    tags=["events"],
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
)
_PLACES = ("path", "node_path")


def event_codes(event: Mapping[str, Any]) -> list[str]:
    """Node codes an event is about: its paths and owner, and those of its alert or order."""
    codes: list[str] = []
    for part in (event, event.get("alert"), event.get("order")):
        if not isinstance(part, Mapping):
            continue
        for key in _PLACES:
            value = part.get(key)
            if isinstance(value, str | list | tuple):
                codes += path_codes(value)
        if isinstance(part.get("node"), str):
            codes.append(part["node"])
    return codes


def event_visible(principal: Principal, event: Mapping[str, Any]) -> bool:
    """Whether ``event`` is for the token (a root token gets every event)."""
    return principal.is_global or codes_in_scope(principal, event_codes(event))


def redacted(frame: bytes, principal: Principal) -> bytes:
    """The frame without the recipients attached outside the token's scope."""
    head, found, data = frame.partition(b"\ndata: ")
    if not found or not head.startswith(b"id: ") or b"\nevent: " not in head:
        return frame  # a comment or the retry hint
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:  # not from the hub's encoder: nothing to take out
        return frame
    recipients = event.get("recipients") if isinstance(event, dict) else None
    if not isinstance(recipients, list):
        return frame
    kept = [
        person
        for person in recipients
        if isinstance(person, dict) and codes_in_scope(principal, [str(person.get("node"))])
    ]
    if len(kept) == len(recipients):
        return frame
    event_id, _, kind = head[4:].decode().partition("\nevent: ")
    return format_frame(event_id, kind, orjson.dumps({**event, "recipients": kept}))


async def _frames(subscription: Subscription, principal: Principal) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(subscription.frames()) as frames:
        async for frame in frames:
            yield frame if principal.is_global else redacted(frame, principal)


@router.get(
    "/stream",
    summary="Live events (server-sent events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "an endless `text/event-stream` of `id`/`event`/`data` frames",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        503: {"model": ErrorBody},
    },
)
async def stream_events(
    principal: StreamPrincipalDep,
    hub: HubDep,
    last_event_id: Annotated[
        str | None,
        Header(max_length=128, description="resume after this event (sent by EventSource)"),
    ] = None,
) -> StreamingResponse:
    """Alert and work-order events as they happen, within the token's scope. Browsers'
    ``EventSource`` cannot send headers, so the token may come as ``?access_token=<token>``
    (keep such URLs out of logs). After a reconnect, ``Last-Event-ID`` replays what was
    missed while the gateway still holds it; idle streams get a keep-alive comment."""
    principal.require("alerts", "read")
    principal.require("work_orders", "read")
    try:
        subscription = hub.subscribe(lambda event: event_visible(principal, event), last_event_id)
    except RuntimeError as err:  # the hub serves another event loop than this server's
        raise UnavailableError(f"live events are not available here: {err}") from err
    return StreamingResponse(
        _frames(subscription, principal), media_type="text/event-stream", headers=SSE_HEADERS
    )
