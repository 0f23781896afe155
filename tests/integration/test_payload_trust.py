"""Issue 14, items 2 and 3, through real Mosquitto, the gateway, InfluxDB and SQLite alerts.

- One reading with a ``ts`` far ahead (now + 1 day, 2099) is a ``future_ts`` dead letter;
  one just inside the skew (now + 299 s) is stored. Either way the device's real fire alarms
  afterwards (ts = now) raise their alerts, every one of them.
- Payloads whose meaning would be a guess (``true`` as a number, "12.5" as a number, 0/1 as
  a flag, a key given twice, a ts outside the window) store no point and raise no alert; each
  is a dead letter with its reason.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import Settings
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess

from .gwtools import influx_query, publish_all, rows, running, wait_for
from .test_ingest_end_to_end import HIERARCHY

pytestmark = pytest.mark.integration

DEVICES_CSV = """device_id,kind,model,codec,node,location,params,installed_at
smoke-f1,smoke,JTY-GD-H388,json,B1-1,101,,2024-04-12
smoke-f2,smoke,JTY-GD-H388,json,B1-1,102,,2024-04-12
smoke-f3,smoke,JTY-GD-H388,json,B1-1,103,,2024-04-12
smoke-b1,smoke,JTY-GD-H388,json,B1-1,201,,2024-04-12
bin-b1,bin,SB-200,json,C1,,depth_mm=1000,2024-04-12
mh-b1,manhole,MC-100,json,C1,,depth_cm=300,2024-04-12
cam-b1,throw_camera,HK-TC-200,json,B1,east,floors=18;facade=east,2024-04-12
"""
FIRE = "smoke.fire_alarm"


def make_gateway(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, db: str
) -> Gateway:
    settings = Settings(
        name=f"trust{db[-6:]}", state_dir=tmp_path, mqtt_port=mosquitto.port,
        influx_url=influxdb.url, influx_database=db, stats_interval_s=3600, linger_ms=5,
    )  # fmt: skip
    gateway = Gateway(settings)
    gateway.registry.load_hierarchy(HIERARCHY)
    (tmp_path / "devices.csv").write_text(DEVICES_CSV)
    gateway.registry.load_devices_csv(tmp_path / "devices.csv")
    return gateway


def processed(gateway: Gateway) -> int:
    return sum(gateway.counters.messages.values()) + sum(gateway.counters.dead_letters.values())


def send(gateway: Gateway, messages: list[tuple[str, bytes]]) -> None:
    """Publish and wait until the gateway has processed each message."""
    before = processed(gateway)
    publish_all(gateway.settings.mqtt_port, messages)
    total = before + len(messages)
    wait_for(lambda: processed(gateway) >= total, 20, f"{len(messages)} messages processed")


def reading(device: str, ts_ms: int | str, **fields: Any) -> tuple[str, bytes]:
    return f"scc/v1/{device}/telemetry", json.dumps({**fields, "ts": ts_ms}).encode()


def fire_alerts(gateway: Gateway, device: str) -> list[Any]:
    return gateway.rules.alerts.search(rule_id=FIRE, device_id=device)


def points(url: str, db: str, device: str, measurement: str = "smoke") -> list[dict[str, Any]]:
    return [r for r in rows(url, db, measurement) if r["device_id"] == device]


def test_a_reading_from_the_future_mutes_no_fire_alarm(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str
) -> None:
    now_ms = int(time.time() * 1000)
    y2099 = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * 1000)
    ahead = {"smoke-f1": now_ms + 86_400_000, "smoke-f2": y2099, "smoke-f3": now_ms + 299_000}
    gateway = make_gateway(tmp_path, mosquitto, influxdb, influx_db)
    with running(gateway):
        send(gateway, [reading(d, ts, state="normal", smoke=0.01) for d, ts in ahead.items()])
        # then three real fire alarms per device, each cleared; device time = now
        for _ in range(3):
            for device in ahead:
                send(gateway, [reading(device, int(time.time() * 1000), state="alarm", smoke=0.4)])
                send(
                    gateway, [reading(device, int(time.time() * 1000), state="normal", smoke=0.01)]
                )
        wait_for(gateway.drainer.drained, 20, "spool drained")
        wait_for(
            lambda: all(len(fire_alerts(gateway, d)) == 3 for d in ahead),
            20,
            "three fire alerts per device",
        )
    for device in ahead:
        alerts = fire_alerts(gateway, device)
        assert [a.state for a in alerts] == ["resolved"] * 3, (device, alerts)
        assert len(gateway.rules.orders.search(device_id=device)) >= 1
    letters = {(d.device_id, d.reason) for d in gateway.dead_letters.list(limit=100)}
    assert letters == {("smoke-f1", "future_ts"), ("smoke-f2", "future_ts")}
    # the reading just inside the skew is stored with its own ts; the others are not
    stamps = {r["time"] for r in points(influxdb.url, influx_db, "smoke-f3")}
    assert (now_ms + 299_000) * 1_000_000 in stamps
    for device in ("smoke-f1", "smoke-f2"):
        assert len(points(influxdb.url, influx_db, device)) == 6  # the alarms and clears only


NOW_MS = int(time.time() * 1000)
#: (device, payload, reason): each must be refused with that reason, storing nothing.
GUESSES: list[tuple[str, bytes, str]] = [
    ("smoke-b1", b'{"state":"normal","smoke":true}', "wrong_type"),
    ("smoke-b1", b'{"state":"normal","battery":false}', "wrong_type"),
    ("smoke-b1", b'{"state":"normal","seq":true}', "wrong_type"),
    ("smoke-b1", b'{"state":"normal","smoke":"0.4"}', "wrong_type"),
    ("smoke-b1", b'{"state":"normal","battery":"5"}', "wrong_type"),
    ("smoke-b1", b'{"state":"normal","seq":1.0}', "wrong_type"),
    ("smoke-b1", b'{"state":"alarm","state":"normal"}', "duplicate_key"),
    ("smoke-b1", b'{"state":"normal","state":"alarm"}', "duplicate_key"),
    ("smoke-b1", b'{"state":"normal","smoke":0.01,"smoke":0.5}', "duplicate_key"),
    ("smoke-b1", b'[{"state":"normal"},{"state":"normal","battery":9,"battery":90}]',
     "duplicate_key"),
    ("smoke-b1", b'{"state":"normal","ts":%d}' % (NOW_MS + 86_400_000), "future_ts"),
    ("smoke-b1", b'{"state":"alarm","ts":%d}' % (NOW_MS - 8 * 86_400_000), "stale_ts"),
    ("smoke-b1", b'{"state":"alarm","ts":1732780800}', "stale_ts"),  # seconds
    ("bin-b1", b'{"distance":true}', "wrong_type"),
    ("bin-b1", b'{"distance":"120"}', "wrong_type"),
    ("bin-b1", b'{"distance":120,"distance":900}', "duplicate_key"),
    ("bin-b1", b'{"fill":95,"temperature":true}', "wrong_type"),
    ("mh-b1", b'{"vibration":1}', "wrong_type"),
    ("mh-b1", b'{"tilt":2.0,"alarm_x":"true"}', "wrong_type"),
    ("mh-b1", b'{"state":"normal","state":"opened"}', "duplicate_key"),
    ("cam-b1", b'{"event":"throw","floor_estimate":true,"confidence":0.9}', "wrong_type"),
    ("cam-b1", b'{"event":"heartbeat","event":"throw","floor_estimate":3,"confidence":1}',
     "duplicate_key"),
]  # fmt: skip
STATUS_GUESS = ("scc/v1/smoke-b1/status", b'{"state":"online","state":"offline"}', "duplicate_key")


def test_payloads_whose_meaning_is_a_guess_are_dead_letters(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str
) -> None:
    gateway = make_gateway(tmp_path, mosquitto, influxdb, influx_db)
    bad = [(f"scc/v1/{d}/telemetry", p, r) for d, p, r in GUESSES] + [STATUS_GUESS]
    sentinel = reading("smoke-b1", NOW_MS, state="normal", seq=7)
    with running(gateway):
        send(gateway, [(topic, payload) for topic, payload, _ in bad])
        send(gateway, [sentinel])  # the one good message, last
        wait_for(gateway.drainer.drained, 20, "spool drained")
    letters = gateway.dead_letters.list(limit=100)
    assert Counter((d.topic, d.payload, d.reason) for d in letters) == Counter(bad)
    for letter in letters:
        assert letter.detail, letter
    # nothing of them stored: the sentinel is the only point of any of these devices
    stored = influx_query(
        influxdb.url, influx_db, "SELECT count(*) FROM /smoke|bin|manhole|throw_camera|events/"
    )
    counts = {s["name"]: max(v for v in s["values"][0][1:] if v is not None) for s in stored}
    assert counts == {"smoke": 1}, counts
    assert [r["seq"] for r in points(influxdb.url, influx_db, "smoke-b1")] == [7]
    # and no alert or work order (on main, smoke:true raised a fire alarm and a fire order)
    assert gateway.rules.alerts.search() == []
    assert gateway.rules.orders.search() == []
