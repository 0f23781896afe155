"""Dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from gateway.alerting.alerts import AlertService
from gateway.alerting.rulestage import RuleStage
from gateway.api.auth import Principal, authenticate
from gateway.api.bodyguard import principal_of
from gateway.api.context import ApiContext
from gateway.api.errors import UnavailableError
from gateway.notify.live import EventHub
from gateway.workorders.lifecycle import WorkOrderService

T = TypeVar("T")

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
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _principal(session: Session, token: str | None) -> Principal:
    principal = authenticate(session, token)
    session.rollback()  # end the read transaction; handlers start their own
    return principal


def get_principal(request: Request, session: SessionDep, credentials: BearerDep) -> Principal:
    """The caller, from ``Authorization: Bearer <token>`` (401 without a valid one); for a
    request with a body, the one the body guard authenticated before reading it."""
    checked = principal_of(request.scope)
    if checked is not None:
        return checked
    return _principal(session, credentials.credentials if credentials else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_stream_principal(
    session: SessionDep,
    credentials: BearerDep,
    access_token: Annotated[
        str | None,
        Query(
            max_length=256,
            description="The API token, for clients that cannot send headers (a browser's "
            "EventSource); `Authorization` wins when both are given.",
        ),
    ] = None,
) -> Principal:
    """The caller, from ``Authorization: Bearer`` or else ``?access_token=``."""
    return _principal(session, credentials.credentials if credentials else access_token)


StreamPrincipalDep = Annotated[Principal, Depends(get_stream_principal)]


def _present(service: T | None, what: str) -> T:
    if service is None:
        raise UnavailableError(f"{what} are not available: this API runs without them")
    return service


def get_rule_stage(ctx: ContextDep) -> RuleStage:
    """The gateway's running rules (503 when the API runs without them)."""
    return _present(ctx.rules, "rules")


def get_alert_service(ctx: ContextDep) -> AlertService:
    """The alert service (503 when the API runs without it)."""
    return _present(ctx.alerts, "alerts")


def get_order_service(ctx: ContextDep) -> WorkOrderService:
    """The work-order service (503 when the API runs without it)."""
    return _present(ctx.orders, "work orders")


def get_hub(ctx: ContextDep) -> EventHub:
    """The live event hub (503 when the API runs without it)."""
    return _present(ctx.hub, "live events")


RuleStageDep = Annotated[RuleStage, Depends(get_rule_stage)]
AlertsDep = Annotated[AlertService, Depends(get_alert_service)]
OrdersDep = Annotated[WorkOrderService, Depends(get_order_service)]
HubDep = Annotated[EventHub, Depends(get_hub)]


def path_codes(path: str | Iterable[str] | None) -> list[str]:
    """Node codes of a path: ``"/ST1/SQ1/G1/"``, ``"ST1/SQ1/G1"`` or a list of codes."""
    if path is None:
        return []
    parts = path.split("/") if isinstance(path, str) else path
    return [code for code in parts if isinstance(code, str) and code]


def codes_in_scope(principal: Principal, codes: Iterable[str]) -> bool:
    """Whether any of the node ``codes`` lies inside the token's scope."""
    by_code = principal.index.by_code
    return any(principal.sees(by_code.get(code)) for code in codes)


def in_scope(principal: Principal, path: str | None, *node_ids: int | None) -> bool:
    """Whether a row placed at ``path`` (``/ST1/…/``) or at any of ``node_ids`` is visible."""
    if principal.is_global:
        return True
    return codes_in_scope(principal, path_codes(path)) or any(map(principal.sees, node_ids))


def place_clause(
    principal: Principal,
    node: str | None,
    path_column: ColumnElement[str] | InstrumentedAttribute[str],
    *node_columns: InstrumentedAttribute[int | None],
) -> ColumnElement[bool] | None:
    """SQL for "in the token's scope and at or under ``node``", the twin of :func:`in_scope`.

    A row is in when its path holds the node's code or one of ``node_columns`` is a node of
    the subtree. None for a root token without ``node``: it sees every row, unplaced ones too.
    """
    if node is None and principal.is_global:
        return None
    top = principal.node_in_scope(node) if node is not None else None
    code = top.code if top is not None else principal.scope_code
    ids = sorted(principal.index.subtree(top.id) if top is not None else principal.node_ids)
    return or_(
        path_column.contains(f"/{code}/", autoescape=True),
        *(column.in_(ids) for column in node_columns),
    )
