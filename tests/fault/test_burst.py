"""Issue 7's overload tests: bounded memory under a burst, and a flooding device.

The burst goes to a gateway whose InfluxDB is stopped, so every message has to pass through
the spool; the gateway's RSS is sampled every 0.2 s. Memory is bounded by the MQTT 5
Receive Maximum (the broker keeps the rest of the backlog), not by the size of the burst.

The flood: one device publishes 20,000 messages as fast as it can while fifty others report
steadily; the flooding device is throttled (its excess kept as ``rate_limited`` dead
letters) and the others' publish-to-stored latency stays low.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.services.influxdb import create_influx_database, start_influxdb
from gateway.services.mosquitto import start_mosquitto
from tests.conftest import ServerFactory

from .helpers import (
    T0_MS,
    GatewayProcess,
    NumberedPublisher,
    RssSampler,
    StoredWatcher,
    dead_letter_counts,
    dead_letters_by_device,
    numbered,
    prepare_registry,
    publish_burst,
    show,
    spool_depth_bytes,
    spooled_lines,
    stored_count,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.integration]

BURST = 200_000
#: A fleet flushing its backlog: 20 messages per device, within each device's own rate
#: limit (burst 200), so the burst tests the gateway's capacity, not the throttle.
BURST_DEVICES = [f"smoke-b{i:05d}" for i in range(10_000)]
#: Stated bound of the gateway's RSS under any burst with the default settings (Receive
#: Maximum 30,000 messages in flight, batches of at most 5,000). The measured peak is
#: 140-170 MiB on this machine (printed by the test).
RSS_BOUND_MIB = 400
#: A spool bound far below the burst (~45 MB of line protocol), to exercise the overflow
#: policy: stop acknowledging, let the broker's persistent session hold the backlog.
SMALL_SPOOL_BYTES = 8 << 20


@pytest.mark.parametrize(
    "spool_max_bytes",
    [None, SMALL_SPOOL_BYTES],
    ids=["spool-takes-the-burst", "spool-full-broker-keeps-the-rest"],
)
def test_burst_far_above_capacity_keeps_memory_bounded_and_loses_nothing(
    spool_max_bytes: int | None,
    tmp_path: Path,
    private_mosquitto: ServerFactory,
    private_influxdb: ServerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = private_mosquitto()
    influx = private_influxdb()
    database = "burst"
    create_influx_database(influx.url, database)
    influx.stop()  # every message of the burst has to be spooled
    state = tmp_path / "gateway"
    prepare_registry(state, BURST_DEVICES)
    messages = [numbered(n, BURST_DEVICES)[:2] for n in range(BURST)]
    env = {} if spool_max_bytes is None else {"SCC_SPOOL_MAX_BYTES": str(spool_max_bytes)}
    gateway = GatewayProcess(state, "burst", broker.port, influx.url, database, env=env)
    spool = state / "spool" / "burst"
    try:
        gateway.start()
        with RssSampler(gateway.pid) as rss:
            idle_mib = rss.process.memory_info().rss / 2**20
            started = time.monotonic()
            publish_s = publish_burst(broker.port, messages, "burst-publisher")
            if spool_max_bytes is None:
                wait_until(
                    lambda: spooled_lines(spool, b"smoke,") >= BURST,
                    120,
                    "the whole burst in the spool",
                    interval=0.5,
                )
            else:
                # The spool fills up; the gateway stops acknowledging and the broker keeps
                # the rest. Memory must stay flat while that lasts.
                wait_until(
                    lambda: spool_depth_bytes(spool) > 0.8 * spool_max_bytes,
                    60,
                    "the spool to fill up",
                )
                time.sleep(3)
                assert spool_depth_bytes(spool) <= spool_max_bytes
            spooled = spooled_lines(spool, b"smoke,")
            spool_s = time.monotonic() - started
            ingest_peak = rss.peak_mib
            influx.start()
            drain_s = wait_until(
                lambda: stored_count(influx.url, database) >= BURST,
                120,
                "the whole burst in InfluxDB",
                interval=0.5,
            )
        stored = stored_count(influx.url, database)
        dead = dead_letter_counts(state)
        exit_code = gateway.stop()
    finally:
        gateway.stop()
    bound = "1 GiB (default)" if spool_max_bytes is None else f"{spool_max_bytes >> 20} MiB"
    show(
        capsys,
        f"fault suite (burst, spool bound {bound}): {BURST} msgs from {len(BURST_DEVICES)} "
        f"devices, InfluxDB down: published in {publish_s:.1f} s ({BURST / publish_s:.0f} "
        f"msg/s); {spooled} in the spool after {spool_s:.1f} s; InfluxDB up again: all stored "
        f"in {drain_s:.1f} s\n"
        f"  gateway RSS: idle {idle_mib:.0f} MiB, peak with InfluxDB down {ingest_peak:.0f} MiB, "
        f"peak overall {rss.peak_mib:.0f} MiB (bound {RSS_BOUND_MIB} MiB, "
        f"{len(rss.samples)} samples every 0.2 s)\n"
        f"  sent {BURST} / stored {stored} / lost {BURST - stored} (dead letters: {dead or 0})",
    )
    assert rss.peak_mib < RSS_BOUND_MIB
    if spool_max_bytes is not None:
        assert spooled < BURST, "the small spool should not have held the whole burst"
    assert stored == BURST
    assert dead == {}
    assert exit_code == 0, gateway.log_tail()


# -- a flooding device ------------------------------------------------------------------------

NORMAL_DEVICES = [f"smoke-n{i:02d}" for i in range(50)]
NORMAL_RATE = 100.0  # msg/s over all 50 devices: one message per device every 0.5 s
NORMAL_TOTAL = 1500  # 15 s
FLOOD_DEVICE = "smoke-flood"
FLOOD = 20_000
FLOOD_AT_S = 4.0
#: Latency bound (publish → visible in InfluxDB) for the well-behaved devices.
LATENCY_P99_S = 2.0
LATENCY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class FloodOutcome:
    """What happened while one device flooded and fifty behaved."""

    latencies: dict[tuple[str, int], float]
    during_flood: list[float]  # latencies of messages published while the flood went on
    normal_sent: int
    flood_publish_s: float
    flood_stored: int
    dead_letters: dict[tuple[str | None, str], int]


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@pytest.fixture(scope="module")
def flood(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FloodOutcome]:
    """Run the flood once (servers of its own) for the tests below to inspect."""
    root = tmp_path_factory.mktemp("flood")
    with contextlib.ExitStack() as cleanup:
        broker = start_mosquitto(root / "mosquitto")
        cleanup.callback(broker.stop)
        influx = start_influxdb(root / "influxdb")
        cleanup.callback(influx.stop)
        database = "flood"
        create_influx_database(influx.url, database)
        state = root / "gateway"
        prepare_registry(state, [*NORMAL_DEVICES, FLOOD_DEVICE])
        gateway = GatewayProcess(state, "flood", broker.port, influx.url, database)
        cleanup.callback(gateway.stop)
        gateway.start()
        publisher = NumberedPublisher(
            broker.port, NORMAL_DEVICES, NORMAL_TOTAL, NORMAL_RATE, "normal-publisher"
        )
        cleanup.callback(publisher.close)
        flood_messages = [
            (
                f"scc/v1/{FLOOD_DEVICE}/telemetry",
                b'{"state":"normal","seq":%d,"ts":%d}' % (n + 1, T0_MS + 1_000_000 + n),
            )
            for n in range(FLOOD)
        ]
        window: list[float] = []  # flood start, seconds publishing, end (monotonic)

        def flood_now() -> None:
            time.sleep(FLOOD_AT_S)
            window.append(time.monotonic())
            window.append(publish_burst(broker.port, flood_messages, "flooding-device"))
            window.append(time.monotonic())

        flooder = threading.Thread(target=flood_now, name="flooder", daemon=True)
        with StoredWatcher(influx.url, database, f"\"device_id\" != '{FLOOD_DEVICE}'") as watcher:
            publisher.start()
            flooder.start()
            publisher.join(NORMAL_TOTAL / NORMAL_RATE + 30)
            publisher.wait_acked(30)
            flooder.join(60)
            assert not flooder.is_alive() and len(window) == 3, "flood did not finish"
            sent = publisher.sent()
            wait_until(lambda: sent <= watcher.first_seen.keys(), 30, "normal messages stored")

        flood_only = f"\"device_id\" = '{FLOOD_DEVICE}'"

        def flood_accounted() -> bool:
            letters = dead_letters_by_device(state)
            refused = sum(n for (device, _), n in letters.items() if device == FLOOD_DEVICE)
            return stored_count(influx.url, database, where=flood_only) + refused >= FLOOD

        wait_until(flood_accounted, 60, "flood stored or dead-lettered", interval=0.5)
        flood_start, flood_s, flood_end = window
        latencies = {key: watcher.first_seen[key] - publisher.published_at[key] for key in sent}
        during = [
            latencies[key]
            for key in sent
            if flood_start <= publisher.published_at[key] <= flood_end + 1.0
        ]
        yield FloodOutcome(
            latencies=latencies,
            during_flood=during,
            normal_sent=len(sent),
            flood_publish_s=flood_s,
            flood_stored=stored_count(influx.url, database, where=flood_only),
            dead_letters=dead_letters_by_device(state),
        )


def test_other_devices_keep_their_latency_while_one_floods(
    flood: FloodOutcome, capsys: pytest.CaptureFixture[str]
) -> None:
    values = list(flood.latencies.values())
    p50, p99 = _percentile(values, 50), _percentile(values, 99)
    during_p99 = _percentile(flood.during_flood, 99)
    show(
        capsys,
        f"fault suite (flood): {FLOOD_DEVICE} sent {FLOOD} msgs in {flood.flood_publish_s:.1f} s "
        f"while {len(NORMAL_DEVICES)} devices sent {flood.normal_sent} at {NORMAL_RATE:.0f}/s\n"
        f"  others' latency publish→stored: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {max(values) * 1000:.0f} ms; during the flood ({len(flood.during_flood)} msgs): "
        f"p99 {during_p99 * 1000:.0f} ms, max {max(flood.during_flood, default=0) * 1000:.0f} ms\n"
        f"  flood stored {flood.flood_stored}, dead letters {flood.dead_letters or 0}",
    )
    assert flood.normal_sent == NORMAL_TOTAL
    assert len(flood.latencies) == NORMAL_TOTAL
    assert flood.during_flood, "no normal message was published during the flood"
    assert p99 < LATENCY_P99_S
    assert max(values) < LATENCY_MAX_S
    # Whatever the gateway does with the flood, none of it may vanish.
    flood_dead = sum(n for (d, _), n in flood.dead_letters.items() if d == FLOOD_DEVICE)
    assert flood.flood_stored + flood_dead == FLOOD
    assert not [key for key in flood.dead_letters if key[0] != FLOOD_DEVICE]


def test_flooding_device_is_rate_limited_and_reported(flood: FloodOutcome) -> None:
    # What the limiter refuses is kept as dead letters with reason rate_limited (counted,
    # logged, replayable), for the flooding device only.
    limited = {d: n for (d, reason), n in flood.dead_letters.items() if reason == "rate_limited"}
    assert set(limited) == {FLOOD_DEVICE}
    assert flood.flood_stored < FLOOD
