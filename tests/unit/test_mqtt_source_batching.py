"""Batching of the MQTT source: linger for telemetry, an event seals its batch at once."""

from __future__ import annotations

import asyncio
import inspect

from gateway.sources.batch import Source
from gateway.sources.mqtt.source import MqttSource, SourceOptions


def _run(options: SourceOptions, topics: list[bytes]) -> tuple[list[int], float]:
    """Feed ``topics`` as one read; return the batch sizes handed out and the wait (s)."""

    async def go() -> tuple[list[int], float]:
        source = MqttSource(options)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for mid, topic in enumerate(topics, 1):
            source._on_publish(topic, b"{}", mid)
        sizes = []
        batch = await source.next_batch(timeout=2.0)
        waited = loop.time() - started
        while batch is not None:
            sizes.append(len(batch))
            batch = await source.next_batch(timeout=0.05)
        return sizes, waited

    return asyncio.run(go())


def test_telemetry_lingers() -> None:
    sizes, waited = _run(SourceOptions(linger_s=0.3), [b"scc/v1/d1/telemetry"] * 3)
    assert sizes == [3]
    assert waited >= 0.25


def test_event_seals_its_batch_without_lingering() -> None:
    topics = [b"scc/v1/d1/telemetry", b"scc/v1/s1/event", b"scc/v1/d2/telemetry"]
    sizes, waited = _run(SourceOptions(linger_s=1.0), topics)
    assert sizes == [3]  # what was read with the event goes along with it
    assert waited < 0.5


def test_no_urgent_suffixes_means_plain_linger() -> None:
    options = SourceOptions(linger_s=0.3, urgent_suffixes=())
    sizes, waited = _run(options, [b"scc/v1/s1/event"])
    assert sizes == [1]
    assert waited >= 0.25


def test_batch_max_still_seals() -> None:
    topics = [b"scc/v1/d1/telemetry"] * 4 + [b"scc/v1/s1/event"]
    sizes, waited = _run(SourceOptions(linger_s=1.0, batch_max=2), topics)
    assert sizes == [2, 2, 1]
    assert waited < 0.5


def test_the_mqtt_source_is_a_source() -> None:
    source: Source = MqttSource(SourceOptions())  # mypy checks the protocol's signatures
    for name in ("start", "next_batch", "stop"):
        assert inspect.iscoroutinefunction(getattr(source, name)), name
    for name in ("ack", "drop_connection"):
        assert not inspect.iscoroutinefunction(getattr(source, name)), name
    assert source.generation == 0
