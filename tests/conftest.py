"""Shared fixtures: real Mosquitto and InfluxDB servers on free loopback ports.

The session-scoped ``mosquitto`` and ``influxdb`` servers are shared by all tests, which
keep out of each other's way through ``topic_prefix`` and ``influx_db``. Tests that kill
or restart a server take their own from ``private_mosquitto`` / ``private_influxdb``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from gateway.services.base import ManagedProcess
from gateway.services.influxdb import create_influx_database, drop_influx_database, start_influxdb
from gateway.services.mosquitto import start_mosquitto


class ServerFactory(Protocol):
    """Starts a private server; every server it started is stopped after the test."""

    def __call__(self, *, port: int | None = None, state_dir: Path | None = None) -> ManagedProcess:
        """Start a server in ``state_dir`` (a fresh temporary one if None) on ``port``."""
        ...


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """A broker shared by the whole session (do not stop or kill it)."""
    proc = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """An InfluxDB shared by the whole session (do not stop or kill it)."""
    proc = start_influxdb(tmp_path_factory.mktemp("influxdb"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def influx_db(influxdb: ManagedProcess) -> Iterator[str]:
    """A database of its own for this test, created before and dropped after."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    create_influx_database(influxdb.url, name)
    try:
        yield name
    finally:
        drop_influx_database(influxdb.url, name)


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix unique to this test, e.g. ``test/test_publish-1a2b3c4d`` (no slash at end)."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:40]
    return f"test/{readable}-{uuid.uuid4().hex[:8]}"


def _factory(
    tmp_path_factory: pytest.TempPathFactory,
    start: Callable[[Path, int | None], ManagedProcess],
    base: str,
) -> Iterator[ServerFactory]:
    started: list[ManagedProcess] = []

    def make(*, port: int | None = None, state_dir: Path | None = None) -> ManagedProcess:
        proc = start(state_dir or tmp_path_factory.mktemp(base), port)
        started.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def private_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Factory for brokers this test may stop, kill and restart; all stopped afterwards."""
    yield from _factory(tmp_path_factory, start_mosquitto, "private-mosquitto")


@pytest.fixture
def private_influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Factory for InfluxDB servers this test may stop, kill and restart; all stopped afterwards."""
    yield from _factory(tmp_path_factory, start_influxdb, "private-influxdb")
