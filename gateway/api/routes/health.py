"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway.api.deps import ContextDep, PrincipalDep
from gateway.api.errors import UnavailableError
from gateway.api.schemas import ErrorBody, Liveness, Readiness
from gateway.auth import ForbiddenError
from gateway.metrics import Sample, prometheus_text

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/health", summary="Liveness", response_model=Liveness)
def liveness() -> Liveness:
    """The process answers (no token needed)."""
    return Liveness()


@router.get(
    "/health/ready",
    summary="Readiness",
    response_model=Readiness,
    responses={503: {"model": ErrorBody}},
)
def readiness(ctx: ContextDep) -> Readiness:
    """The database answers a query (no token needed); 503 when it does not."""
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        logger.warning("readiness: database unavailable: %s", err)
        raise UnavailableError(f"database unavailable: {type(err).__name__}") from err
    return Readiness(status="ok", database="ok")


def render_metrics(values: dict[str, float]) -> str:
    """Prometheus text for name → value; names ending ``_total`` are counters."""
    samples = []
    for name, value in sorted(values.items()):
        if not _METRIC_NAME.match(name) or not isinstance(value, int | float):
            logger.debug("skipping metric %r: bad name or value", name)
            continue
        kind = "counter" if name.endswith("_total") else "gauge"
        samples.append(Sample(name, value, kind=kind))
    return prometheus_text(samples) if samples else ""


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {PROMETHEUS_TYPE: {}}},
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
    },
)
def metrics(principal: PrincipalDep, ctx: ContextDep) -> PlainTextResponse:
    """Gateway-wide counters in Prometheus text format. They cover the whole fleet, so
    they need a token scoped at the root of the hierarchy."""
    principal.require("metrics", "read")
    if not principal.is_global:
        raise ForbiddenError(
            "metrics are gateway-wide: they need a token scoped at the street root"
        )
    body = render_metrics(dict(ctx.metrics_source()))
    return PlainTextResponse(body, media_type=PROMETHEUS_TYPE)
