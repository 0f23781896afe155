"""Issue 14, items 5 and 9 (gateway side), through a real Mosquitto and the gateway.

- A retained alarm, processed once and resolved, never fires again nor is stored again:
  not on restarts (the session is kept: Retain Handling 1 sends no retained message on a
  resubscription), and not when the session was lost (the retained store's copy comes with
  RETAIN set and is kept as a dead letter ``retained``).
- A client taking the gateway's client id costs the gateway a moment, never a grown backoff.
- A refused connect leaves no future whose exception nobody retrieves.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.core.config import Settings
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess
from gateway.services.mosquitto import start_mosquitto
from gateway.sources.mqtt import wire
from gateway.sources.mqtt.source import MqttSource, SourceOptions
from tests.conftest import ServerFactory
from tests.fault.helpers import NumberedPublisher, account, prepare_registry, show, stored_seqs

from .gwtools import influx_query, running, wait_for

pytestmark = pytest.mark.integration

DEVICE = "smoke-ret-1"
TOPIC = f"scc/v1/{DEVICE}/telemetry"


def _settings(tmp_path: Path, broker: ManagedProcess, influx: ManagedProcess, db: str) -> Settings:
    return Settings(
        name="sessions", state_dir=tmp_path, mqtt_port=broker.port, influx_url=influx.url,
        influx_database=db, stats_interval_s=3600, linger_ms=5, gc_freeze=False,
    )  # fmt: skip


def _publish(port: int, payload: dict[str, Any], retain: bool) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        info = client.publish(TOPIC, orjson.dumps(payload), qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def _connect_as(port: int, client_id: str, clean_start: bool, session_expiry_s: int) -> None:
    """Connect with ``client_id``, read the CONNACK and disconnect (a one-off intruder)."""
    opts = wire.ConnectOptions(
        client_id=client_id, clean_start=clean_start, session_expiry_s=session_expiry_s
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(wire.connect_packet(opts))
        assert sock.recv(2)[0] == wire.CONNACK
        sock.sendall(wire.DISCONNECT_NORMAL)


def _points(influx: ManagedProcess, db: str) -> int:
    series = influx_query(
        influx.url, db, f"SELECT count(\"state\") FROM smoke WHERE device_id='{DEVICE}'"
    )
    return int(series[0]["values"][0][1]) if series else 0


def _fire_alerts(gateway: Gateway) -> list[str]:
    return [
        a.state for a in gateway.rules.alerts.search(rule_id="smoke.fire_alarm", device_id=DEVICE)
    ]


def test_a_retained_alarm_fires_once_however_often_the_gateway_restarts(
    tmp_path: Path, private_mosquitto: ServerFactory, influxdb: ManagedProcess, influx_db: str
) -> None:
    broker = private_mosquitto()
    prepare_registry(tmp_path, [DEVICE])
    settings = _settings(tmp_path, broker, influxdb, influx_db)
    with running(Gateway(settings)) as gateway:
        _publish(broker.port, {"state": "alarm"}, retain=True)  # no ts: stored at receive time
        wait_for(lambda: _fire_alerts(gateway) == ["firing"], 10, "the fire alert")
        _publish(broker.port, {"state": "normal", "smoke": 0.01}, retain=False)
        wait_for(lambda: _fire_alerts(gateway) == ["resolved"], 10, "the alert resolved")
        wait_for(lambda: _points(influxdb, influx_db) == 2, 10, "both points stored")

    def restart_and_look(expect_retained_dead_letters: int) -> None:
        with running(Gateway(settings)) as gateway:
            wait_for(
                lambda: gateway.counters.dead_letters["retained"] == expect_retained_dead_letters,
                5,
                f"{expect_retained_dead_letters} retained dead letters",
            )
            time.sleep(1.5)  # a retained message comes right after the SUBACK, if at all
            wait_for(gateway.drainer.drained, 10, "spool drained")
            assert sum(gateway.counters.messages.values()) == 0, "a message was ingested again"
            assert dict(gateway.counters.dead_letters) == (
                {"retained": 1} if expect_retained_dead_letters else {}
            )
            assert _fire_alerts(gateway) == ["resolved"], "the retained alarm fired again"
        assert _points(influxdb, influx_db) == 2, "the retained alarm was stored again"

    for _ in range(3):  # plain restarts: the broker kept our session and subscription
        restart_and_look(0)
    # The session is lost (here wiped on purpose): the subscription is new, and the broker
    # sends its retained copy of the alarm, with RETAIN set.
    _connect_as(broker.port, settings.client_id, clean_start=True, session_expiry_s=0)
    restart_and_look(1)
    restart_and_look(0)  # and not again on the next restart


@pytest.mark.parametrize("clean_start", [False, True], ids=["keeps-session", "wipes-session"])
def test_a_takeover_of_the_client_id_costs_a_moment_not_a_backoff(
    tmp_path: Path,
    private_mosquitto: ServerFactory,
    influxdb: ManagedProcess,
    influx_db: str,
    capsys: pytest.CaptureFixture[str],
    clean_start: bool,
) -> None:
    broker = private_mosquitto()
    devices = [f"smoke-t{i}" for i in range(10)]
    prepare_registry(tmp_path, devices)
    settings = _settings(tmp_path, broker, influxdb, influx_db)
    publisher = NumberedPublisher(broker.port, devices, 3000, 200, f"takeover-{clean_start}")
    gaps = []
    with running(Gateway(settings)) as gateway:
        publisher.start()
        try:
            for _ in range(7):
                time.sleep(1.5)  # each session lasts longer than the takeover grace
                generation = gateway.source.generation
                started = time.monotonic()
                _connect_as(broker.port, settings.client_id, clean_start, 3600)
                wait_for(
                    lambda g=generation: (
                        gateway.source.generation > g  # type: ignore[misc]
                        and gateway.source.connected.is_set()
                    ),
                    15,
                    "the gateway back",
                )
                gaps.append(time.monotonic() - started)
            publisher.join(60)
            publisher.wait_acked(30)
            sent = publisher.sent()
            wait_for(gateway.drainer.drained, 30, "spool drained")
            time.sleep(1)
            wait_for(gateway.drainer.drained, 30, "spool drained")
        finally:
            publisher.close()
        reconnects = gateway.source.reconnects
    result = account(sent, stored_seqs(influxdb.url, influx_db))
    show(
        capsys,
        f"takeovers of the gateway's client id ({'wiping' if clean_start else 'keeping'} its"
        f" session): back after {', '.join(f'{g * 1000:.0f}' for g in gaps)} ms; {result.line()}",
    )
    assert reconnects >= 7
    assert max(gaps) < 1.0, f"the gateway waited out a backoff: {gaps}"
    assert result.duplicated == 0 and result.unexpected == 0
    if not clean_start:
        # The broker kept the session: whatever went to the intruder is resent to us.
        assert result.lost == 0, f"lost, e.g.: {result.lost_examples}"


def test_a_refused_connect_leaves_no_unretrieved_future(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = start_mosquitto(tmp_path / "broker", dynsec=True)  # no anonymous logins
    # pytest keeps every log record, with its arguments (the connection errors, whose
    # tracebacks hold the connections and their futures): not collected, never reported.
    monkeypatch.setattr(logging.getLogger("gateway"), "propagate", False)

    async def go() -> tuple[list[dict[str, Any]], int]:
        loop = asyncio.get_running_loop()
        reports: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reports.append(context))
        connect = wire.ConnectOptions(client_id="intruder", username="nobody", password="wrong")
        options = SourceOptions(
            port=broker.port, connect=connect, reconnect_min_s=0.05, reconnect_max_s=0.1
        )
        source = MqttSource(options)
        await source.start()
        await asyncio.sleep(2.0)
        await source.stop()
        gc.collect()  # a future's unretrieved exception is reported when it is collected
        await asyncio.sleep(0.05)
        return reports, source.reconnects

    try:
        reports, reconnects = asyncio.run(go())
    finally:
        broker.stop()
    assert reconnects >= 5
    assert [str(r.get("message")) for r in reports] == []
