"""The fleet runner against a real Mosquitto: what it says it sent is what arrives."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.community import load_devices
from simulators.fleet import OFFLINE, ONLINE, select_devices

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "demo_community"
LIMIT = 50


class Broker(Protocol):
    """What the ``mosquitto`` fixture yields."""

    @property
    def port(self) -> int:
        """The client port on 127.0.0.1."""
        ...


@contextmanager
def subscriber(port: int) -> Iterator[queue.Queue[tuple[str, bytes]]]:
    """Every message on ``scc/v1/#`` as (topic, payload), from a connected paho client."""
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-test-{time.time_ns()}")

    def on_connect(client: mqtt.Client, *_: Any) -> None:
        client.subscribe("scc/v1/#", qos=1)

    def on_subscribe(*_: Any) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received.put((message.topic, bytes(message.payload)))

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert subscribed.wait(10), "subscriber did not get SUBACK"
        yield received
    finally:
        client.disconnect()
        client.loop_stop()


def fleet_command(port: int, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "simulators", "fleet", "--community", str(FIXTURE)),
        *("--host", "127.0.0.1", "--port", str(port), "--seed", "1", "--interval", "1"),
        *("--limit", str(LIMIT), "--stats-every", "1", "--connections", "2", *extra),
    ]


def drain(received: queue.Queue[tuple[str, bytes]], ids: set[str]) -> Counter[str]:
    """Count what arrived from the fleet's devices: statuses by payload, data by topic kind."""
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        try:
            topic, payload = received.get(timeout=0.5)
        except queue.Empty:
            break
        _, _, device_id, topic_kind = topic.split("/")
        if device_id not in ids:
            continue  # another test's traffic on the shared broker
        if topic_kind == "status":
            counts["online" if payload == ONLINE else "offline" if payload == OFFLINE else "?"] += 1
        else:
            counts[topic_kind] += 1
    return counts


@pytest.fixture(scope="module")
def fleet_ids() -> set[str]:
    rows = load_devices(FIXTURE / "devices.csv")
    return {row.device_id for row in select_devices(rows, limit=LIMIT)}


def test_fleet_publishes_every_device_for_its_duration(
    mosquitto: Broker, fleet_ids: set[str]
) -> None:
    with subscriber(mosquitto.port) as received:
        done = subprocess.run(
            fleet_command(mosquitto.port, "--duration", "3"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        counts = drain(received, fleet_ids)
    assert done.returncode == 0, done.stderr
    assert counts["online"] == LIMIT and counts["offline"] == LIMIT
    data = counts["telemetry"] + counts["event"]
    # One heartbeat a second per device for 3 s, phases spread over the first second.
    assert 2 * LIMIT <= data <= 4 * LIMIT, counts
    assert "sent=" in done.stderr


def test_fleet_stops_cleanly_on_sigterm(mosquitto: Broker, fleet_ids: set[str]) -> None:
    with subscriber(mosquitto.port) as received:
        proc = subprocess.Popen(
            fleet_command(mosquitto.port),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(2.5)
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
            stopped_in = time.monotonic() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        counts = drain(received, fleet_ids)
    assert proc.returncode == 0, stderr
    assert stopped_in < 6.0
    assert counts["online"] == LIMIT and counts["offline"] == LIMIT, counts
