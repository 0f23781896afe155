"""Issue 2's acceptance test: a known set of messages of all four kinds, JSON, batch and
binary, plus bad ones, through a real Mosquitto into a real InfluxDB."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.core.config import Settings
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess

from .gwtools import publish_all, rows, running, wait_for

pytestmark = pytest.mark.integration

HIERARCHY = {
    "code": "ST1",
    "level": "street",
    "name": "望京街道",
    "children": [
        {
            "code": "SQ1",
            "level": "community",
            "name": "花园社区",
            "children": [
                {
                    "code": "G1",
                    "level": "grid",
                    "name": "第一网格",
                    "children": [
                        {
                            "code": "C1",
                            "level": "compound",
                            "name": "阳光小区",
                            "children": [
                                {
                                    "code": "B1",
                                    "level": "building",
                                    "name": "1号楼",
                                    "floors": 18,
                                    "children": [
                                        {"code": "B1-1", "level": "unit", "name": "1单元"},
                                    ],
                                },
                            ],
                        },
                    ],
                },
            ],
        },
    ],
}
DEVICES_CSV = """device_id,kind,model,codec,node,location,params,installed_at
smoke-1,smoke,JTY-GD-H388,json,B1-1,101,,2024-04-12
smoke-2,smoke,JTY-GD-H388,json,B1-1,102,,2024-04-12
cam-1,throw_camera,HK-TC-200,json,B1,east,floors=18;facade=east,2024-04-12
bin-1,bin,EM310-UDL,em310-udl,C1,,depth_mm=2500,2024-04-12
bin-2,bin,SB-200,json,C1,,depth_mm=1000,2024-04-12
mh-1,manhole,EM310-TILT,em310-tilt,C1,,depth_cm=300,2024-04-12
mh-2,manhole,MC-100,json,C1,,depth_cm=300,2024-04-12
"""
#: Device time of the known messages (epoch ms): an hour ago, within what the gateway
#: accepts (7 days back, 5 minutes ahead of its clock).
T0 = (int(time.time()) - 3600) * 1000
#: The smoke-2 alarm's ISO 8601 ts (five seconds after T0, written in UTC+8).
ISO_TS = datetime.fromtimestamp(T0 / 1000 + 5, timezone(timedelta(hours=8))).isoformat()

GOOD = [
    (
        "scc/v1/smoke-1/telemetry",
        b'{"state":"normal","smoke":0.02,"temperature":21.5,"battery":88,"ts":%d,"seq":1}' % T0,
    ),
    (
        "scc/v1/smoke-1/telemetry",
        b'[{"state":"normal","smoke":0.03,"ts":%d},{"state":"normal","smoke":0.04,"ts":%d},'
        b'{"state":"alarm","smoke":0.41,"ts":%d}]' % (T0 + 1000, T0 + 2000, T0 + 3000),
    ),
    (
        "scc/v1/smoke-2/event",
        b'{"state":"alarm","event":"alarm_raised","smoke":0.3,"ts":"%s"}' % ISO_TS.encode(),
    ),
    (
        "scc/v1/cam-1/event",
        b'{"event":"throw","floor_estimate":12,"floor_range":[11,13],"confidence":0.87,'
        b'"object_size":"small","ts":%d}' % T0,
    ),
    ("scc/v1/bin-1/telemetry", bytes.fromhex("01755C038244080400 01")),
    (
        "scc/v1/bin-2/telemetry",
        b'{"distance":120,"temperature":24.0,"position":"normal","ts":%d}' % T0,
    ),
    ("scc/v1/mh-1/telemetry", bytes.fromhex("0175 64 03CF 2C01 F4FF 2823 00".replace(" ", ""))),
    ("scc/v1/mh-2/telemetry", b'{"state":"opened","tilt":75.5,"water_level":40,"ts":%d}' % T0),
    ("scc/v1/smoke-1/status", b'{"state":"online"}'),
]
EXPECTED_POINTS = {"smoke": 5, "throw_camera": 1, "bin": 2, "manhole": 2, "events": 1}

BAD = [
    ("scc/v1/smoke-1/telemetry", b'{"state":"normal","smoke":', "malformed_json"),
    ("scc/v1/smoke-1/telemetry", b'{"state":"normal","smoke":"high"}', "wrong_type"),
    ("scc/v1/smoke-2/telemetry", b'{"state":"normal","smoke":9.5}', "out_of_range"),
    ("scc/v1/ghost-9/telemetry", b'{"state":"normal"}', "unknown_device"),
    ("scc/v1/smoke-1/commands", b'{"state":"normal"}', "unknown_message_kind"),
    ("scc/v1/smoke-1/telemetry", b'{"state":"normal","fw":"' + b"x" * 70_000 + b'"}', "oversized"),
    ("scc/v1/smoke-1/telemetry", b"\xff\xfe\xfa not utf8", "not_utf8"),
    ("scc/v1/smoke-2/telemetry", b'{"state":"normal","device_id":"smoke-1"}', "topic_mismatch"),
    ("scc/v1/bin-1/telemetry", bytes.fromhex("017550 0382 44"), "truncated"),
    ("scc/v1//telemetry", b"{}", "bad_topic"),
]


def make_gateway(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, db: str
) -> Gateway:
    settings = Settings(
        name=f"e2e{db[-6:]}",
        state_dir=tmp_path,
        mqtt_port=mosquitto.port,
        influx_url=influxdb.url,
        influx_database=db,
        stats_interval_s=0.5,
        linger_ms=5,
    )
    gateway = Gateway(settings)
    gateway.registry.load_hierarchy(HIERARCHY)
    (tmp_path / "devices.csv").write_text(DEVICES_CSV)
    gateway.registry.load_devices_csv(tmp_path / "devices.csv")
    return gateway


def test_known_messages_end_up_exactly_as_expected(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str
) -> None:
    gateway = make_gateway(tmp_path, mosquitto, influxdb, influx_db)
    interleaved = []
    for index, (topic, payload, _) in enumerate(BAD):
        interleaved += (
            [GOOD[index % len(GOOD)][:2], (topic, payload)]
            if index < len(GOOD)
            else [(topic, payload)]
        )
    interleaved += GOOD[len(BAD) :]
    assert sorted(interleaved) == sorted([*GOOD, *((t, p) for t, p, _ in BAD)])
    with running(gateway):
        publish_all(mosquitto.port, interleaved)
        total = len(interleaved)
        wait_for(
            lambda: (
                sum(gateway.counters.messages.values())
                + sum(gateway.counters.dead_letters.values())
                >= total
            ),
            20,
            "every message processed",
        )
        wait_for(gateway.drainer.drained, 20, "spool drained to InfluxDB")
        wait_for(
            lambda: any(
                r.get("kind") == "smoke" for r in rows(influxdb.url, influx_db, "gateway_stats")
            ),
            20,
            "gateway_stats written",
        )

    counts = {m: len(rows(influxdb.url, influx_db, m)) for m in EXPECTED_POINTS}
    assert counts == EXPECTED_POINTS
    reasons = Counter(letter.reason for letter in gateway.dead_letters.list(limit=100))
    assert reasons == Counter(reason for _, _, reason in BAD)

    smoke = {r["time"]: r for r in rows(influxdb.url, influx_db, "smoke")}
    first = smoke[T0 * 1_000_000]
    assert (
        first["device_id"],
        first["street"],
        first["grid"],
        first["compound"],
        first["unit"],
    ) == ("smoke-1", "ST1", "G1", "C1", "B1-1")
    assert (
        first["state"],
        first["smoke"],
        first["temperature"],
        first["battery"],
        first["seq"],
    ) == ("normal", 0.02, 21.5, 88.0, 1)
    assert smoke[(T0 + 3000) * 1_000_000]["state"] == "alarm"
    iso = (T0 + 5000) * 1_000_000  # ISO_TS
    assert smoke[iso]["event"] == "alarm_raised"

    (camera,) = rows(influxdb.url, influx_db, "throw_camera")
    assert (
        camera["floor_estimate"],
        camera["floor_low"],
        camera["floor_high"],
        camera["confidence"],
    ) == (12, 11, 13, 0.87)
    bins = {r["device_id"]: r for r in rows(influxdb.url, influx_db, "bin")}
    assert (bins["bin-1"]["battery"], bins["bin-1"]["distance"], bins["bin-1"]["position"]) == (
        92.0,
        2116,
        "tilt",
    )
    assert bins["bin-1"]["fill"] == pytest.approx(15.4, abs=0.1)
    assert bins["bin-2"]["fill"] == pytest.approx(88.0)
    holes = {r["device_id"]: r for r in rows(influxdb.url, influx_db, "manhole")}
    assert (
        holes["mh-1"]["battery"],
        holes["mh-1"]["angle_x"],
        holes["mh-1"]["angle_y"],
        holes["mh-1"]["angle_z"],
    ) == (100.0, 3.0, -0.12, 90.0)
    assert holes["mh-2"]["state"] == "opened"

    letter = gateway.dead_letters.list(reason="truncated")[0]
    assert letter.payload == bytes.fromhex("0175500382 44") and letter.device_id == "bin-1"
    assert (
        "03 82" in letter.detail
        or "0x82" in letter.detail.lower()
        or "truncat" in letter.detail.lower()
    )
