"""The README's integrator path, end to end on a broker with per-device logins:
token → register a device (its MQTT login comes back once) → simulate it → read its readings."""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main as gateway_cli
from gateway.core.config import Settings
from gateway.provisioning.dynsec import DynsecProvisioner
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess, free_port
from gateway.services.mosquitto import start_mosquitto
from simulators.__main__ import main as simulators_cli

from .gwtools import running, wait_for

pytestmark = pytest.mark.integration
COMMUNITY = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"


def call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_four_commands(
    tmp_path: Path, influxdb: ManagedProcess, influx_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = start_mosquitto(tmp_path / "mosquitto", dynsec=True)
    try:
        admin_user, admin_password = broker.config.dynsec_admin()  # type: ignore[attr-defined]
        gateway_password = secrets.token_urlsafe(16)
        admin = DynsecProvisioner.connect("127.0.0.1", broker.port, admin_user, admin_password)
        admin.ensure_gateway_role("scc-gateway", gateway_password)
        admin.close()
        api_port = free_port()
        settings = Settings(
            name="integrator", state_dir=tmp_path, mqtt_port=broker.port, api_port=api_port,
            mqtt_username="scc-gateway", mqtt_password=gateway_password,
            mqtt_admin_username=admin_user, mqtt_admin_password=admin_password,
            influx_url=influxdb.url, influx_database=influx_db, stats_interval_s=3600,
        )  # fmt: skip
        gateway = Gateway(settings)
        gateway.registry.load_community(COMMUNITY)
        base = f"http://127.0.0.1:{api_port}"
        with running(gateway):
            # 1. a token for the integrator (printed once)
            capsys.readouterr()
            assert (
                gateway_cli(
                    [
                        "token",
                        "--state-dir",
                        str(tmp_path),
                        "create",
                        "--role",
                        "integrator",
                        "--node",
                        "C1",
                        "--name",
                        "installer",
                    ]
                )
                == 0
            )
            token = capsys.readouterr().out.strip()
            # 2. register the device: its own MQTT login comes back once
            wait_for(lambda: _up(base), 10, "API")
            device = call(
                "POST",
                f"{base}/devices",
                token,
                {
                    "device_id": "smoke-B1-9-101",
                    "kind": "smoke",
                    "model": "JTY-GD-H388",
                    "node": "B1-1",
                    "location": "101",
                },
            )
            login = device["credentials"]
            assert login["username"] == "smoke-B1-9-101" and login["password"]
            # 3. point a simulator at it, with that login
            assert (
                simulators_cli(
                    [
                        "fleet",
                        "--device",
                        "smoke-B1-9-101:smoke",
                        "--port",
                        str(broker.port),
                        "--username",
                        login["username"],
                        "--password",
                        login["password"],
                        "--interval",
                        "0.5",
                        "--duration",
                        "3",
                        "--stats-every",
                        "0",
                    ]
                )
                == 0
            )
            wait_for(gateway.drainer.drained, 10, "stored")
            # 4. its readings
            readings = call("GET", f"{base}/devices/smoke-B1-9-101/readings?minutes=10", token)
        points = readings["points"] if isinstance(readings, dict) else readings
        assert len(points) >= 3 and all(p["device_id"] == "smoke-B1-9-101" for p in points)
    finally:
        broker.stop()


def _up(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
