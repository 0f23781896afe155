"""Issue 14, item 6: an outage backlog is kept, a flood is still limited.

While the gateway is down its persistent session at the broker queues what the devices
publish; when it comes back the broker delivers the whole backlog at once, far faster than
any device's rate. Five devices' readings, one every 10 s for 50 minutes, each carrying the
device's own ``ts``: all must be stored (on main, 495 of 1,500 were ``rate_limited``). Two
devices that flood in the same backlog, one without ``ts`` and one with all its ``ts`` within
one second, are still limited; so is a device that, once the gateway has heard it live,
makes up a long past (readings 10 s apart over five hours, delivered at once).
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from gateway.services.influxdb import create_influx_database
from tests.conftest import ServerFactory

from .helpers import (
    GatewayProcess,
    dead_letters_by_device,
    prepare_registry,
    publish_burst,
    show,
    stored_count,
    stored_seqs,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.integration]

HONEST = [f"smoke-o{i}" for i in range(5)]
BACKLOG = 300  # per device: one reading every 10 s for 50 minutes
NO_TS, SAME_SECOND, MADE_UP = "smoke-flood-nots", "smoke-flood-1s", "smoke-madeup"
FLOOD = 1000
MADE_UP_PAST = 2000  # readings 10 s apart: five and a half hours


def _reading(device: str, seq: int, ts_ms: int | None) -> tuple[str, bytes]:
    doc: dict[str, object] = {"state": "normal", "seq": seq}
    if ts_ms is not None:
        doc["ts"] = ts_ms
    return f"scc/v1/{device}/telemetry", orjson.dumps(doc)


def _by_device(url: str, database: str, device: str) -> int:
    return stored_count(url, database, where=f"\"device_id\" = '{device}'")


def _refused(state: Path, device: str) -> dict[str, int]:
    return {r: n for (d, r), n in dead_letters_by_device(state).items() if d == device}


def test_an_outage_backlog_is_stored_whole_and_floods_are_still_limited(
    tmp_path: Path,
    private_mosquitto: ServerFactory,
    private_influxdb: ServerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker, influx = private_mosquitto(), private_influxdb()
    database = "backlog"
    create_influx_database(influx.url, database)
    state = tmp_path / "gateway"
    prepare_registry(state, [*HONEST, NO_TS, SAME_SECOND, MADE_UP])
    gateway = GatewayProcess(state, "backlog", broker.port, influx.url, database)
    try:
        gateway.start()  # subscribes: from now on the broker keeps the gateway's session
        gateway.stop()
        # The outage: 50 minutes of readings (device time) queue in the broker.
        end_ms = int(time.time() * 1000) - 1000
        start_ms = end_ms - (BACKLOG - 1) * 10_000
        backlog = [
            _reading(device, n + 1, start_ms + n * 10_000)
            for n in range(BACKLOG)
            for device in HONEST
        ]
        floods = [_reading(NO_TS, n + 1, None) for n in range(FLOOD)]
        floods += [_reading(SAME_SECOND, n + 1, end_ms - 999 + n % 1000) for n in range(FLOOD)]
        publish_burst(broker.port, backlog + floods, "outage-devices")
        total = len(backlog) + len(floods)

        def accounted() -> int:
            stored = stored_count(influx.url, database)
            return stored + sum(dead_letters_by_device(state).values())

        # back: the broker delivers the whole backlog at once
        drain_s = gateway.start()
        drain_s += wait_until(lambda: accounted() >= total, 60, "backlog stored or refused")
        seqs = stored_seqs(influx.url, database)
        honest_refused = {d: _refused(state, d) for d in HONEST}
        flood_kept = {d: _by_device(influx.url, database, d) for d in (NO_TS, SAME_SECOND)}
        flood_refused = {d: _refused(state, d) for d in (NO_TS, SAME_SECOND)}

        # A device heard live, then "delivering a backlog" from five hours before.
        now_ms = int(time.time() * 1000)
        live = [_reading(MADE_UP, n + 1, now_ms - 5000 + n * 1000) for n in range(5)]
        publish_burst(broker.port, live, "made-up-live")
        wait_until(lambda: _by_device(influx.url, database, MADE_UP) >= 5, 30, "live readings")
        past_ms = now_ms - MADE_UP_PAST * 10_000
        made_up = [_reading(MADE_UP, 10 + n, past_ms + n * 10_000) for n in range(MADE_UP_PAST)]
        publish_burst(broker.port, made_up, "made-up-past")

        def made_up_accounted() -> int:
            refused = sum(_refused(state, MADE_UP).values())
            return _by_device(influx.url, database, MADE_UP) + refused

        wait_until(lambda: made_up_accounted() >= 5 + MADE_UP_PAST, 60, "made-up past handled")
        made_up_kept = _by_device(influx.url, database, MADE_UP) - 5
        made_up_refused = _refused(state, MADE_UP)
        exit_code = gateway.stop()
    finally:
        gateway.stop()
    show(
        capsys,
        f"fault suite (outage backlog): {len(HONEST)} devices x {BACKLOG} readings (10 s apart, "
        f"own ts) queued while the gateway was down: stored "
        f"{sum(len(seqs.get(d, [])) for d in HONEST)} of {len(backlog)}, refused "
        f"{sum(sum(r.values()) for r in honest_refused.values())}, within {drain_s:.1f} s of "
        "the restart\n"
        f"  floods in the same backlog ({FLOOD} each): no ts kept {flood_kept[NO_TS]} "
        f"{flood_refused[NO_TS]}; ts within 1 s kept {flood_kept[SAME_SECOND]} "
        f"{flood_refused[SAME_SECOND]}\n"
        f"  made-up past after live readings ({MADE_UP_PAST}, 10 s apart over 5.5 h): kept "
        f"{made_up_kept} {made_up_refused}",
    )
    for device in HONEST:
        assert sorted(seqs.get(device, [])) == list(range(1, BACKLOG + 1)), device
        assert honest_refused[device] == {}, device
    for device in (NO_TS, SAME_SECOND):
        # the burst (200), and little more: the backlog drains within a second or two
        assert 200 <= flood_kept[device] <= 600, device
        assert flood_refused[device] == {"rate_limited": FLOOD - flood_kept[device]}
    assert made_up_kept <= 250
    assert made_up_refused == {"rate_limited": MADE_UP_PAST - made_up_kept}
    assert exit_code == 0, gateway.log_tail()
