"""Issue 3's acceptance chain on real Mosquitto and InfluxDB: incidents published by device
simulators become alerts, routed work orders, escalations, notifications and ratings."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from devices import load_kind
from gateway.alerting.models import Alert
from gateway.core.clock import ManualClock
from gateway.core.config import Settings
from gateway.notify.dispatch import verify_signature
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess, free_port
from gateway.workorders.lifecycle import WorkOrderError
from gateway.workorders.models import WorkOrder

from .gwtools import publish_all, rows, running, wait_for

pytestmark = pytest.mark.integration

COMMUNITY = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"
DEVICES = """device_id,kind,model,codec,node,location,params,installed_at
smoke-B3-2-1001,smoke,JTY-GD-H388,json,B3-2,1001,floor=10,2024-04-12
smoke-B3-2-1002,smoke,JTY-GD-H388,json,B3-2,1002,floor=10,2024-04-12
bin-C2-07,bin,SB-200,json,C2,,depth_mm=1000,2024-04-12
"""
SECRET = "s3cret"
OFFLINE_OVERRIDE = """rules:
  - id: smoke.offline
    title: 设备离线 / Offline
    device_type: smoke
    severity: warning
    absent: 2s
"""


class Hook(BaseHTTPRequestHandler):
    """Collects webhook deliveries with the result of their signature check."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        signed = verify_signature(
            SECRET, self.headers["X-SCC-Timestamp"], body, self.headers["X-SCC-Signature"]
        )
        server.events.append((signed, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Mailbox:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


class Chain:
    """The running gateway with its clock, webhook receiver and mailbox."""

    def __init__(self, gateway: Gateway, clock: ManualClock, hook: Any, mailbox: Mailbox) -> None:
        self.gateway, self.clock, self.hook, self.mailbox = gateway, clock, hook, mailbox
        self.port = gateway.settings.mqtt_port
        self.t_ms = int(time.time() * 1000)

    def send(self, device_id: str, **fields: Any) -> None:
        self.t_ms += 1000  # strictly increasing device time
        fields.setdefault("ts", self.t_ms)
        publish_all(self.port, [(f"scc/v1/{device_id}/telemetry", json.dumps(fields).encode())])

    def alerts(self, rule_id: str, state: str | None = None) -> list[Alert]:
        return self.gateway.rules.alerts.search(rule_id=rule_id, state=state)

    def orders(self, device_id: str) -> list[WorkOrder]:
        return self.gateway.rules.orders.search(device_id=device_id)

    def hook_types(self) -> list[str]:
        return [event["type"] for _, event in self.hook.events]


@pytest.fixture
def chain(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str
) -> Iterator[Chain]:
    hook: Any = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    hook.events = []
    threading.Thread(target=hook.serve_forever, args=(0.05,), daemon=True).start()
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "offline.yaml").write_text(OFFLINE_OVERRIDE)  # 2 s instead of 24 h
    registry = Registry(make_engine(f"sqlite:///{tmp_path / 'gateway.db'}"))
    registry.load_hierarchy(yaml.safe_load((COMMUNITY / "hierarchy.yaml").read_text()))
    (tmp_path / "devices.csv").write_text(DEVICES)
    registry.load_devices_csv(tmp_path / "devices.csv")
    settings = Settings(
        name="chain", state_dir=tmp_path, mqtt_port=mosquitto.port, influx_url=influxdb.url,
        influx_database=influx_db, stats_interval_s=3600, linger_ms=5, rules_dir=rules_dir,
        rules_tick_s=0.2, sla_check_s=0.2,
        webhook_url=f"http://127.0.0.1:{hook.server_address[1]}/hook", webhook_secret=SECRET,
        smtp_host="127.0.0.1", smtp_port=smtp_port, email_min_severity="critical",
    )  # fmt: skip
    clock = ManualClock()
    gateway = Gateway(settings, clock=clock)
    try:
        with running(gateway):
            yield Chain(gateway, clock, hook, mailbox)
    finally:
        controller.stop()
        hook.shutdown()
        hook.server_close()


def eventually(what: str, check: Callable[[], bool], timeout: float = 15) -> None:
    wait_for(check, timeout, what)


def test_fire_to_rating(chain: Chain, influxdb: ManagedProcess, influx_db: str) -> None:
    # The device simulator's own fire incident, not hand-written readings.
    smoke = load_kind("smoke")
    sim = smoke.simulator("smoke-B3-2-1001", smoke.codecs["json"], {}, random.Random(1), 60.0)
    now = time.time()
    fire = [m.payload for m in sim.start_incident("fire", now)] + [
        m.payload for t in range(1, 4) for m in sim.step(now + 30 * t)
    ]
    publish_all(chain.port, [("scc/v1/smoke-B3-2-1001/event", p) for p in fire])
    chain.t_ms = int((now + 120) * 1000)  # later readings come after the simulated ones
    eventually("fire alert firing", lambda: bool(chain.alerts("smoke.fire_alarm", "firing")))
    eventually("one work order", lambda: len(chain.orders("smoke-B3-2-1001")) == 1)
    (order,) = chain.orders("smoke-B3-2-1001")
    assert (order.category, order.state, order.sensor_state) == ("fire", "open", "fault")
    eventually("webhook: order opened", lambda: "workorder.opened" in chain.hook_types())
    opened = next(e for ok, e in chain.hook.events if e["type"] == "workorder.opened")
    assert opened["order"]["node"] == "G1"  # the building's grid team
    assert {r["role"] for r in opened["recipients"] if not r["cc"]} == {"grid_head", "grid_member"}
    assert all(signed for signed, _ in chain.hook.events)
    eventually("e-mail to the grid team", lambda: len(chain.mailbox.messages) >= 1)
    to, mail = chain.mailbox.messages[0]
    subject = str(make_header(decode_header(mail["Subject"])))
    assert subject.startswith("[CRITICAL] 火警 / Fire alarm") and "smoke-B3-2-1001" in subject
    assert to and all(addr.endswith("@example.org") for addr in to)

    chain.clock.advance(301)  # nobody acknowledged within the 5-minute SLA
    eventually("escalated", lambda: "workorder.escalated" in chain.hook_types())
    escalated = next(e for ok, e in chain.hook.events if e["type"] == "workorder.escalated")
    assert (escalated["from_node"], escalated["to_node"]) == ("G1", "SQ1")

    orders = chain.gateway.rules.orders
    staff = next(r["staff_id"] for r in escalated["recipients"] if not r["cc"])
    orders.transition(order.id, "dispatch", actor="刘娜", assignee=staff)
    orders.transition(order.id, "start", actor="刘娜", note="on site")
    with pytest.raises(WorkOrderError, match="still reports the fault"):
        orders.transition(order.id, "resolve", actor="刘娜", note="looks fine")

    chain.send("smoke-B3-2-1001", state="normal", smoke=0.02, event="alarm_cleared")
    eventually("alert resolved", lambda: bool(chain.alerts("smoke.fire_alarm", "resolved")))
    eventually("sensor ok", lambda: orders.get(order.id).sensor_state == "ok")
    orders.transition(order.id, "resolve", actor="刘娜", note="kitchen smoke, cleared")
    orders.transition(order.id, "close", actor="刘娜", note="回访 done")
    orders.rate(order.id, 5, "fast and kind", actor="resident 1001")
    eventually(
        "webhook: closed and rated",
        lambda: {"workorder.closed", "workorder.rated"} <= set(chain.hook_types()),
    )
    final = orders.get(order.id)
    assert (final.state, final.rating, final.escalation_level) == ("closed", 5, 1)
    steps = [e.action for e in orders.history(order.id)]
    for step in ("open", "escalate", "dispatch", "start", "sensor_ok", "resolve", "close", "rate"):
        assert step in steps, steps

    eventually("alerts in InfluxDB", chain.gateway.drainer.drained)
    points = rows(influxdb.url, influx_db, "alerts")
    states = [(p["rule_id"], p["state"]) for p in points if p["device_id"] == "smoke-B3-2-1001"]
    assert ("smoke.fire_alarm", "firing") in states and ("smoke.fire_alarm", "resolved") in states


def test_bin_overflow_repeated_ten_times_is_one_order(chain: Chain) -> None:
    for _ in range(10):
        chain.send("bin-C2-07", fill=97.0, temperature=22.0)
    eventually(
        "ten occurrences",
        lambda: (
            bool(chain.orders("bin-C2-07")) and chain.orders("bin-C2-07")[0].occurrence_count == 10
        ),
    )
    (order,) = chain.orders("bin-C2-07")
    assert order.category == "sanitation"
    assert len(chain.gateway.rules.orders.occurrences(order.id)) == 10
    assert len(chain.alerts("bin.overflow")) == 1


def test_silent_device_goes_offline_and_recovers(chain: Chain) -> None:
    chain.send("smoke-B3-2-1002", state="normal", smoke=0.01)
    eventually(
        "offline alert",
        lambda: any(
            a.device_id == "smoke-B3-2-1002" for a in chain.alerts("smoke.offline", "firing")
        ),
        10,
    )
    chain.send("smoke-B3-2-1002", state="normal", smoke=0.01)
    eventually(
        "offline resolved",
        lambda: any(
            a.device_id == "smoke-B3-2-1002" for a in chain.alerts("smoke.offline", "resolved")
        ),
        10,
    )
