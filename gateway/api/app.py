"""The FastAPI application: ``create_app(settings, engine, ...)``.

Nothing is created at import time; every runtime object is passed in and kept on
``app.state.ctx`` (see :class:`gateway.api.context.ApiContext`).
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine

from gateway.api import errors
from gateway.api.context import (
    ApiContext,
    InfluxReader,
    MetricsSource,
    StatusSource,
    no_metrics,
    no_status,
)
from gateway.api.routes import device_types, devices, health, identity, nodes
from gateway.api_models import create_tables
from gateway.config import Settings
from gateway.dynsec import Provisioner

TAGS = [
    {"name": "device types", "description": "Kinds of device: fields, codecs, schemas, rules."},
    {"name": "devices", "description": "Registered sensors and their broker credentials."},
    {"name": "nodes", "description": "The hierarchy and the staff at each node."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
    {"name": "auth", "description": "The calling API token."},
]

DESCRIPTION = """\
REST API of the smart-community gateway for integrators and managers.

Every route except `/health*` needs `Authorization: Bearer <token>` (tokens are made
with `python -m gateway token create`). A token sees only its hierarchy node and what
hangs below it: anything else answers 404. A role without the permission answers 403.
Every 4xx carries `{"detail": "<what is wrong>"}`.
"""


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    provisioner: Provisioner | None = None,
    influx_reader: InfluxReader | None = None,
    status_source: StatusSource = no_status,
    metrics_source: MetricsSource = no_metrics,
) -> FastAPI:
    """Build the API around ``engine`` and the injected collaborators.

    Without a ``provisioner`` devices are registered without broker credentials;
    without an ``influx_reader`` the readings route answers 503.
    """
    create_tables(engine)
    app = FastAPI(
        title="smart-community-gateway",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
    )
    app.state.ctx = ApiContext(
        settings=settings,
        engine=engine,
        provisioner=provisioner,
        influx_reader=influx_reader,
        status_source=status_source,
        metrics_source=metrics_source,
    )
    errors.install(app)
    for module in (health, identity, device_types, devices, nodes):
        app.include_router(module.router)
    return app
