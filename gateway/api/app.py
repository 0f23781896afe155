"""The FastAPI application: ``create_app(settings, engine, ...)``.

Nothing is created at import time; every runtime object is passed in and kept on
``app.state.ctx`` (see :class:`gateway.api.context.ApiContext`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import Engine

from gateway.alerting.alerts import AlertService
from gateway.alerting.rulestage import RuleStage
from gateway.api import errors
from gateway.api.bodyguard import BodyGuard
from gateway.api.context import (
    ApiContext,
    InfluxReader,
    MetricsSource,
    ReadinessSource,
    StatusSource,
    no_metrics,
    no_status,
)
from gateway.api.models import create_tables
from gateway.api.routes import alerts as alert_routes
from gateway.api.routes import device_types, devices, events, health, identity, nodes, workorders
from gateway.api.routes import rules as rule_routes
from gateway.core.config import Settings
from gateway.notify.live import EventHub
from gateway.provisioning.dynsec import Provisioner
from gateway.web.pages import mount_web
from gateway.workorders.lifecycle import WorkOrderService

TAGS = [
    {"name": "device types", "description": "Kinds of device: fields, codecs, schemas, rules."},
    {"name": "devices", "description": "Registered sensors and their broker credentials."},
    {"name": "nodes", "description": "The hierarchy and the staff at each node."},
    {
        "name": "rules",
        "description": "Alert rules. Rule definitions are gateway-wide: any token reads them "
        "whatever its scope; changing them needs admin or integrator and a root-scoped token.",
    },
    {"name": "alerts", "description": "Alerts raised by the rules, inside the token's scope."},
    {
        "name": "work orders",
        "description": "Jobs for people. Visible where the problem is (origin) and to the "
        "node that owns the order now (escalation moves it up).",
    },
    {"name": "events", "description": "Live alert and work-order events (server-sent events)."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
    {"name": "auth", "description": "The calling API token."},
]

DESCRIPTION = """\
REST API of the smart-community gateway for integrators and managers.

Every route except `/health*` needs `Authorization: Bearer <token>` (tokens are made
with `python -m gateway token create`). A token sees only its hierarchy node and what
hangs below it: anything else answers 404. A role without the permission answers 403.
Every 4xx carries `{"detail": "<what is wrong>"}`; a 503 says which collaborator is missing.

Scope of the operations side: rule definitions are not tied to a place (any token reads
them; only a root-scoped admin or integrator changes them), a dry-run reads only devices in
scope; alerts are placed at their device's node; a work order is visible in the scope of its
origin (where the problem is) and of its current owner; a live event is sent when a node on
its path is in scope. `GET /events/stream` also takes the token as `?access_token=` because
a browser's EventSource cannot set headers; it ends within seconds of its token being revoked
or changed.

A request body is read only after its token is checked (401 first), and at most 64 KiB by
default (8 MiB for `POST /devices/import`; 413 beyond). Staff roles are granted only by a token
scoped at the role's level or above (403), at the role's level or below (422).
"""


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    provisioner: Provisioner | None = None,
    influx_reader: InfluxReader | None = None,
    status_source: StatusSource = no_status,
    metrics_source: MetricsSource = no_metrics,
    readiness_source: ReadinessSource | None = None,
    rules: RuleStage | None = None,
    alerts: AlertService | None = None,
    orders: WorkOrderService | None = None,
    hub: EventHub | None = None,
    on_rules_changed: Callable[[], None] | None = None,
    on_device_changed: Callable[[str], None] | None = None,
    rules_dir: Path | None = None,
) -> FastAPI:
    """Build the API around ``engine`` and the injected collaborators.

    Without a ``provisioner`` devices are registered without broker credentials;
    without an ``influx_reader`` the readings and rule dry-run routes answer 503. The rule,
    alert, work-order and event routes answer 503 without ``rules``, ``alerts``, ``orders``
    and ``hub``; ``alerts``, ``orders`` and ``rules_dir`` default to those of ``rules``
    (a :class:`RuleStage` owns them). ``on_rules_changed`` is called from a worker thread
    after the API changed a file in ``rules_dir``: it must hand the reload to the
    gateway's loop (the gateway's own poll of the directory also picks changes up).
    """
    create_tables(engine)
    alerts = alerts or (rules.alerts if rules is not None else None)
    orders = orders or (alerts.orders if alerts is not None else None)
    if rules_dir is None and rules is not None:
        rules_dir = rules.site_dir
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
        readiness_source=readiness_source,
        rules=rules,
        alerts=alerts,
        orders=orders,
        hub=hub,
        on_rules_changed=on_rules_changed,
        on_device_changed=on_device_changed,
        rules_dir=rules_dir,
    )
    errors.install(app)
    app.add_middleware(BodyGuard, ctx=app.state.ctx)
    routers = (health, identity, device_types, devices, nodes)
    operations = (rule_routes, alert_routes, workorders, events)
    for module in (*routers, *operations):
        app.include_router(module.router)
    mount_web(app)
    return app
