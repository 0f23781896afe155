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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.loadgen import make_devices
from gateway.core.config import Settings
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine
from gateway.runtime.service import Gateway
from gateway.services.influxdb import create_influx_database, start_influxdb
from gateway.services.mosquitto import start_mosquitto

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
    """Takes the time each device's work order was committed (from the gateway's events)
    and the time InfluxDB acknowledged the write holding its alarm's point."""

    def __init__(self, gateway: Gateway) -> None:
        self.opened: dict[str, int] = {}
        self.stored: dict[str, int] = {}
        self.waiting: set[str] = set()  # alarms published, point not yet stored
        self._lock = threading.Lock()
        self._forward = gateway.rules._publish
        gateway.rules._publish = self._capture
        for writer in gateway.drainer.writers:
            writer.write = self._watch(writer.write)  # type: ignore[method-assign,assignment]

    def _capture(self, event: dict[str, Any]) -> None:
        if event.get("type") == "workorder.opened":
            self.opened.setdefault(str(event["order"]["device_id"]), time.time_ns())
        self._forward(event)

    def _watch(self, write: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def watched(body: bytes) -> None:
            write(body)  # returns once InfluxDB answered 204
            now = time.time_ns()
            with self._lock:
                found = [d for d in self.waiting if f"device_id={d},".encode() in body]
                for device_id in found:
                    self.waiting.discard(device_id)
                    self.stored.setdefault(device_id, now)

        return watched


def run_incidents(
    port: int, devices: list[str], spacing_s: float, recorder: Recorder
) -> dict[str, int]:
    """Publish one fire alarm per device; return publish times (ns)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-incidents")
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent: dict[str, int] = {}
    try:
        for device_id in devices:
            payload = json.dumps({"state": "alarm", "smoke": 0.42, "ts": int(time.time() * 1000)})
            with recorder._lock:
                recorder.waiting.add(device_id)
            sent[device_id] = time.time_ns()
            client.publish(f"scc/v1/{device_id}/event", payload, qos=1)
            time.sleep(spacing_s)
    finally:
        client.loop_stop()
        client.disconnect()
    return sent


@dataclass(frozen=True, slots=True)
class LatencyRun:
    """One run: publish times and when each alarm's work order and point were stored."""

    sent: dict[str, int]
    opened: dict[str, int]
    stored: dict[str, int]
    background: str
    processed: int


def main() -> int:
    """Entry point: ``python -m bench.alert_latency``; ``BENCH_LATENCY_REPEATS`` runs."""
    incidents = int(os.environ.get("BENCH_INCIDENTS", "1000"))
    rate = float(os.environ.get("BENCH_BACKGROUND_RATE", "10000"))
    spacing = float(os.environ.get("BENCH_INCIDENT_SPACING", "0.02"))
    repeats = int(os.environ.get("BENCH_LATENCY_REPEATS", "3"))
    print(
        f"alert latency: {incidents} fire alarms under {rate:.0f} msg/s QoS 1 background "
        f"telemetry, {repeats} runs"
    )
    runs = []
    for repeat in range(repeats):
        result = run_once(incidents, rate, spacing)
        runs.append(result)
        print(f"  run {repeat + 1}/{repeats}: background {result.background or 'n/a'}, "
              f"{result.processed} messages processed")  # fmt: skip
        for name, done in (("work order", result.opened), ("stored", result.stored)):
            print(f"    publish → {name:10} {summary(result.sent, done)}", flush=True)
    print()
    report(runs)
    return 0


def run_once(incidents: int, rate: float, spacing: float) -> LatencyRun:
    """One run against fresh servers and a fresh gateway (in this process)."""
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
        sent: dict[str, int] = {}
        background_line = ""
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
            sent = run_incidents(mqtt_server.port, smoke, spacing, recorder)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                len(recorder.opened) < len(sent) or len(recorder.stored) < len(sent)
            ):
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
    processed = sum(gateway.counters.messages.values())
    return LatencyRun(sent, recorder.opened, recorder.stored, background_line, processed)


def percentiles(sent: dict[str, int], done: dict[str, int]) -> tuple[list[float], int]:
    """Latencies in ms, sorted, and how many never completed."""
    latencies = sorted((done[d] - t) / 1e6 for d, t in sent.items() if d in done)
    return latencies, len(sent) - len(latencies)


def summary(sent: dict[str, int], done: dict[str, int]) -> str:
    """``p50 … p90 … p99 … max … missing …`` for one run."""
    latencies, missing = percentiles(sent, done)
    if len(latencies) < 2:
        return f"too few completed ({len(latencies)}), missing {missing}"
    cut = statistics.quantiles(latencies, n=100, method="inclusive")
    return (
        f"p50 {cut[49]:6.1f} ms  p90 {cut[89]:6.1f} ms  p99 {cut[98]:6.1f} ms  "
        f"max {latencies[-1]:6.1f} ms  missing {missing}"
    )


def _run_gateway(gateway: Gateway) -> None:
    import asyncio

    asyncio.run(gateway.run())


def report(runs: list[LatencyRun]) -> None:
    """Medians over the runs of each run's p50 and p99, against the target."""
    print(f"{'latency (median of runs)':28} {'p50 ms':>8} {'p99 ms':>8} {'runs p99 (ms)':>24}")
    for name, field in (
        ("publish → work order stored", "opened"),
        ("publish → point in InfluxDB", "stored"),
    ):
        p50s: list[float] = []
        p99s: list[float] = []
        lost = 0
        for run in runs:
            done: dict[str, int] = getattr(run, field)
            latencies, missing = percentiles(run.sent, done)
            lost += missing
            if len(latencies) >= 2:
                cut = statistics.quantiles(latencies, n=100, method="inclusive")
                p50s.append(cut[49])
                p99s.append(cut[98])
        if not p99s:
            print(f"{name:28} no completed runs")
            continue
        each = " / ".join(f"{p:.1f}" for p in p99s)
        print(
            f"{name:28} {statistics.median(p50s):8.1f} {statistics.median(p99s):8.1f} "
            f"{each:>24}  missing {lost}"
        )
    print("target: p99 publish → work order ≤ 50 ms at 10,000 msg/s background")


if __name__ == "__main__":
    sys.exit(main())
