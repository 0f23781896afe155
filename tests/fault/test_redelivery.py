"""Issue 14, item 7: readings without a device ``ts`` are not duplicated by a crash.

Such a reading is stored at its receive time. When the gateway is SIGKILLed after a batch is
spooled but before the broker has its PUBACKs, the broker resends those messages (DUP, same
packet ids); with a new receive time each would be a second point. The gateway notes every
batch's receive time before spooling it (gateway.sources.mqtt.receipts) and gives a resent
message its first one again. A numbered stream without ``ts`` (each ``seq`` once per device) is
published while the gateway is SIGKILLed again and again; afterwards every acknowledged ``seq``
must be stored exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from gateway.services.influxdb import create_influx_database
from tests.conftest import ServerFactory

from . import helpers
from .helpers import (
    GatewayProcess,
    Key,
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

DEVICES = [f"smoke-r{i:02d}" for i in range(40)]
RATE = 1000.0  # msg/s
TOTAL = 36_000
KILLS = 6


def numbered_without_ts(n: int, devices: Sequence[str]) -> tuple[str, bytes, Key]:
    """Message ``n`` of the stream, with a ``seq`` but no ``ts``: stored at receive time."""
    device = devices[n % len(devices)]
    seq = n // len(devices) + 1
    payload = orjson.dumps({"state": "normal", "seq": seq})
    return f"scc/v1/{device}/telemetry", payload, (device, seq)


def test_sigkills_duplicate_no_reading_without_ts(
    tmp_path: Path,
    private_mosquitto: ServerFactory,
    private_influxdb: ServerFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(helpers, "numbered", numbered_without_ts)
    broker = private_mosquitto()
    influx = private_influxdb()
    database = "redelivery"
    create_influx_database(influx.url, database)
    state = tmp_path / "gateway"
    prepare_registry(state, DEVICES)
    gateway = GatewayProcess(state, "redelivery", broker.port, influx.url, database)
    publisher = NumberedPublisher(broker.port, DEVICES, TOTAL, RATE, "redelivery-publisher")
    log = []
    started = time.monotonic()
    try:
        gateway.start()
        publisher.start()
        for kill in range(1, KILLS + 1):
            time.sleep(max(0.0, started + kill * 4.5 - time.monotonic()))
            acked = publisher.acked_count
            gateway.kill()
            gateway.start()
            log.append(f"  {time.monotonic() - started:5.1f} s  SIGKILL {kill} (acked {acked})")
        publisher.join(TOTAL / RATE + 60)
        publisher.wait_acked(60)
        sent = publisher.sent()
        wait_until(
            lambda: stored_count(influx.url, database) >= len(sent),
            120,
            "InfluxDB holds the whole stream",
            interval=0.5,
        )
        time.sleep(2)  # a duplicate would come with the last redeliveries, if at all
        stored = stored_seqs(influx.url, database)
        exit_code = gateway.stop()
        dead = dead_letter_counts(state)
    finally:
        publisher.close()
        gateway.stop()
    result = account(sent, stored)
    show(
        capsys,
        f"redelivery after SIGKILL: {TOTAL} msgs without ts at {RATE:.0f}/s, "
        f"{len(DEVICES)} devices, {KILLS} SIGKILLs\n" + "\n".join(log) + f"\n  {result.line()}",
    )
    assert result.sent == TOTAL
    assert result.lost == 0, f"lost, e.g.: {result.lost_examples}"
    assert result.duplicated == 0, "a redelivered reading without ts was stored twice"
    assert result.unexpected == 0
    assert dead == {}
    assert exit_code == 0, gateway.log_tail()
    assert gateway.log_count("session present: True") >= KILLS
    assert gateway.log_count("redelivered messages keep their first receive time") >= 1
