"""Helpers for integration tests: run a gateway in a thread, publish, query InfluxDB."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.runtime.service import Gateway


@contextmanager
def running(gateway: Gateway, timeout: float = 20.0) -> Iterator[Gateway]:
    """Run ``gateway.run()`` on a thread of its own until the block ends."""
    loop = asyncio.new_event_loop()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop.run_until_complete(gateway.run())
        except BaseException as err:
            errors.append(err)
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="gateway", daemon=True)
    thread.start()
    wait_for(
        lambda: gateway.source.connected.is_set() or bool(errors), timeout, "gateway subscribed"
    )
    try:
        yield gateway
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(gateway.stop)
        thread.join(timeout)
        assert not thread.is_alive(), "gateway did not stop"
        if errors:
            raise errors[0]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 20 ms; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


def publish_all(port: int, messages: Iterable[tuple[str, bytes]], qos: int = 1) -> int:
    """Publish every (topic, payload) and wait until the broker has each one."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()
    return len(infos)


def influx_query(url: str, database: str, query: str) -> list[dict[str, Any]]:
    """Run an InfluxQL query; return the series of the first statement."""
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "ns"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as response:
        doc = json.load(response)
    result = doc["results"][0]
    if "error" in result:
        raise AssertionError(f"{query}: {result['error']}")
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def rows(url: str, database: str, measurement: str) -> list[dict[str, Any]]:
    """Every point of a measurement as dicts (tags and fields together)."""
    out = []
    for series in influx_query(url, database, f'SELECT * FROM "{measurement}"'):
        for values in series["values"]:
            out.append(dict(zip(series["columns"], values, strict=True)))
    return out
