"""Issue 7's acceptance test: no acknowledged message is lost through faults.

A numbered stream is published at a steady rate while InfluxDB is stopped for 30 s, the
gateway is SIGKILLed twice and Mosquitto is restarted once; afterwards every sequence number
the broker acknowledged must be in InfluxDB. The restart of Mosquitto is a clean one
(SIGTERM): the broker writes its persistent sessions on shutdown, whereas a SIGKILLed broker
would lose what it queued since its last autosave, which no client can make up for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.services.influxdb import create_influx_database
from tests.conftest import ServerFactory

from .helpers import (
    GatewayProcess,
    NumberedPublisher,
    account,
    dead_letter_counts,
    prepare_registry,
    show,
    stored_count,
    stored_seqs,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.integration]

DEVICES = [f"smoke-f{i:02d}" for i in range(50)]
RATE = 400.0  # msg/s
TOTAL = 34_000  # 85 s of stream
INFLUX_DOWN_S = 30.0


class Schedule:
    """Runs fault actions at fixed offsets from the start of the stream and logs them."""

    def __init__(self, publisher: NumberedPublisher) -> None:
        self.publisher = publisher
        self.started = time.monotonic()
        self.log: list[str] = []

    def at(self, offset: float, what: str, action: Callable[[], object]) -> None:
        """Sleep until ``offset`` s into the stream, then act."""
        delay = self.started + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        assert not self.publisher.errors, f"publisher failed: {self.publisher.errors[0]!r}"
        begun = time.monotonic()
        action()
        self.log.append(
            f"  {begun - self.started:5.1f} s  {what} ({time.monotonic() - begun:.1f} s); "
            f"acked so far {self.publisher.acked_count}"
        )


def test_no_acknowledged_message_is_lost(
    tmp_path: Path,
    private_mosquitto: ServerFactory,
    private_influxdb: ServerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = private_mosquitto()
    influx = private_influxdb()
    database = "faults"
    create_influx_database(influx.url, database)
    state = tmp_path / "gateway"
    prepare_registry(state, DEVICES)
    gateway = GatewayProcess(state, "faults", broker.port, influx.url, database)
    publisher = NumberedPublisher(broker.port, DEVICES, TOTAL, RATE, "fault-publisher")
    started = time.monotonic()
    try:
        gateway.start()
        publisher.start()
        plan = Schedule(publisher)
        plan.at(5, "InfluxDB stopped", influx.stop)
        plan.at(12, "gateway SIGKILL 1 (InfluxDB down, spool filling)", gateway.kill)
        plan.at(15, "gateway started again", gateway.start)
        plan.at(5 + INFLUX_DOWN_S, "InfluxDB started again", influx.start)
        plan.at(40, "gateway SIGKILL 2 (InfluxDB back)", gateway.kill)
        plan.at(43, "gateway started again", gateway.start)
        plan.at(60, "Mosquitto restarted", broker.restart)
        publisher.join(TOTAL / RATE + 60)
        publisher.wait_acked(60)
        published_s = time.monotonic() - started
        sent = publisher.sent()
        try:
            drain_s = wait_until(
                lambda: stored_count(influx.url, database) >= len(sent),
                120,
                "InfluxDB holds the whole stream",
                interval=0.5,
            )
        except AssertionError:
            drain_s = float("nan")  # the accounting below says what is missing
        stored = stored_seqs(influx.url, database)
        exit_code = gateway.stop()
        dead = dead_letter_counts(state)
    finally:
        publisher.close()
        gateway.stop()
    result = account(sent, stored, publisher.published)
    show(
        capsys,
        f"fault suite (no loss): {TOTAL} msgs at {RATE:.0f}/s from {len(DEVICES)} devices\n"
        + "\n".join(plan.log)
        + f"\n  stream published and acked after {published_s:.1f} s, "
        f"stored {drain_s:.1f} s later; publisher connects {publisher.connects}, "
        f"gateway starts {gateway.starts}, kills {gateway.kills}\n"
        f"  {result.line()} (dead letters: {sum(dead.values())})",
    )
    assert result.sent == TOTAL, "every published message must be acknowledged by the broker"
    assert result.lost == 0, f"lost, e.g.: {result.lost_examples}"
    assert result.unexpected == 0
    assert dead == {}
    assert exit_code == 0, gateway.log_tail()
    # Three starts plus one resubscription after the broker restart, each with its session.
    assert gateway.log_count("subscribed to") >= 4
    assert gateway.log_count("session present: True") >= 3


def test_database_is_created_when_influxdb_comes_back(
    tmp_path: Path,
    private_mosquitto: ServerFactory,
    private_influxdb: ServerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = private_mosquitto()
    influx = private_influxdb()
    influx.stop()  # down before the gateway starts, and the database does not exist yet
    state = tmp_path / "gateway"
    devices = DEVICES[:10]
    prepare_registry(state, devices)
    gateway = GatewayProcess(state, "nodb", broker.port, influx.url, "created_later")
    publisher = NumberedPublisher(broker.port, devices, 500, 1000, "nodb-publisher")
    try:
        gateway.start()
        publisher.start()
        publisher.join(30)
        publisher.wait_acked(30)
        influx.start()
        wait_until(
            lambda: stored_count(influx.url, "created_later") >= 500,
            10,
            "the spooled messages in InfluxDB",
        )
    finally:
        publisher.close()
        gateway.stop()
        if gateway.log_count("database not found"):
            show(capsys, "gateway log says: database not found (issue reproduced)")
