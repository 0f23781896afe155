"""Several gateway processes on one shared subscription, with rules kept per device.

Two workers (0 and 1 of 2) share the device subscription, so the broker hands each of them
roughly every other message. A count rule (three throws of one camera within an hour)
fires only if one rules engine sees all of a device's throws: with rules evaluated where
messages happen to land, most cameras would never reach three.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import Settings
from gateway.registry.store import Registry
from gateway.runtime.partition import owned_partitions, partition_of
from gateway.runtime.schema import make_engine
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess
from gateway.sources.mqtt import wire
from gateway.sources.mqtt.source import MqttSource, PublishRefusedError, SourceOptions

from .gwtools import influx_query, publish_all, running, wait_for

pytestmark = pytest.mark.integration

CAMERAS = 12
HIERARCHY = {
    "code": "ST1", "level": "street", "name": "街道", "children": [
        {"code": "SQ1", "level": "community", "name": "社区", "children": [
            {"code": "G1", "level": "grid", "name": "网格", "children": [
                {"code": "C1", "level": "compound", "name": "小区", "children": [
                    {"code": "B1", "level": "building", "name": "1号楼", "floors": 18}]}]}]}],
}  # fmt: skip
THREE_THROWS = """rules:
  - id: throw_camera.three_throws
    title: 三次抛物 / Three throws from one camera
    device_type: throw_camera
    severity: critical
    when: {field: event, op: eq, value: throw}
    count: {at_least: 3, within: 1h, group_by: [device_id]}
"""


def cameras(tag: str) -> list[str]:
    return [f"cam{tag}-{n}" for n in range(CAMERAS)]


def prepare(tmp_path: Path, devices: list[str]) -> Path:
    """Registry with the cameras in a shared gateway.db, and the site rules folder."""
    registry = Registry(make_engine(f"sqlite:///{tmp_path / 'gateway.db'}"))
    registry.load_hierarchy(HIERARCHY)
    lines = ["device_id,kind,model,codec,node,location,params,installed_at"]
    lines += [f"{d},throw_camera,HK-TC-200,json,B1,east,floors=18;facade=east," for d in devices]
    (tmp_path / "devices.csv").write_text("\n".join(lines) + "\n")
    registry.load_devices_csv(tmp_path / "devices.csv")
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "three.yaml").write_text(THREE_THROWS)
    return rules_dir


def worker(
    tmp_path: Path,
    mosquitto: ManagedProcess,
    influxdb: ManagedProcess,
    db: str,
    tag: str,
    index: int,
    workers: int,
    **more: Any,
) -> Gateway:
    settings = Settings(
        name=f"w{tag}", state_dir=tmp_path, mqtt_port=mosquitto.port,
        influx_url=influxdb.url, influx_database=db, stats_interval_s=3600, linger_ms=5,
        rules_dir=tmp_path / "rules", workers=workers, worker_index=index,
        partitioned=True, share_group=f"g{tag}", rule_partitions=8, **more,
    )  # fmt: skip
    return Gateway(settings)


def messages(devices: list[str]) -> list[tuple[str, bytes]]:
    """Per camera: throw, heartbeat, throw, heartbeat, throw, devices interleaved."""
    t0 = int(time.time() * 1000) - 60_000
    out = []
    for step in range(5):
        for n, device in enumerate(devices):
            doc: dict[str, Any] = {"event": "heartbeat", "ts": t0 + step * 1000 + n, "seq": step}
            if step % 2 == 0:
                doc.update(event="throw", confidence=0.9, floor_estimate=5)
            out.append((f"scc/v1/{device}/event", json.dumps(doc).encode()))
    return out


def stored(influxdb: ManagedProcess, db: str) -> Counter[tuple[str, int]]:
    series = influx_query(
        influxdb.url, db, 'SELECT "seq", "device_id" FROM "throw_camera" GROUP BY "device_id"'
    )
    return Counter((s["tags"]["device_id"], int(value[1])) for s in series for value in s["values"])


def alerts_by_device(gateway: Gateway) -> Counter[str]:
    found = gateway.rules.alerts.search(rule_id="throw_camera.three_throws")
    return Counter(alert.device_id for alert in found)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_two_workers_share_the_subscription_and_rules_see_every_message(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str, tag: str
) -> None:
    devices = cameras(tag)
    prepare(tmp_path, devices)
    assert {partition_of(d, 8) % 2 for d in devices} == {0, 1}  # both workers own cameras
    gateways = [worker(tmp_path, mosquitto, influxdb, influx_db, tag, k, 2) for k in (0, 1)]
    sent = messages(devices)
    with ExitStack() as stack:
        for g in gateways:
            stack.enter_context(running(g))
        publish_all(mosquitto.port, sent)
        wait_for(
            lambda: sum(sum(g.counters.messages.values()) for g in gateways) >= len(sent),
            20,
            "every message processed",
        )
        wait_for(lambda: len(alerts_by_device(gateways[0])) == CAMERAS, 20, "an alert per camera")
        wait_for(lambda: all(g.drainer.drained() for g in gateways), 20, "spools drained")
        time.sleep(0.5)  # a second alert, were there one, would show up now
        evaluated = [g.rule_consumer.readings for g in gateways if g.rule_consumer]
    # The broker spread the device messages over both workers...
    assert all(sum(g.counters.messages.values()) > 0 for g in gateways)
    # ...and each rules engine saw every reading of the cameras it owns, and only those.
    for k in (0, 1):
        owned = set(owned_partitions(8, 2, k))
        mine = [d for d in devices if partition_of(d, 8) in owned]
        assert evaluated[k] == 5 * len(mine)
    assert alerts_by_device(gateways[1]) == Counter({d: 1 for d in devices})
    points = stored(influxdb, influx_db)
    assert points == Counter({(d, step): 1 for d in devices for step in range(5)})


def test_forward_lost_with_the_connection_is_redelivered_not_lost(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str, tag: str
) -> None:
    devices = cameras(tag)
    prepare(tmp_path, devices)
    gateway = worker(tmp_path, mosquitto, influxdb, influx_db, tag, 0, 1)
    real_publish = gateway.source.publish
    cut: list[str] = []

    def cut_then_publish(
        topic: str, payload: bytes, require_subscriber: bool = False
    ) -> asyncio.Future[None]:
        if not cut:  # the connection drops just before the first forward: it is lost
            cut.append(topic)
            gateway.source.drop_connection()
        return real_publish(topic, payload, require_subscriber)

    gateway.source.publish = cut_then_publish  # type: ignore[method-assign]
    sent = messages(devices)
    with running(gateway):
        publish_all(mosquitto.port, sent)
        wait_for(lambda: len(alerts_by_device(gateway)) == CAMERAS, 30, "an alert per camera")
        wait_for(gateway.drainer.drained, 20, "spool drained")
        time.sleep(0.5)
    assert cut, "no forward was interrupted"
    assert gateway.source.reconnects >= 1
    # the interrupted batch was processed, not acknowledged, delivered again
    assert sum(gateway.counters.messages.values()) > len(sent)
    assert alerts_by_device(gateway) == Counter({d: 1 for d in devices})
    points = stored(influxdb, influx_db)
    assert set(points) == {(d, step) for d in devices for step in range(5)}


def test_publish_completes_on_puback_and_refuses_a_topic_nobody_reads(
    mosquitto: ManagedProcess, topic_prefix: str
) -> None:
    async def scenario() -> tuple[list[object], list[object]]:
        reader = MqttSource(
            SourceOptions(
                port=mosquitto.port,
                topic_filters=(f"{topic_prefix}/read",),
                connect=wire.ConnectOptions(client_id=f"r-{uuid.uuid4().hex}", clean_start=True),
                linger_s=0.001,
            )
        )
        writer = MqttSource(
            SourceOptions(
                port=mosquitto.port,
                topic_filters=(f"{topic_prefix}/nothing",),
                connect=wire.ConnectOptions(client_id=f"w-{uuid.uuid4().hex}", clean_start=True),
            )
        )
        await reader.start()
        await writer.start()
        try:
            await reader.wait_connected(10)
            await writer.wait_connected(10)
            read = [writer.publish(f"{topic_prefix}/read", b"%d" % n, True) for n in range(300)]
            unread = writer.publish(f"{topic_prefix}/unread", b"x", require_subscriber=True)
            tolerated = writer.publish(f"{topic_prefix}/unread", b"y")
            results = await asyncio.wait_for(
                asyncio.gather(*read, unread, tolerated, return_exceptions=True), 10
            )
            got: list[bytes] = []
            for _ in range(100):
                batch = await reader.next_batch(timeout=0.1)
                if batch is not None:
                    got += batch.payloads
                    reader.ack(batch)
                if len(got) >= 300:
                    break
            return list(results), list(got)
        finally:
            await writer.stop()
            await reader.stop()

    results, got = asyncio.run(scenario())
    assert results[:300] == [None] * 300
    assert isinstance(results[300], PublishRefusedError)
    assert results[300].reason_code == 0x10
    assert results[301] is None
    assert got == [b"%d" % n for n in range(300)]


def test_publish_fails_when_the_connection_is_lost(mosquitto: ManagedProcess) -> None:
    async def scenario() -> tuple[object, object]:
        source = MqttSource(
            SourceOptions(
                port=mosquitto.port,
                topic_filters=("test/never",),
                connect=wire.ConnectOptions(client_id=f"c-{uuid.uuid4().hex}", clean_start=True),
            )
        )
        before = source.publish("test/x", b"1")  # not connected yet
        await source.start()
        try:
            await source.wait_connected(10)
            pending = source.publish("test/x", b"2")
            source.drop_connection()  # before the broker could answer
            return await asyncio.gather(before, pending, return_exceptions=True)
        finally:
            await source.stop()

    before, pending = asyncio.run(scenario())
    assert isinstance(before, ConnectionError)
    assert isinstance(pending, ConnectionError)


def test_a_backlog_of_small_batches_does_not_stall_the_forwards(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str, tag: str
) -> None:
    # Many more batches than the source queues before it would pause reading: the PUBACKs
    # of the forwards arrive on that same connection, so it must keep reading.
    devices = cameras(tag)
    prepare(tmp_path, devices)
    gateway = worker(
        tmp_path, mosquitto, influxdb, influx_db, tag, 0, 1, batch_max=5, device_rate_per_s=0
    )
    t0 = int(time.time() * 1000) - 600_000
    sent = [
        (
            f"scc/v1/{devices[n % CAMERAS]}/event",
            json.dumps({"event": "heartbeat", "ts": t0 + n, "seq": n}).encode(),
        )
        for n in range(3000)
    ]
    with running(gateway):
        publish_all(mosquitto.port, sent)
        wait_for(
            lambda: gateway.rule_consumer is not None and gateway.rule_consumer.readings >= 3000,
            60,
            "every reading through the rule partitions",
        )
        wait_for(gateway.drainer.drained, 20, "spool drained")
    assert sum(stored(influxdb, influx_db).values()) == 3000
