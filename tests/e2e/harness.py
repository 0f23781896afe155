"""The running app for the browser tests: the API with the web page over a private copy of the
demo community, served by uvicorn on a free loopback port in a thread.

The alert and work-order services run on a :class:`ManualClock` started at the wall-clock
time (so the page's SLA countdowns and the server agree) and publish to an
:class:`EventHub` bound to the server's event loop. Readings come from a fake InfluxDB
reader (switchable to failing, which the API answers with 503) and live device status
from a deterministic fake.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.alerting.alerts import AlertService, Transition
from gateway.api.app import create_app
from gateway.api.auth import issue_token
from gateway.api.context import DeviceStatus
from gateway.core.clock import ManualClock
from gateway.core.config import Settings
from gateway.notify.live import EventHub
from gateway.registry.models import Node, Staff
from gateway.runtime.schema import make_engine
from gateway.web.pages import mount_web
from gateway.workorders.lifecycle import WorkOrderService
from gateway.workorders.models import RuleInfo, WorkOrder
from gateway.workorders.routing import Router

SMOKE = "smoke-B3-2-1001"  # B3-2 → B3 → C1 → G1 → SQ1 → ST1
LOW_BATTERY_C1 = "smoke-B1-1-101"  # B1 in C1
LOW_BATTERY_C2 = "smoke-B6-1-102"  # B6 in C2
FIRE = RuleInfo("smoke.fire_alarm", "火警 / Fire alarm", "critical", "fire", 300, 3600)
LOW = RuleInfo("smoke.low_battery", "电量低 / Low battery", "warning", "maintenance", 86400, 604800)
RAMP_S = 240  # the smoke level builds up over the 4 minutes before the alarm
State = Literal["pending", "firing", "resolved"]


@dataclass
class FakeReadings:
    """Smoke readings every 30 s: a quiet baseline, a rise to the alarm, and after a clear
    a fall back to normal. ``available = False`` makes it fail (the API answers 503)."""

    clock: ManualClock
    available: bool = True
    alarm_at: datetime | None = None
    clear_at: datetime | None = None

    def level(self, at: datetime) -> float:
        """The smoke level at ``at``."""
        wiggle = 0.004 * ((int(at.timestamp()) // 30) % 5)
        if self.alarm_at is None or at < self.alarm_at - timedelta(seconds=RAMP_S):
            return 0.02 + wiggle
        if self.clear_at is not None and at >= self.clear_at:
            return 0.03 + wiggle
        rise = (at - (self.alarm_at - timedelta(seconds=RAMP_S))).total_seconds() / RAMP_S
        return 0.02 + 0.3 * min(1.0, rise) + wiggle

    def __call__(self, device_id: str, kind: str, minutes: int) -> Sequence[Mapping[str, Any]]:
        """Points of the last ``minutes`` minutes (at most two hours), oldest first."""
        if not self.available:
            raise RuntimeError("connection refused (test: InfluxDB is down)")
        end = self.clock.now()
        count = min(minutes, 120) * 2
        points = []
        for back in range(count, -1, -1):
            at = end - timedelta(seconds=30 * back)
            level = round(self.level(at), 4)
            points.append({
                "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "device_id": device_id,
                "smoke": level,
                "battery": 86.0,
                "state": "alarm" if level >= 0.15 else "normal",
            })  # fmt: skip
        return points


def fake_status(device_id: str) -> DeviceStatus:
    """Deterministic live status: most devices online, batteries 8-100 %, seen lately."""
    crc = zlib.crc32(device_id.encode())
    seen = datetime.now(UTC) - timedelta(seconds=crc % 5400)
    return DeviceStatus(last_seen=seen, online=crc % 13 != 0, battery=float(8 + crc % 93))


@dataclass
class WebEnv:
    """The served app and the handles a test drives it with."""

    base_url: str
    engine: Engine
    clock: ManualClock
    alerts: AlertService
    hub: EventHub
    readings: FakeReadings
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, role: str, node: str) -> str:
        """An API token of ``role`` scoped at ``node`` (named "test <role>")."""
        if (role, node) not in self.tokens:
            with Session(self.engine) as session, session.begin():
                self.tokens[role, node] = issue_token(session, role, node, f"test {role}").token
        return self.tokens[role, node]

    def transition(
        self, rule: RuleInfo, device: str, state: State, values: dict[str, object]
    ) -> list[dict[str, Any]]:
        """Apply one rule transition at the clock's time; its events go to the hub."""
        ts_ns = int(self.clock.now().timestamp()) * 1_000_000_000
        reading = ", ".join(f"{key} {value}" for key, value in values.items())
        message = f"{rule.title}: {reading}"  # the rules engine's shape
        change = Transition(
            rule.rule_id, device, "smoke", state, rule.severity, ts_ns, values, None, message
        )
        return self.alerts.apply([change])

    def fire(self, state: State = "firing", level: float = 0.32) -> list[dict[str, Any]]:
        """The smoke alarm of :data:`SMOKE` fires (or clears with ``state="resolved"``)."""
        if state == "firing":
            self.readings.alarm_at = self.clock.now()
        else:
            self.readings.clear_at = self.clock.now()
        values: dict[str, object] = {"state": "alarm" if state != "resolved" else "normal"}
        return self.transition(FIRE, SMOKE, state, values | {"smoke": level})

    def order_of(self, device: str) -> int:
        """Id of the newest work order of ``device``."""
        query = select(WorkOrder.id).where(WorkOrder.device_id == device)
        with Session(self.engine) as session:
            found = session.scalar(query.order_by(WorkOrder.id.desc()))
        assert found is not None, device
        return found

    def staff_id(self, node: str, name: str) -> int:
        """Id of the staff entry called ``name`` at ``node``."""
        query = select(Staff.id).join(Node, Node.id == Staff.node_id)
        with Session(self.engine) as session:
            found = session.scalar(query.where(Node.code == node, Staff.name == name))
        assert found is not None, (node, name)
        return found


class _ThreadServer(uvicorn.Server):
    """uvicorn without signal handlers (they belong to the main thread)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextmanager
def serving(app: FastAPI, hub: EventHub) -> Iterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port in a thread, the hub bound to its loop; yields
    the base URL. On exit the hub ends every stream and the server stops (bounded waits)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=3)
    server = _ThreadServer(config)
    loop = asyncio.new_event_loop()
    hub.bind(loop)
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        hub.close()
        server.should_exit = True
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
        sock.close()


@contextmanager
def web_env(database_url: str, state_dir: Path) -> Iterator[WebEnv]:
    """The app with the web page over ``database_url`` (a copy of the demo community)."""
    engine = make_engine(database_url)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    hub = EventHub(keepalive_s=1.0)

    def publish(event: dict[str, Any]) -> None:
        hub.publish(event)

    orders = WorkOrderService(engine, clock, Router(), publish)
    rules = {rule.rule_id: rule for rule in (FIRE, LOW)}
    alerts = AlertService(engine, clock, rules, publish, orders=orders)
    readings = FakeReadings(clock)
    app = create_app(
        Settings(state_dir=state_dir),
        engine,
        influx_reader=readings,
        status_source=fake_status,
        alerts=alerts,
        orders=orders,
        hub=hub,
    )
    mount_web(app)
    try:
        with serving(app, hub) as base_url:
            yield WebEnv(base_url, engine, clock, alerts, hub, readings)
    finally:
        engine.dispose()
