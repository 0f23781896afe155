"""Issue 14, item 1: a full disk loses no acknowledged reading.

The gateway's state directory (spool and SQLite) is a small tmpfs mounted by the test (root
only: CI runs as root). InfluxDB is stopped and a numbered QoS 1 stream is published until
the disk is full; the publisher counts the broker's PUBACKs. While the disk is full the
gateway must stop acknowledging (the broker keeps the backlog), say why in /health/ready,
keep its drainer alive, and finish a SIGTERM within ``shutdown_timeout_s``; a restart on the
full disk must keep every spooled record. Then InfluxDB comes back, the drain frees the
disk, and every acknowledged message must be stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.services.base import free_port
from gateway.services.influxdb import create_influx_database
from tests.conftest import ServerFactory

from .helpers import (
    GatewayProcess,
    NumberedPublisher,
    account,
    prepare_registry,
    show,
    spooled_lines,
    stored_count,
    stored_seqs,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.integration]

DISK = "8m"  # ~30,000 readings of line protocol beside SQLite (a few MB with its WAL)
DEVICES = [f"smoke-d{i:02d}" for i in range(50)]
TOTAL = 64_000  # more than the disk holds
RATE = 4_000.0
SHUTDOWN_S = 8.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``DISK`` mounted for this test (unmounted after it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a real small tmpfs needs root (CI runs the suite as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def ready(port: int) -> tuple[int, dict[str, object]]:
    """GET /health/ready: status code and body (0 while the API does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)
    except OSError:
        return 0, {}


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def test_full_disk_loses_no_acknowledged_reading(
    small_disk: Path,
    tmp_path: Path,
    private_mosquitto: ServerFactory,
    private_influxdb: ServerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = private_mosquitto()
    influx = private_influxdb()
    database = "fulldisk"
    create_influx_database(influx.url, database)
    state = small_disk / "gateway"
    prepare_registry(state, DEVICES)
    api = free_port()
    # No per-device throttle: its dead letters (raw payloads in SQLite) are not under test.
    env = {
        "SCC_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S),
        "SCC_INFLUX_STALL_S": "5",
        "SCC_DEVICE_RATE_PER_S": "0",
    }
    gateway = GatewayProcess(
        state, "disk", broker.port, influx.url, database, env, tmp_path, ["--api-port", str(api)]
    )
    publisher = NumberedPublisher(broker.port, DEVICES, TOTAL, RATE, "disk-publisher", 500)
    spool_dir = state / "spool" / "disk"
    notes: list[str] = []
    try:
        gateway.start()
        wait_until(lambda: ready(api)[0] == 200, 20, "gateway ready")
        influx.stop()
        publisher.start()
        # The disk fills: the gateway must stop acknowledging and say why.
        wait_until(
            lambda: "persist" in str(ready(api)[1].get("detail", "")), 90, "not ready: persist"
        )
        publisher.join(TOTAL / RATE + 60)
        publisher.wait_acked(60)
        status, body = ready(api)
        notes.append(f"while full: HTTP {status}, {body.get('detail')}")
        assert status == 503, body
        detail = str(body.get("detail", ""))
        assert "No space left" in detail or "disk is full" in detail, detail
        assert "influxdb: no successful write" in detail, detail
        checks = body.get("checks")
        assert isinstance(checks, dict) and checks["threads"] == "ok", checks
        assert free_bytes(small_disk) < 1 << 20, "the disk should be full"
        # SIGTERM in the full-disk state returns within the bound.
        begun = time.monotonic()
        code = gateway.stop(timeout=SHUTDOWN_S + 20)
        stop_s = time.monotonic() - begun
        notes.append(f"SIGTERM while full: exit {code} after {stop_s:.1f} s")
        assert code == 0 and stop_s < SHUTDOWN_S + 2, gateway.log_tail()
        # A restart on the full disk keeps every spooled record.
        spooled = spooled_lines(spool_dir, b"smoke,")
        gateway.start()
        kept = spooled_lines(spool_dir, b"smoke,")
        notes.append(f"restart on the full disk: {spooled} spooled lines before, {kept} after")
        assert kept >= spooled, "the restart cut acknowledged records"
        # InfluxDB back: the drain frees the disk, the backlog comes through.
        influx.start()
        sent = publisher.sent()
        wait_until(
            lambda: stored_count(influx.url, database) >= len(sent),
            180,
            "InfluxDB holds every acknowledged message",
            interval=1.0,
        )
        wait_until(lambda: ready(api)[0] == 200, 60, "ready again")
        stored = stored_seqs(influx.url, database)
    finally:
        publisher.close()
        gateway.stop()
    result = account(sent, stored, publisher.published)
    log = gateway.log_path.read_text(encoding="utf-8", errors="replace")
    show(
        capsys,
        f"fault suite (full disk, {DISK} tmpfs): {TOTAL} msgs at {RATE:.0f}/s\n  "
        + "\n  ".join(notes)
        + f"\n  {result.line()}; thread restarts logged: {log.count('restarting in')}, "
        f"spool bytes quarantined at restart: {log.count('quarantined')}",
    )
    assert result.sent == TOTAL
    assert result.lost == 0, f"lost, e.g.: {result.lost_examples}"
    assert result.unexpected == 0
    assert "thread influx-drainer failed" not in log
    assert "cutting" not in log and "quarantined" not in log
