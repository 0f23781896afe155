"""Dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from gateway.api.context import ApiContext
from gateway.auth import Principal, authenticate

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="scc_<prefix>_<secret>",
    description="An API token made with `python -m gateway token create`.",
)


def get_context(request: Request) -> ApiContext:
    """The app's runtime objects."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[ApiContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    """A database session for one request."""
    with Session(ctx.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from ``Authorization: Bearer <token>`` (401 without a valid one)."""
    principal = authenticate(session, credentials.credentials if credentials else None)
    session.rollback()  # end the read transaction; handlers start their own
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
