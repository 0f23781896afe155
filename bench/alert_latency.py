"""Alert latency: a smoke alarm published → its work order stored, under background load.

The gateway runs in this process (so the moment a work order is committed can be taken
from its own event, on the same clock as the publish time); the background load comes
from a separate process (``python -m bench.loadgen``) publishing QoS 1 telemetry at a
steady rate; 1,000 smoke detectors of the demo community each raise one fire alarm.
Prints p50 / p90 / p99 / max of publish → work order stored.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.loadgen import make_devices
from gateway.config import Settings
from gateway.db import make_engine
from gateway.registry import Registry
from gateway.service import Gateway
from gateway.services import create_influx_database, start_influxdb, start_mosquitto

COMMUNITY = Path(__file__).resolve().parents[1] / "fixtures" / "demo_community"


def prepare(state_dir: Path, background_devices: int) -> list[str]:
    """Demo community plus the background devices; returns the smoke ids for incidents."""
    registry = Registry(make_engine(f"sqlite:///{state_dir / 'gateway.db'}"))
    registry.load_community(COMMUNITY)
    path = state_dir / "background.csv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(
            ["device_id", "kind", "model", "codec", "node", "location", "params", "installed_at"]
        )
        for device in make_devices(background_devices):
            params = "depth_mm=1000" if device.kind == "bin" else ""
            out.writerow([device.device_id, device.kind, "bench", "json", "C1", "", params, ""])
    registry.load_devices_csv(path)
    with (COMMUNITY / "devices.csv").open() as handle:
        return [row["device_id"] for row in csv.DictReader(handle) if row["kind"] == "smoke"]


class Recorder:
    """Takes the time each device's work order was committed (from the gateway's events)."""

    def __init__(self, gateway: Gateway) -> None:
        self.opened: dict[str, int] = {}
        self._forward = gateway.rules._publish
        gateway.rules._publish = self._capture

    def _capture(self, event: dict[str, Any]) -> None:
        if event.get("type") == "workorder.opened":
            self.opened.setdefault(str(event["order"]["device_id"]), time.time_ns())
        self._forward(event)


def run_incidents(port: int, devices: list[str], spacing_s: float) -> dict[str, int]:
    """Publish one fire alarm per device; return publish times (ns)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-incidents")
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent: dict[str, int] = {}
    try:
        for device_id in devices:
            payload = json.dumps({"state": "alarm", "smoke": 0.42, "ts": int(time.time() * 1000)})
            sent[device_id] = time.time_ns()
            client.publish(f"scc/v1/{device_id}/event", payload, qos=1)
            time.sleep(spacing_s)
    finally:
        client.loop_stop()
        client.disconnect()
    return sent


def main() -> int:
    """Entry point: ``python -m bench.alert_latency``."""
    incidents = int(os.environ.get("BENCH_INCIDENTS", "1000"))
    rate = float(os.environ.get("BENCH_BACKGROUND_RATE", "10000"))
    spacing = float(os.environ.get("BENCH_INCIDENT_SPACING", "0.02"))
    seconds = incidents * spacing + 10
    with tempfile.TemporaryDirectory(prefix="scc-latency-") as tmp:
        work = Path(tmp)
        smoke = prepare(work, 10_000)[:incidents]
        mqtt_server = start_mosquitto(work / "mosquitto")
        influx = start_influxdb(work / "influxdb")
        create_influx_database(influx.url, "lat")
        settings = Settings(
            name="latency", state_dir=work, mqtt_port=mqtt_server.port, influx_url=influx.url,
            influx_database="lat",
        )  # fmt: skip
        gateway = Gateway(settings)
        recorder = Recorder(gateway)
        thread = threading.Thread(target=_run_gateway, args=(gateway,), daemon=True)
        thread.start()
        background = None
        try:
            for _ in range(300):
                if gateway.source.connected.is_set():
                    break
                time.sleep(0.05)
            background = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", "--port", str(mqtt_server.port),
                 "--rate", str(rate), "--seconds", str(seconds)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert background.stdout is not None
            background.stdout.readline()  # "ready"
            time.sleep(3)  # let the background load settle
            sent = run_incidents(mqtt_server.port, smoke, spacing)
            deadline = time.monotonic() + 60
            while len(recorder.opened) < len(sent) and time.monotonic() < deadline:
                time.sleep(0.1)
            background_line = background.stdout.readline().strip()
        finally:
            if background is not None:
                background.kill()
                background.wait()
            gateway.stop()
            thread.join(30)
            mqtt_server.stop()
            influx.stop()
    report(sent, recorder.opened, rate, background_line, gateway)
    return 0


def _run_gateway(gateway: Gateway) -> None:
    import asyncio

    asyncio.run(gateway.run())


def report(
    sent: dict[str, int], opened: dict[str, int], rate: float, line: str, gw: Gateway
) -> None:
    """Print the latency table."""
    latencies = sorted((opened[d] - t) / 1e6 for d, t in sent.items() if d in opened)
    missing = len(sent) - len(latencies)
    if not latencies:
        print("no work order was opened")
        return
    cut = statistics.quantiles(latencies, n=100, method="inclusive")
    print(f"alert latency, publish → work order stored, {len(sent)} fire alarms")
    print(f"background load: {rate:.0f} msg/s QoS 1 requested ({line or 'n/a'})")
    print(f"messages processed by the gateway: {sum(gw.counters.messages.values())}")
    print(
        f"p50 {cut[49]:.1f} ms  p90 {cut[89]:.1f} ms  p99 {cut[98]:.1f} ms  "
        f"max {latencies[-1]:.1f} ms  missing {missing}"
    )


if __name__ == "__main__":
    sys.exit(main())
