"""The running gateway against hostile device ids and client-id takeovers (issue 14, 8-9).

A real gateway (ingest, API, provisioner) on a dynamic-security Mosquitto and InfluxDB. An
integrator scoped to one compound tries to register the gateway's own broker names; a
registered device's login then tries, again and again, to connect with the gateway's client
id while another device publishes a numbered stream. The gateway must keep its session
(no reconnect), store every reading, and go on provisioning.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from gateway.api.auth import issue_token
from gateway.core.config import Settings
from gateway.provisioning.dynsec import DynsecProvisioner
from gateway.runtime.service import Gateway
from gateway.services.base import LOOPBACK, ManagedProcess, free_port
from gateway.services.influxdb import influx_query
from gateway.services.mosquitto import MosquittoConfig, start_mosquitto
from tests.integration.gwtools import running, wait_for
from tests.integration.test_dynsec import connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

COMMUNITY = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"
MESSAGES = 80


@dataclass
class Live:
    """A running gateway with its broker, API base URL and an integrator token for C1."""

    gateway: Gateway
    broker: ManagedProcess
    base: str
    token: str
    influx_url: str
    database: str

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.base}{path}", data=json.dumps(body).encode(), method="POST"
        )
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)


@pytest.fixture
def live(tmp_path: Path, influxdb: ManagedProcess, influx_db: str) -> Iterator[Live]:
    broker = start_mosquitto(tmp_path / "mosquitto", dynsec=True)
    try:
        assert isinstance(broker.config, MosquittoConfig)
        admin_user, admin_password = broker.config.dynsec_admin()
        settings = Settings(
            name="edge", state_dir=tmp_path, mqtt_port=broker.port, api_port=free_port(),
            mqtt_username="scc-gateway", mqtt_password=secrets.token_urlsafe(16),
            mqtt_admin_username=admin_user, mqtt_admin_password=admin_password,
            influx_url=influxdb.url, influx_database=influx_db, stats_interval_s=3600,
        )  # fmt: skip
        admin = DynsecProvisioner.connect(LOOPBACK, broker.port, admin_user, admin_password)
        assert settings.mqtt_password is not None
        admin.ensure_gateway_role("scc-gateway", settings.mqtt_password, settings.client_id)
        admin.close()
        gateway = Gateway(settings)
        gateway.registry.load_community(COMMUNITY)
        with Session(gateway.engine) as session, session.begin():
            token = issue_token(session, "integrator", "C1", "installer").token
        base = f"http://127.0.0.1:{settings.api_port}"
        with running(gateway):
            wait_for(lambda: _up(base), 10, "API")
            yield Live(gateway, broker, base, token, influxdb.url, influx_db)
    finally:
        broker.stop()


def _up(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _device(live: Live, device_id: str) -> dict[str, Any]:
    status, body = live.post("/devices", {"device_id": device_id, "kind": "smoke", "node": "B1-1"})
    assert status == 201, body
    credentials: dict[str, Any] = body["credentials"]
    return credentials


def _stored_seqs(live: Live, device_id: str) -> list[int]:
    query = f'SELECT "seq" FROM "smoke" WHERE "device_id" = \'{device_id}\''
    body = influx_query(live.influx_url, query, db=live.database, timeout=10)
    series = body["results"][0].get("series", [])
    return sorted(int(row[1]) for s in series for row in s["values"])


def test_hostile_ids_and_takeovers_leave_ingest_untouched(live: Live) -> None:
    client_id = live.gateway.settings.client_id
    for device_id in ["scc-gateway", "scc-dynsec-admin", client_id, "SCC-Gateway", "ѕсс-gateway"]:
        status, body = live.post(
            "/devices", {"device_id": device_id, "kind": "smoke", "node": "B1-1"}
        )
        assert status == 422 and "device_id" in body["detail"], (device_id, body)
    thief = _device(live, "smoke-B1-9-301")
    sender = _device(live, "smoke-B1-9-302")
    refusals = _takeover_attempts(live.broker.port, thief, client_id, during=_publish, creds=sender)
    assert refusals and all(refusals), "a device login connected as the gateway"
    wait_for(live.gateway.drainer.drained, 20, "drained")
    wait_for(lambda: len(_stored_seqs(live, "smoke-B1-9-302")) >= MESSAGES, 20, "stored")
    assert _stored_seqs(live, "smoke-B1-9-302") == list(range(1, MESSAGES + 1))
    assert live.gateway.source.reconnects == 0, "the gateway lost its session"
    assert live.gateway.source.connected.is_set()
    # provisioning still works, and the new login works
    later = _device(live, "smoke-B1-9-303")
    peer = connect(live.broker.port, later["username"], later["password"], later["client_id"])
    try:
        assert not peer.connack.is_failure
    finally:
        peer.close()


def _publish(port: int, creds: dict[str, Any]) -> None:
    """``MESSAGES`` numbered readings at ~20/s from the device's own login."""
    device = connect(port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert not device.connack.is_failure
        now_ms = int(time.time() * 1000) - 60_000
        for seq in range(1, MESSAGES + 1):
            payload = {"state": "normal", "smoke": 0.01, "seq": seq, "ts": now_ms + seq}
            topic = f"scc/v1/{creds['username']}/telemetry"
            assert device.publish(topic, json.dumps(payload).encode()) == 0
            time.sleep(0.05)
    finally:
        device.close()


def _takeover_attempts(
    port: int, thief: dict[str, Any], client_id: str, *, during: Any, creds: dict[str, Any]
) -> list[bool]:
    """Connect as ``client_id`` with the thief's login every 0.2 s while ``during`` runs;
    whether each attempt was refused."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            during(port, creds)
        except BaseException as err:  # re-raised below, on the test's thread
            errors.append(err)

    publisher = threading.Thread(target=target, daemon=True)
    publisher.start()
    refused: list[bool] = []
    deadline = time.monotonic() + 30
    while publisher.is_alive() and time.monotonic() < deadline:
        peer = connect(port, thief["username"], thief["password"], client_id)
        refused.append(bool(peer.connack.is_failure))
        peer.close()
        time.sleep(0.2)
    publisher.join(5)
    assert not publisher.is_alive(), "publisher did not finish"
    if errors:
        raise errors[0]
    return refused
