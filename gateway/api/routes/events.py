"""The live event stream (server-sent events) of alerts and work orders, within the scope.

An event is sent to a token when a node code on its path (``path`` / ``node_path``, also
those of its ``alert`` or ``order``), or the node owning its order, lies inside the token's
scope. People notified about an event are listed in ``recipients``; a scoped token sees
only those attached inside its scope (others are outside it, like ``/nodes/{code}/staff``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from gateway.api.auth import Principal, token_problem
from gateway.api.context import ApiContext
from gateway.api.deps import ContextDep, HubDep, StreamPrincipalDep, codes_in_scope, path_codes
from gateway.api.errors import UnavailableError
from gateway.api.schemas import ErrorBody
from gateway.notify.live import SSE_HEADERS, Subscription, format_frame

logger = logging.getLogger(__name__)

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


class TokenWatch:
    """Ends a stream within ``every_s`` seconds of its token being revoked or changed.

    The token is re-read from the database (where ``gateway token revoke`` writes, from
    another process) every ``every_s`` seconds. If the check itself keeps failing, the
    stream ends too, after :attr:`MAX_FAILURES` tries: access that cannot be verified is
    not kept open."""

    MAX_FAILURES = 5

    def __init__(self, ctx: ApiContext, principal: Principal) -> None:
        self.ctx, self.principal = ctx, principal
        self.every_s = ctx.settings.api_token_recheck_s

    def problem(self) -> str | None:
        """Why the stream must end now (runs on a worker thread), or None."""
        with Session(self.ctx.engine) as session:
            return token_problem(session, self.principal)

    async def run(self, subscription: Subscription) -> None:
        """Check until the token is no longer good, then stop ``subscription``."""
        failures = 0
        while failures < self.MAX_FAILURES:  # bounded: ends the stream or is cancelled
            await asyncio.sleep(self.every_s)
            try:
                problem = await run_in_threadpool(self.problem)
                failures = 0
            except Exception:  # a locked or unreachable database: retried, then fail closed
                failures += 1
                logger.warning("event stream: token check failed", exc_info=True)
                continue
            if problem is not None:
                break
        else:
            problem = "the API token could not be checked"
        logger.info("event stream of token %s ended: %s", self.principal.token_prefix, problem)
        subscription.stop(problem)


async def _frames(subscription: Subscription, watch: TokenWatch) -> AsyncIterator[bytes]:
    principal = watch.principal
    watcher = asyncio.create_task(watch.run(subscription), name="sse-token-watch")
    try:
        async with contextlib.aclosing(subscription.frames()) as frames:
            async for frame in frames:
                yield frame if principal.is_global else redacted(frame, principal)
    finally:
        watcher.cancel()


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
    ctx: ContextDep,
    last_event_id: Annotated[
        str | None,
        Header(max_length=128, description="resume after this event (sent by EventSource)"),
    ] = None,
) -> StreamingResponse:
    """Alert and work-order events as they happen, within the token's scope. Browsers'
    ``EventSource`` cannot send headers, so the token may come as ``?access_token=<token>``
    (keep such URLs out of logs). After a reconnect, ``Last-Event-ID`` replays what was
    missed while the gateway still holds it; idle streams get a keep-alive comment. The
    stream ends within a few seconds (``api_token_recheck_s``) once its token is revoked or
    its role or scope changes, with a last comment saying why."""
    principal.require("alerts", "read")
    principal.require("work_orders", "read")
    try:
        subscription = hub.subscribe(lambda event: event_visible(principal, event), last_event_id)
    except RuntimeError as err:  # the hub serves another event loop than this server's
        raise UnavailableError(f"live events are not available here: {err}") from err
    return StreamingResponse(
        _frames(subscription, TokenWatch(ctx, principal)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
