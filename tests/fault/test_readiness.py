"""Issue 14, item 13: /health/ready reflects every part ingest needs, with the reason.

One gateway (in this process, API on a free port) against a private Mosquitto and
InfluxDB: the broker stopped (MQTT session down), InfluxDB stopped for longer than
``influx_stall_s`` while data waits, and the drainer failing on an unexpected exception
(restarting, then flapping) each make it answer 503 naming the part; each time the part
comes back it answers 200 again.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.core.config import Settings
from gateway.runtime.service import Gateway
from gateway.runtime.wiring import make_writer
from gateway.services.base import free_port
from gateway.services.influxdb import create_influx_database
from gateway.storage.influx import LineWriter
from tests.conftest import ServerFactory
from tests.integration.gwtools import publish_all, running

from .helpers import prepare_registry, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.integration]

DEVICES = [f"smoke-r{i}" for i in range(5)]


class BreakableWriter:
    """The real InfluxDB writer, raising an unexpected exception while ``broken`` is set
    (a stand-in for a bug in the drain path: the drainer must restart and show it)."""

    def __init__(self, inner: LineWriter) -> None:
        self.inner = inner
        self.broken = threading.Event()

    def write(self, body: bytes) -> None:
        if self.broken.is_set():
            raise RuntimeError("injected drainer failure")
        self.inner.write(body)

    def close(self) -> None:
        self.inner.close()


def ready(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)
    except OSError:
        return 0, {}


def not_ready_with(port: int, part: str, words: str) -> bool:
    status, body = ready(port)
    checks = body.get("checks")
    return status == 503 and isinstance(checks, dict) and words in str(checks.get(part, ""))


def publish(port: int, n: int) -> None:
    publish_all(port, [(f"scc/v1/{DEVICES[0]}/telemetry", b'{"state":"normal"}')] * n)


def test_readiness_names_each_failing_part_and_recovers(
    tmp_path: Path, private_mosquitto: ServerFactory, private_influxdb: ServerFactory
) -> None:
    broker = private_mosquitto()
    influx = private_influxdb()
    create_influx_database(influx.url, "ready")
    state = tmp_path / "gw"
    prepare_registry(state, DEVICES)
    api = free_port()
    settings = Settings(
        name="ready", state_dir=state, mqtt_port=broker.port, influx_url=influx.url,
        influx_database="ready", api_port=api, influx_stall_s=3, stats_interval_s=3600,
    )  # fmt: skip
    writer = BreakableWriter(make_writer(settings))
    gateway = Gateway(settings, writer=writer)
    with running(gateway):
        wait_until(lambda: ready(api)[0] == 200, 20, "ready at start")
        assert ready(api)[1]["checks"] == {
            "mqtt": "ok", "persist": "ok", "influxdb": "ok", "threads": "ok",
        }  # fmt: skip

        # MQTT session down: the broker stops.
        broker.stop()
        wait_until(lambda: not_ready_with(api, "mqtt", "not subscribed"), 20, "mqtt down")
        broker.start()
        wait_until(lambda: ready(api)[0] == 200, 40, "ready after the broker is back")

        # InfluxDB unreachable for longer than the bound while data waits.
        influx.stop()
        publish(broker.port, 5)
        wait_until(
            lambda: not_ready_with(api, "influxdb", "no successful write"), 30, "influx down"
        )
        assert "InfluxDB unreachable" in str(ready(api)[1]["checks"]["influxdb"])  # type: ignore[index]
        influx.start()
        wait_until(lambda: ready(api)[0] == 200, 40, "ready after InfluxDB is back")

        # The drainer dies on an unexpected exception: restarted, shown while down/flapping.
        writer.broken.set()
        publish(broker.port, 5)
        wait_until(lambda: not_ready_with(api, "threads", "influx-drainer"), 30, "drainer down")
        restarts = gateway.drainer.thread.restarts
        assert restarts >= 1
        writer.broken.clear()
        started = time.monotonic()
        # Back: it drains again; ready once it no longer flaps (restarts within a minute).
        wait_until(gateway.drainer.drained, 60, "drained after the drainer is back")
        wait_until(lambda: ready(api)[0] == 200, 90, "ready after the drainer is back")
        assert time.monotonic() - started < 90
    metrics = {s.name + str(s.labels): s.value for s in gateway.samples()}
    assert metrics["scc_thread_restarts_total(('thread', 'influx-drainer'),)"] == restarts
