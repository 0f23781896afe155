"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway.api.auth import ForbiddenError
from gateway.api.deps import ContextDep, PrincipalDep
from gateway.api.schemas import ErrorBody, Liveness
from gateway.core.metrics import Sample, prometheus_text

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/health", summary="Liveness", response_model=Liveness)
def liveness() -> Liveness:
    """The process answers (no token needed)."""
    return Liveness()


class ReadinessBody(BaseModel):
    """``ok`` when the database answers and every part of ingest works; otherwise
    ``not ready``, with each part's state in ``checks`` and the reasons in ``detail``."""

    status: str
    database: str
    checks: dict[str, str] | None = None
    detail: str | None = None


@router.get(
    "/health/ready",
    summary="Readiness",
    response_model=ReadinessBody,
    response_model_exclude_none=True,
    responses={503: {"model": ReadinessBody}},
)
def readiness(ctx: ContextDep) -> ReadinessBody | JSONResponse:
    """No token needed. 503 naming every part that fails: the database, and in the gateway
    process the MQTT session, persisting (database commits, spool appends), InfluxDB
    (no successful write for ``influx_stall_s`` while data waits) and its threads."""
    database = "ok"
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        logger.warning("readiness: database unavailable: %s", err)
        database = f"database unavailable: {type(err).__name__}"
    checks = dict(ctx.readiness_source()) if ctx.readiness_source is not None else None
    reasons = [] if database == "ok" else [database]
    reasons += [f"{part}: {state}" for part, state in (checks or {}).items() if state != "ok"]
    if not reasons:
        return ReadinessBody(status="ok", database=database, checks=checks)
    body = ReadinessBody(
        status="not ready", database=database, checks=checks, detail="; ".join(reasons)
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=503)


def render_metrics(values: dict[str, float]) -> str:
    """Prometheus text for ``name`` or ``name{label="v",...}`` → value; names ending
    ``_total`` are counters."""
    samples = []
    for key, value in sorted(values.items()):
        name, _, rest = key.partition("{")
        labels = _parse_labels(rest) if rest else ()
        if not _METRIC_NAME.match(name) or labels is None or not isinstance(value, int | float):
            logger.debug("skipping metric %r: bad name, labels or value", key)
            continue
        kind = "counter" if name.endswith("_total") else "gauge"
        samples.append(Sample(name, value, labels, kind=kind))
    return prometheus_text(samples) if samples else ""


_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
_LABELS = re.compile(rf"(?:{_LABEL}(?:,{_LABEL})*)?")
_ONE_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _parse_labels(text: str) -> tuple[tuple[str, str], ...] | None:
    """``a="x",b="y"}`` → pairs, unescaped (None when malformed)."""
    if not text.endswith("}") or not _LABELS.fullmatch(text[:-1]):
        return None
    return tuple(
        (m.group(1), m.group(2).replace('\\"', '"').replace("\\\\", "\\"))
        for m in _ONE_LABEL.finditer(text[:-1])
    )


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
