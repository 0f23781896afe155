"""Per-device broker credentials against a real Mosquitto with the dynamic-security plugin.

A private broker runs in dynsec mode (no anonymous access); devices are registered
through the API with a :class:`DynsecProvisioner`, then connect with the login the API
returned once. Refused publishes are checked twice: the MQTT 5 PUBACK says "not
authorized", and the gateway's subscriber never gets the message (a later allowed
message from the same connection arrives first, so ordering proves the absence).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.provisioning.dynsec import DynsecError, DynsecProvisioner
from gateway.services.base import LOOPBACK, ManagedProcess
from gateway.services.mosquitto import MosquittoConfig, start_mosquitto
from tests.integration.test_api_common import ApiEnv, make_env

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
NOT_AUTHORIZED = 135
ACCEPTED = {0, 16}  # success, and "no matching subscribers" (accepted all the same)


@dataclass
class Peer:
    """A paho MQTT 5 client that records what happens to it."""

    client: Any
    connected: threading.Event = field(default_factory=threading.Event)
    connack: Any = None
    disconnected: threading.Event = field(default_factory=threading.Event)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    pubacks: dict[int, int] = field(default_factory=dict)
    subacks: list[int] = field(default_factory=list)
    acked: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.pubacks, TIMEOUT), "no PUBACK"
            return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK reason code."""
        count = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: len(self.subacks) > count, TIMEOUT), "no SUBACK"
            return self.subacks[-1]

    def wait_message(self, topic: str) -> bytes:
        """The payload of the first message on ``topic`` (waits for it)."""
        with self.arrived:
            found = self.arrived.wait_for(
                lambda: any(t == topic for t, _ in self.messages), TIMEOUT
            )
        assert found, f"nothing arrived on {topic}; got {self.messages}"
        return next(p for t, p in self.messages if t == topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    port: int,
    username: str | None = None,
    password: str | None = None,
    client_id: str | None = None,
) -> Peer:
    """Connect and wait for the CONNACK (refused or not); a random client id by default."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"t-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )
    client.reconnect_delay_set(60, 60)  # a refused login must not retry during the test
    peer = Peer(client)
    if username is not None:
        client.username_pw_set(username, password)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        peer.connack = reason
        peer.connected.set()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        with peer.arrived:
            peer.messages.append((message.topic, message.payload))
            peer.arrived.notify_all()

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with peer.acked:
            peer.pubacks[mid] = reason.value
            peer.acked.notify_all()

    def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        with peer.acked:
            peer.subacks.append(reasons[0].value)
            peer.acked.notify_all()

    client.on_connect, client.on_message = on_connect, on_message
    client.on_publish, client.on_subscribe = on_publish, on_subscribe
    client.on_disconnect = lambda *_args: peer.disconnected.set()
    client.connect(LOOPBACK, port)
    client.loop_start()
    assert peer.connected.wait(TIMEOUT), "no CONNACK"
    return peer


@dataclass
class Setup:
    """A dynsec broker, its provisioner, the gateway's login and the API."""

    broker: ManagedProcess
    provisioner: DynsecProvisioner
    gateway_password: str
    api: ApiEnv


def _admin(broker: ManagedProcess) -> tuple[str, str]:
    assert isinstance(broker.config, MosquittoConfig)
    return broker.config.dynsec_admin()


@pytest.fixture
def setup(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[Setup]:
    broker = start_mosquitto(tmp_path / "broker", dynsec=True)
    provisioner = DynsecProvisioner.connect(LOOPBACK, broker.port, *_admin(broker))
    try:
        gateway_password = secrets.token_urlsafe(24)
        provisioner.ensure_gateway_role("scc-gateway", gateway_password)
        for api in make_env(tmp_path_factory, tmp_path, provisioner=provisioner):
            yield Setup(broker, provisioner, gateway_password, api)
    finally:
        provisioner.close()
        broker.stop()


def _register(setup: Setup, device_id: str) -> dict[str, Any]:
    body = {"device_id": device_id, "kind": "smoke", "node": "B1-1"}
    response = setup.api.client.post("/devices", headers=setup.api.auth("integrator"), json=body)
    assert response.status_code == 201, response.text
    credentials: dict[str, Any] = response.json()["credentials"]
    return credentials


@pytest.fixture
def gateway_sub(setup: Setup) -> Iterator[Peer]:
    peer = connect(setup.broker.port, "scc-gateway", setup.gateway_password)
    assert not peer.connack.is_failure
    assert peer.subscribe("scc/v1/+/+") < 128
    yield peer
    peer.close()


def test_anonymous_and_wrong_logins_are_refused(setup: Setup) -> None:
    _register(setup, "smoke-dyn-1")
    for username, password in [(None, None), ("smoke-dyn-1", "wrong"), ("nobody", "x")]:
        peer = connect(setup.broker.port, username, password)
        try:
            assert peer.connack.is_failure, (username, peer.connack)
        finally:
            peer.close()


def test_device_publishes_only_on_its_own_topics(setup: Setup, gateway_sub: Peer) -> None:
    creds = _register(setup, "smoke-dyn-1")
    _register(setup, "smoke-dyn-2")
    device = connect(setup.broker.port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert not device.connack.is_failure
        assert device.publish("scc/v1/smoke-dyn-2/telemetry", b'{"forged": 1}') == NOT_AUTHORIZED
        assert device.publish("scc/v1/smoke-dyn-1/command", b"{}") == NOT_AUTHORIZED
        assert device.publish("other/topic", b"{}") == NOT_AUTHORIZED
        assert device.publish("scc/v1/smoke-dyn-1/telemetry", b'{"battery": 90}') == 0
        assert gateway_sub.wait_message("scc/v1/smoke-dyn-1/telemetry") == b'{"battery": 90}'
        topics = [topic for topic, _ in gateway_sub.messages]
        assert topics == ["scc/v1/smoke-dyn-1/telemetry"]  # the refused ones came before it
        assert device.subscribe("scc/v1/smoke-dyn-2/command") == NOT_AUTHORIZED
        assert device.subscribe("scc/v1/#") == NOT_AUTHORIZED
        assert device.subscribe(creds["command_topic"]) < 128
        assert gateway_sub.publish(creds["command_topic"], b'{"mute": true}') == 0
        assert device.wait_message(creds["command_topic"]) == b'{"mute": true}'
    finally:
        device.close()


def test_decommissioned_device_is_cut_off(setup: Setup) -> None:
    creds = _register(setup, "smoke-dyn-3")
    device = connect(setup.broker.port, creds["username"], creds["password"], creds["client_id"])
    assert not device.connack.is_failure
    response = setup.api.client.delete("/devices/smoke-dyn-3", headers=setup.api.auth())
    assert response.status_code == 200
    assert device.disconnected.wait(TIMEOUT), "the broker kept the revoked device connected"
    device.close()
    again = connect(setup.broker.port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert again.connack.is_failure
    finally:
        again.close()


def test_logins_survive_a_broker_restart(setup: Setup) -> None:
    creds = _register(setup, "smoke-dyn-4")
    setup.broker.restart()
    device = connect(setup.broker.port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert not device.connack.is_failure
        assert device.publish("scc/v1/smoke-dyn-4/status", b"online") in ACCEPTED
    finally:
        device.close()


def test_provisioner_errors_are_clear(setup: Setup) -> None:
    wrong = DynsecProvisioner.connect(
        LOOPBACK, setup.broker.port, "scc-dynsec-admin", "x", timeout=3
    )
    with pytest.raises(DynsecError, match="refused"):
        wrong.create("smoke-dyn-5")
    wrong.close()
    port = setup.broker.port
    setup.broker.stop()
    gone = DynsecProvisioner.connect(LOOPBACK, port, *_admin(setup.broker), timeout=3)
    with pytest.raises(DynsecError, match=str(port)):
        gone.create("smoke-dyn-5")
    gone.close()
