"""The gateway process serves its REST API next to ingest, on the same event loop."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from gateway.api.auth import issue_token
from gateway.core.config import Settings
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess, free_port

from .gwtools import publish_all, running, wait_for

pytestmark = pytest.mark.integration
COMMUNITY = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"


def get(url: str, token: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_api_served_with_live_device_status_and_metrics(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str
) -> None:
    port = free_port()
    settings = Settings(name="api", state_dir=tmp_path, mqtt_port=mosquitto.port,
                        influx_url=influxdb.url, influx_database=influx_db, api_port=port,
                        stats_interval_s=3600)  # fmt: skip
    # registered before the gateway starts: its snapshot must follow moves made later
    Registry(make_engine(settings.database_url)).load_community(COMMUNITY)
    gateway = Gateway(settings)
    with Session(gateway.engine) as session, session.begin():
        token = issue_token(session, "admin", "ST1", "test").token
    base = f"http://127.0.0.1:{port}"
    with running(gateway):
        wait_for(lambda: _up(base), 10, "API answering")
        publish_all(mosquitto.port, [("scc/v1/smoke-B1-1-101/telemetry", b'{"state":"normal"}')])
        wait_for(lambda: gateway.counters.messages["smoke"] == 1, 10, "message processed")
        status, device = get(f"{base}/devices/smoke-B1-1-101", token)
        assert status == 200 and device["online"] is True and device["last_seen"]
        status, _ = get(f"{base}/devices/nope", token)
        assert status == 404
        # moving a device through the API re-tags its next readings at once
        move = urllib.request.Request(
            f"{base}/devices/smoke-B1-1-101/move",
            data=b'{"node": "B2-1"}',
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(move, timeout=10) as response:
            assert response.status == 200
        wait_for(lambda: gateway.pipeline.known("smoke-B1-1-101") is None, 5, "cache dropped")
        publish_all(mosquitto.port, [("scc/v1/smoke-B1-1-101/telemetry", b'{"state":"test"}')])
        wait_for(lambda: gateway.counters.messages["smoke"] == 2, 10, "second message")
        info = gateway.pipeline.known("smoke-B1-1-101")
        assert info is not None and ("building", "B2") in info.path
        request = urllib.request.Request(
            f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        assert 'scc_messages_total{kind="smoke"} 2.0' in text


def _up(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
