"""Errors translated at the boundary: every 4xx is ``{"detail": "<what is wrong>"}``.

Request validation errors become a 422 whose ``detail`` names each bad field (and whose
``errors`` list them); access errors from :mod:`gateway.api.auth` become 401/403/404; a broker
login the gateway may not take is a 409 (someone else's) or 422 (a reserved name); a
failing broker or time-series store becomes 503. Anything unexpected is logged and
answered with a 500 that says no more than that.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.auth import AuthError, ForbiddenError, NotAuthenticatedError, NotInScopeError
from gateway.provisioning.dynsec import DynsecError, LoginConflictError, ReservedLoginError

logger = logging.getLogger(__name__)

_AUTH_STATUS: dict[type[AuthError], int] = {
    NotAuthenticatedError: 401,
    ForbiddenError: 403,
    NotInScopeError: 404,
}
_MAX_ERRORS = 50


class ApiError(Exception):
    """An error with an HTTP status and a message for the caller."""

    status_code = 400

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class ConflictError(ApiError):
    """The request clashes with the current state (409)."""

    status_code = 409


class UnprocessableError(ApiError):
    """The request is well-formed but its content is refused (422)."""

    status_code = 422


class TooLargeError(ApiError):
    """The request body is too large (413)."""

    status_code = 413


class UnsupportedMediaError(ApiError):
    """The request body has a content type this route does not read (415)."""

    status_code = 415


class UnavailableError(ApiError):
    """A collaborator (broker, InfluxDB) is missing or failing (503)."""

    status_code = 503


def _loc_text(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _validation_items(exc: RequestValidationError) -> list[dict[str, Any]]:
    items = []
    for error in list(exc.errors())[:_MAX_ERRORS]:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        items.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type"))})
    return items


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """422 whose ``detail`` reads e.g. ``body.kind: Value error, unknown kind; …``."""
    items = _validation_items(exc)
    detail = "; ".join(f"{_loc_text(item['loc'])}: {item['msg']}" for item in items)
    return JSONResponse({"detail": detail or "invalid request", "errors": items}, status_code=422)


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc)


async def _on_http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _on_auth(_request: Request, exc: Exception) -> JSONResponse:
    status = next((code for cls, code in _AUTH_STATUS.items() if isinstance(exc, cls)), 403)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _on_api(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status_code)


async def _on_dynsec(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("broker provisioning failed: %s", exc)
    return JSONResponse({"detail": f"the MQTT broker could not be updated: {exc}"}, status_code=503)


async def _on_login_refused(_request: Request, exc: Exception) -> JSONResponse:
    # The broker is fine; the name is not the device's to take (409) or not a device's (422).
    status = 409 if isinstance(exc, LoginConflictError) else 422
    logger.warning("broker login refused: %s", exc)
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; see the gateway log"}, status_code=500)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(AuthError, _on_auth)
    app.add_exception_handler(ApiError, _on_api)
    app.add_exception_handler(DynsecError, _on_dynsec)
    app.add_exception_handler(LoginConflictError, _on_login_refused)
    app.add_exception_handler(ReservedLoginError, _on_login_refused)
    app.add_exception_handler(Exception, _on_unexpected)
