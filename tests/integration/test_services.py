"""The local-server helpers against real Mosquitto and InfluxDB processes."""

from __future__ import annotations

import argparse
import json
import queue
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.services import base, influxdb, manager, mosquitto
from gateway.services.base import BinaryNotFoundError, ManagedProcess, ServiceStartError, free_port
from gateway.services.influxdb import influx_query
from gateway.services.mosquitto import MosquittoConfig

pytestmark = pytest.mark.integration

WAIT = 10.0


class ServerFactory(Protocol):
    """The shape of the ``private_mosquitto`` / ``private_influxdb`` fixtures."""

    def __call__(self, *, port: int | None = None, state_dir: Path | None = None) -> ManagedProcess:
        """Start a private server."""
        ...


@contextmanager
def mqtt_client(
    port: int, client_id: str, *, clean_session: bool = True
) -> Iterator[tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]]:
    """A connected paho client whose received messages land in the queue."""
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    connected = threading.Event()

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            connected.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received.put(message)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert connected.wait(WAIT), "no CONNACK"
        yield client, received
    finally:
        client.disconnect()
        client.loop_stop()


def subscribe(client: mqtt.Client, topic: str) -> None:
    """Subscribe with QoS 1 and wait for the SUBACK."""
    done = threading.Event()

    def on_subscribe(
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        done.set()

    client.on_subscribe = on_subscribe
    client.subscribe(topic, qos=1)
    assert done.wait(WAIT), "no SUBACK"


def publish(port: int, topic: str, payload: bytes) -> None:
    """Publish one QoS 1 message and wait for the PUBACK."""
    with mqtt_client(port, f"pub-{free_port()}") as (client, _):
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT)
        assert info.is_published()


def influx_write(url: str, db: str, line: str) -> None:
    """POST one line-protocol point to /write."""
    query = urllib.parse.urlencode({"db": db, "precision": "s"})
    request = urllib.request.Request(f"{url}/write?{query}", data=line.encode(), method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=WAIT) as resp:
        assert resp.status == 204


def influx_values(url: str, db: str, measurement: str) -> list[list[Any]]:
    """All rows of a measurement, as InfluxDB returns them."""
    body = influx_query(url, f'SELECT * FROM "{measurement}"', db=db)
    series = body["results"][0].get("series", [])
    return [row for s in series for row in s["values"]]


def test_mqtt_publish_and_receive(mosquitto: ManagedProcess, topic_prefix: str) -> None:
    topic = f"{topic_prefix}/scc/v1/dev-1/telemetry"
    with mqtt_client(mosquitto.port, f"sub-{free_port()}") as (client, received):
        subscribe(client, topic)
        publish(mosquitto.port, topic, b'{"t": 21.5}')
        message = received.get(timeout=WAIT)
    assert (message.topic, message.payload, message.qos) == (topic, b'{"t": 21.5}', 1)


def test_influx_write_and_query(influxdb: ManagedProcess, influx_db: str) -> None:
    influx_write(influxdb.url, influx_db, "env,device_id=dev-1 temperature=21.5 1700000000")
    rows = influx_values(influxdb.url, influx_db, "env")
    assert rows == [["2023-11-14T22:13:20Z", "dev-1", 21.5]]


def test_persistent_session_survives_broker_restart(
    private_mosquitto: ServerFactory, topic_prefix: str
) -> None:
    broker = private_mosquitto()
    topic = f"{topic_prefix}/scc/v1/dev-1/event"
    with mqtt_client(broker.port, "gw-persistent", clean_session=False) as (client, _):
        subscribe(client, topic)
    publish(broker.port, topic, b"while-away")

    broker.restart()  # clean stop saves mosquitto.db; start loads it

    with mqtt_client(broker.port, "gw-persistent", clean_session=False) as (_, received):
        message = received.get(timeout=WAIT)
    assert (message.topic, message.payload) == (topic, b"while-away")


def test_kill_then_start(
    private_mosquitto: ServerFactory, private_influxdb: ServerFactory, tmp_path: Path
) -> None:
    broker, influx = private_mosquitto(), private_influxdb()
    influxdb.create_influx_database(influx.url, "durable")
    influx_write(influx.url, "durable", "env,device_id=dev-1 temperature=3 1700000000")
    for proc in (broker, influx):
        pid = proc.pid
        proc.kill()
        assert not proc.is_running()
        assert proc.pid is None
        assert not Path(f"/proc/{pid}").exists()
        assert proc.config.pid_path.exists()  # as after a crash ...
        assert ManagedProcess.attach(proc.config) is None  # ... and recognised as stale
        assert not proc.config.pid_path.exists()
        proc.start()
        assert proc.is_running()
        assert proc.config.probe()
    # Acknowledged writes survive SIGKILL: the WAL is fsynced before /write answers.
    assert influx_values(influx.url, "durable", "env") == [["2023-11-14T22:13:20Z", "dev-1", 3]]


def test_context_manager_starts_and_stops(tmp_path: Path) -> None:
    config = MosquittoConfig(port=free_port(), state_dir=tmp_path)
    with ManagedProcess(config) as proc:
        pid = proc.pid
        assert proc.is_running()
        assert mosquitto.probe_mqtt(config.port)
        assert ManagedProcess.attach(config) is not None
    assert not proc.is_running()
    assert not Path(f"/proc/{pid}").exists()
    assert not config.pid_path.exists()


def test_start_failure_shows_log_tail(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = ManagedProcess(MosquittoConfig(port=busy.getsockname()[1], state_dir=tmp_path))
        with pytest.raises(ServiceStartError, match=r"(?s)exited during start-up.*in use"):
            proc.start(timeout=WAIT)
    assert not proc.is_running()


def test_missing_binary_tells_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(base, "_SBIN_DIRS", ())
    with pytest.raises(BinaryNotFoundError, match=r"make test.*apt-get install mosquitto"):
        mosquitto.start_mosquitto(tmp_path)


def run_cli(*argv: str) -> int:
    """Parse ``argv`` with a tiny harness around :func:`manager.add_cli` and run it."""
    parser = argparse.ArgumentParser(prog="gateway")
    manager.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_cli_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "var")
    ports = ["--mqtt-port", str(free_port()), "--influx-port", str(free_port())]
    try:
        assert run_cli("services", "up", "--state-dir", state, *ports) == 0
        assert capsys.readouterr().out.count("started") == 2
        recorded = json.loads((tmp_path / "var" / "services.json").read_text())
        pids = [recorded[name]["pid"] for name in ("mosquitto", "influxdb")]
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)

        assert run_cli("services", "up", "--state-dir", state, *ports) == 0
        assert capsys.readouterr().out.count("reused") == 2

        assert run_cli("services", "status", "--state-dir", state) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["service", "running", "answering", "pid", "port", "url"]
        assert [line.split()[:4] for line in table[1:]] == [
            ["mosquitto", "yes", "yes", str(pids[0])],
            ["influxdb", "yes", "yes", str(pids[1])],
        ]
    finally:
        assert run_cli("services", "down", "--state-dir", state) == 0
    assert capsys.readouterr().out.count("stopped") == 2
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)

    assert run_cli("services", "status", "--state-dir", state) == 3
    assert run_cli("services", "down", "--state-dir", state) == 0
    assert capsys.readouterr().out.count("not running") == 2


def test_cli_up_reports_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        code = run_cli("services", "up", "--state-dir", str(tmp_path), "--mqtt-port", port)
    assert code == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "--mqtt-port" in err
    assert not (tmp_path / "mosquitto" / "mosquitto.pid").exists()
