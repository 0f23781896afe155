"""Issue 14, item 4: payloads of 1-10 MB reach the broker, and none of them vanishes.

The gateway advertises no Maximum Packet Size, so the broker (16 MiB limit) hands it every
message it accepted; each one over ``max_payload_bytes`` is streamed past, never buffered, and
kept as an ``oversized`` dead letter with its full length, SHA-256 and first 4 KiB. Published
with mosquitto_pub (MQTT 3.1.1 and 5) and paho-mqtt (5) while the gateway's memory is sampled.
Above the broker's own limit the publisher is told: MQTT 3.1.1 clients lose the connection,
MQTT 5 ones get DISCONNECT 0x95 (packet too large), and nothing reaches us.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.runtime.schema import make_engine
from gateway.services.base import ManagedProcess
from gateway.sources.mqtt import wire
from gateway.storage.deadletter import DeadLetterStore
from tests.conftest import ServerFactory

from .helpers import GatewayProcess, RssSampler, prepare_registry, show, stored_count, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.integration]

DEVICE = "smoke-big-1"
TOPIC = f"scc/v1/{DEVICE}/telemetry"
MIB = 1 << 20
SIZES = [MIB + 1, 2 * MIB, 3 * MIB, 4 * MIB + 7, 5 * MIB, 6 * MIB, 7 * MIB, 8 * MIB, 9 * MIB,
         10 * MIB, 10 * MIB - 1, 1536 * 1024, 2500 * 1024, 3333 * 1024, 4 * MIB, 5 * MIB + 3,
         6 * MIB, 10 * MIB]  # fmt: skip


def _payload(n: int, size: int) -> bytes:
    head = orjson.dumps({"state": "normal", "seq": n, "blob": ""})[:-2]
    return (head + (b"%06d" % n) * (size // 6 + 1))[:size]


def _mosquitto_pub(port: int, payload: bytes, version: str) -> subprocess.CompletedProcess[bytes]:
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-q", "1",
               "-V", version, "-s"]  # fmt: skip
    return subprocess.run(command, input=payload, capture_output=True, timeout=60, check=False)


def _paho_pub(port: int, payloads: list[bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            info = client.publish(TOPIC, payload, qos=1)
            info.wait_for_publish(60)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def _oversized(state: Path) -> list[tuple[int, str, bytes]]:
    """(length, sha256, kept payload) of each oversized dead letter."""
    engine = make_engine(f"sqlite:///{state / 'gateway.db'}")
    try:
        letters = DeadLetterStore(engine).list(reason="oversized", limit=1000)
    finally:
        engine.dispose()
    out = []
    for letter in letters:
        found = re.match(r"(\d+) bytes, at most \d+; sha256 ([0-9a-f]{64})", letter.detail)
        assert found, letter.detail
        out.append((int(found[1]), found[2], bytes(letter.payload)))
    return out


def test_big_payloads_are_dead_letters_and_memory_stays_flat(
    tmp_path: Path,
    private_mosquitto: ServerFactory,
    influxdb: ManagedProcess,
    influx_db: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = private_mosquitto()
    state = tmp_path / "gateway"
    prepare_registry(state, [DEVICE])
    gateway = GatewayProcess(state, "limits", broker.port, influxdb.url, influx_db)
    payloads = [_payload(n, size) for n, size in enumerate(SIZES)]
    try:
        gateway.start()
        time.sleep(1.0)
        with RssSampler(gateway.pid, interval=0.05) as rss:
            time.sleep(0.5)
            baseline = max(r for _, r in rss.samples) / MIB
            for payload in payloads[:6]:
                assert _mosquitto_pub(broker.port, payload, "mqttv311").returncode == 0
            for payload in payloads[6:12]:
                assert _mosquitto_pub(broker.port, payload, "mqttv5").returncode == 0
            _paho_pub(broker.port, payloads[12:])
            small = {"state": "normal", "seq": 99, "ts": int(time.time() * 1000)}  # now: not stale
            _paho_pub(broker.port, [orjson.dumps(small)])
            wait_until(lambda: len(_oversized(state)) >= len(SIZES), 60, "18 dead letters")
            wait_until(lambda: stored_count(influxdb.url, influx_db) == 1, 30, "the small one")
            time.sleep(0.5)
        letters = _oversized(state)
    finally:
        gateway.stop()
    show(
        capsys,
        f"oversized: {len(SIZES)} messages of {min(SIZES) / MIB:.1f}-{max(SIZES) / MIB:.0f} MiB "
        f"({sum(SIZES) / MIB:.0f} MiB) -> {len(letters)} dead letters; gateway RSS "
        f"{baseline:.0f} MiB before, peak {rss.peak_mib:.0f} MiB",
    )
    expected = sorted((len(p), hashlib.sha256(p).hexdigest(), p[:4096]) for p in payloads)
    assert sorted(letters) == expected
    assert rss.peak_mib - baseline < 40, "the gateway buffered big payloads"


def test_above_the_broker_limit_the_publisher_is_told(
    tmp_path: Path, private_mosquitto: ServerFactory
) -> None:
    broker = private_mosquitto()
    too_big = b"x" * (17 * MIB)  # the broker takes at most 16 MiB (gateway.services.mosquitto)
    v311 = _mosquitto_pub(broker.port, too_big, "mqttv311")
    assert v311.returncode != 0 and b"connection was lost" in v311.stderr
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(wire.connect_packet(wire.ConnectOptions(client_id="big", clean_start=True)))
        connack = wire.parse_connack(sock.recv(64)[2:])
        assert connack.maximum_packet_size == 16 * MIB  # announced to MQTT 5 publishers
        packet = wire.publish_packet(TOPIC, too_big, 1)
        sock.sendall(packet[:4096])  # the fixed header says how long it is: refused at once
        assert sock.recv(3) == bytes([wire.DISCONNECT, 1, 0x95])  # packet too large
