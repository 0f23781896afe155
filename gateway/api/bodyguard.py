"""Authenticate before reading a request body, and never read more than the route allows.

FastAPI reads and parses a body before it resolves dependencies, so a token check in a
dependency comes too late: one unauthenticated 300 MB ``POST /devices`` was read whole
into the gateway process (which also runs ingest). This ASGI middleware sits in front of
the app. For a request that announces a body (``Content-Length`` above 0, or any
``Transfer-Encoding``, chunked included):

1. the token (``Authorization: Bearer``, or ``?access_token=`` like the event stream) must
   be valid, else 401 before a byte of the body is read;
2. a declared ``Content-Length`` above the route's bound is a 413 at once;
3. the body is read in chunks, at most the bound (a chunked body without a length is cut
   off with a 413 as soon as it passes it) and within ``api_body_timeout_s`` (else 408);
   only then is the app called, with the body replayed to it.

Every refusal closes the connection (``Connection: close``), so the rest of a large upload
is not read. The bound is ``api_max_import_bytes`` for ``POST /devices/import`` (CSV or a
JSON array of up to 10,000 devices) and ``api_max_body_bytes`` for every other route (JSON
bodies of a few hundred bytes). The principal found here is handed to the route, which
does not authenticate twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import orjson
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from gateway.api.auth import NotAuthenticatedError, Principal, authenticate
from gateway.api.context import ApiContext

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PRINCIPAL_KEY = "scc.principal"  # the scope entry carrying the principal to the route
IMPORT_PATHS = frozenset({"/devices/import"})


class RefusedError(Exception):
    """A request refused before the app saw it: status, message and extra headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def principal_of(scope: Scope) -> Principal | None:
    """The principal the guard authenticated for this request, if it did."""
    found = scope.get(PRINCIPAL_KEY)
    return found if isinstance(found, Principal) else None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _token(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth is not None:
        scheme, _, credentials = auth.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else None
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    values = query.get("access_token")
    return values[0] if values else None


def _declared_length(scope: Scope) -> int | None:
    """The body's declared length; None when it has none (chunked). Raises on garbage."""
    text = _header(scope, b"content-length")
    if text is None:
        return None
    if not text.strip().isdigit():
        raise RefusedError(400, f"Content-Length {text[:40]!r} is not a number")
    return int(text)


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a length above 0, or a transfer coding)."""
    if _header(scope, b"transfer-encoding") is not None:
        return True
    length = _header(scope, b"content-length")
    return length is not None and length.strip() not in {"", "0"}


class BodyGuard:
    """The middleware (see the module docstring); ``ctx`` gives the database and settings."""

    def __init__(self, app: ASGIApp, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx

    def limit_for(self, scope: Scope) -> int:
        """The body bound of the request's route."""
        settings = self.ctx.settings
        if str(scope.get("path", "")).rstrip("/") in IMPORT_PATHS:
            return settings.api_max_import_bytes
        return settings.api_max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard an HTTP request that carries a body; pass everything else through."""
        if scope.get("type") != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        try:
            scope[PRINCIPAL_KEY] = await self._authenticate(scope)
            body = await self._read(scope, receive)
        except RefusedError as refused:
            await _refuse(send, refused)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _authenticate(self, scope: Scope) -> Principal:
        token = _token(scope)
        try:
            return await run_in_threadpool(self._principal, token)
        except NotAuthenticatedError as err:
            raise RefusedError(401, str(err), {"WWW-Authenticate": "Bearer"}) from err

    def _principal(self, token: str | None) -> Principal:
        with Session(self.ctx.engine) as session:
            return authenticate(session, token)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.limit_for(scope)
        declared = _declared_length(scope)
        where = f"{scope.get('method', '')} {scope.get('path', '')}"
        if declared is not None and declared > limit:
            raise RefusedError(
                413, f"request body is {declared} bytes; {where} takes at most {limit}"
            )
        try:
            async with asyncio.timeout(self.ctx.settings.api_body_timeout_s):
                return await _read_bounded(receive, limit, where)
        except TimeoutError as err:
            seconds = self.ctx.settings.api_body_timeout_s
            raise RefusedError(408, f"request body not received within {seconds:g} s") from err


async def _read_bounded(receive: Receive, limit: int, where: str) -> bytes:
    """The whole body, or :class:`RefusedError` (413) once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:  # bounded: each round takes a chunk, and the total is capped at ``limit``
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RefusedError(400, "the client went away before sending the whole body")
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise RefusedError(
                413, f"request body passed {limit} bytes; {where} takes at most {limit}"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body read already, then the real channel
    (so a streaming response still hears the client disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(send: Send, refused: RefusedError) -> None:
    if refused.status >= 413 or refused.status == 408:
        logger.info("request refused before its body: %d %s", refused.status, refused.detail)
    content = orjson.dumps({"detail": refused.detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),  # the rest of the body is not read
        *((k.lower().encode(), v.encode()) for k, v in refused.headers.items()),
    ]
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
