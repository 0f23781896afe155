"""What the API is built from: settings, database and the injected collaborators."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from gateway.alerting.alerts import AlertService
from gateway.alerting.rulestage import RuleStage
from gateway.core.config import Settings
from gateway.notify.live import EventHub
from gateway.provisioning.dynsec import Provisioner
from gateway.registry.device_ids import ReservedNames, reserved_for
from gateway.workorders.lifecycle import WorkOrderService


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """Live state of a device as the ingest side knows it; None where unknown."""

    last_seen: datetime | None = None
    online: bool | None = None
    battery: float | None = None


class InfluxReader(Protocol):
    """Reads a device's recent points from InfluxDB (injected; may raise on failure)."""

    def __call__(self, device_id: str, kind: str, minutes: int) -> Sequence[Mapping[str, Any]]:
        """Points of the last ``minutes`` minutes, oldest first, each with a ``time`` key."""
        ...


#: Live status of one device by id, or None when nothing is known about it.
StatusSource = Callable[[str], DeviceStatus | None]
#: Current metric values by Prometheus name.
MetricsSource = Callable[[], Mapping[str, float]]
#: Readiness of the ingest path: part -> "ok" or the reason it is not (empty: no ingest).
ReadinessSource = Callable[[], Mapping[str, str]]


def no_status(_device_id: str) -> DeviceStatus | None:
    """Default status source: nothing is known."""
    return None


def no_metrics() -> Mapping[str, float]:
    """Default metrics source: no metrics."""
    return {}


@dataclass(frozen=True)
class ApiContext:
    """Runtime objects of one app, kept on ``app.state.ctx``.

    ``rules``, ``alerts``, ``orders`` and ``hub`` are the gateway's own services (None: their
    routes answer 503). ``on_rules_changed`` is called, from a worker thread, after the API
    wrote a file in ``rules_dir`` (the site rules directory the gateway loads).
    """

    settings: Settings
    engine: Engine
    provisioner: Provisioner | None = None
    influx_reader: InfluxReader | None = None
    status_source: StatusSource = no_status
    metrics_source: MetricsSource = no_metrics
    readiness_source: ReadinessSource | None = None
    rules: RuleStage | None = None
    alerts: AlertService | None = None
    orders: WorkOrderService | None = None
    hub: EventHub | None = None
    on_rules_changed: Callable[[], None] | None = None
    #: Called (from a worker thread) with a device id after the API registered, changed,
    #: moved or decommissioned it, so the gateway's caches pick the change up at once.
    on_device_changed: Callable[[str], None] | None = None
    rules_dir: Path | None = None

    def reserved_ids(self) -> ReservedNames:
        """The broker names of this deployment no device id may take (from settings)."""
        return reserved_for(self.settings)

    def device_changed(self, *device_ids: str) -> None:
        """Tell the gateway (if any) that these devices changed."""
        if self.on_device_changed is not None:
            for device_id in device_ids:
                self.on_device_changed(device_id)

    #: Serialises changes to the site rules directory (check, write, notify).
    rules_lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
