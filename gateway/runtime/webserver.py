"""Serves the REST API and pages from the gateway process, sharing its event loop.

The API gets the gateway's live objects: device status from the pipeline, metrics from
the counters, the rule stage, alert and work-order services, and the SSE hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from devices import load_kind
from gateway.alerting.rulestage import RuleStage
from gateway.api.app import create_app
from gateway.api.context import DeviceStatus
from gateway.core.config import Settings
from gateway.core.metrics import Sample, label_text
from gateway.ingest.pipeline import Pipeline
from gateway.notify.live import EventHub
from gateway.provisioning.dynsec import DynsecProvisioner, Provisioner
from gateway.registry.device_ids import reserved_for
from gateway.runtime.readiness import Report
from gateway.services.base import ServiceError
from gateway.services.influxdb import influx_query

log = logging.getLogger(__name__)


class ServedGateway(Protocol):
    """What the API reads of the running gateway and calls on it (``runtime.service.Gateway``
    is one; this module does not import it, which imports this one when it serves the API)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def rules(self) -> RuleStage: ...
    @property
    def hub(self) -> EventHub: ...
    def samples(self) -> list[Sample]:
        """Every counter and gauge of the gateway."""
        ...

    def readiness(self) -> Report:
        """Whether every part ingest needs works."""
        ...

    def reload_rules_now(self) -> None:
        """Reload the site rules at once."""
        ...

    def device_changed(self, device_id: str) -> None:
        """The registry changed for a device."""
        ...


_IDENT_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


class InfluxV1Reader:
    """A device's recent points through InfluxQL (InfluxDB 1.x, or 2.x/3.x v1 API)."""

    def __init__(self, url: str, database: str) -> None:
        self.url = url
        self.database = database

    def __call__(self, device_id: str, kind: str, minutes: int) -> Sequence[Mapping[str, Any]]:
        """Points of the last ``minutes`` minutes, oldest first."""
        if not set(device_id) <= _IDENT_OK or not set(kind) <= _IDENT_OK:
            raise ValueError("device id or kind has characters InfluxQL would need escaped")
        query = (
            f'SELECT * FROM "{kind}" WHERE "device_id" = \'{device_id}\' '  # noqa: S608 - checked
            f"AND time > now() - {int(minutes)}m ORDER BY time ASC LIMIT 10000"
        )
        try:
            body = influx_query(self.url, query, db=self.database, timeout=10)
        except ServiceError as err:
            raise RuntimeError(f"InfluxDB query failed: {err}") from err
        out: list[dict[str, Any]] = []
        for series in body["results"][0].get("series", []):
            columns = series["columns"]
            out += [dict(zip(columns, values, strict=True)) for values in series["values"]]
        return out


def status_source(gateway: ServedGateway) -> Any:
    """Last seen and online state of a device, from what the pipeline received."""

    def status(device_id: str) -> DeviceStatus | None:
        seen_ns = gateway.pipeline.last_seen.get(device_id)
        if seen_ns is None:
            return None
        info = gateway.pipeline.known(device_id)
        heartbeat = load_kind(info.kind).heartbeat_s if info else 3600
        age_s = (datetime.now(UTC).timestamp() * 1e9 - seen_ns) / 1e9
        return DeviceStatus(
            last_seen=datetime.fromtimestamp(seen_ns / 1e9, UTC),
            online=age_s <= 2 * heartbeat,
        )

    return status


def metrics_source(gateway: ServedGateway) -> Any:
    """The gateway's samples keyed by Prometheus name with labels."""

    def metrics() -> Mapping[str, float]:
        return {f"{s.name}{label_text(s.labels)}": float(s.value) for s in gateway.samples()}

    return metrics


def build_app(gateway: ServedGateway) -> FastAPI:
    """The API around a running gateway."""
    settings = gateway.settings
    provisioner: Provisioner | None = None
    if settings.mqtt_admin_username and settings.mqtt_admin_password:
        provisioner = DynsecProvisioner.connect(
            settings.mqtt_host,
            settings.mqtt_port,
            settings.mqtt_admin_username,
            settings.mqtt_admin_password,
            reserved=reserved_for(settings),
        )
    loop = asyncio.get_running_loop()

    def on_rules_changed() -> None:
        loop.call_soon_threadsafe(gateway.reload_rules_now)

    def on_device_changed(device_id: str) -> None:
        loop.call_soon_threadsafe(gateway.device_changed, device_id)

    return create_app(
        settings,
        gateway.engine,
        provisioner=provisioner,
        influx_reader=InfluxV1Reader(settings.influx_url, settings.influx_database),
        status_source=status_source(gateway),
        metrics_source=metrics_source(gateway),
        readiness_source=lambda: gateway.readiness().checks,
        rules=gateway.rules,
        hub=gateway.hub,
        on_rules_changed=on_rules_changed,
        on_device_changed=on_device_changed,
        rules_dir=settings.rules_dir,
    )


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(gateway: ServedGateway) -> uvicorn.Server:
    """A uvicorn server for the gateway's API; ``await server.serve()`` on its loop and set
    ``should_exit`` to stop it."""
    config = uvicorn.Config(
        build_app(gateway),
        host=gateway.settings.api_host,
        port=gateway.settings.api_port,
        log_level="warning",
        lifespan="on",
    )
    log.info("API on http://%s:%d", gateway.settings.api_host, gateway.settings.api_port)
    return _QuietServer(config)
