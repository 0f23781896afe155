"""End-to-end ingest benchmark: messages published → points stored in InfluxDB.

For each system under test (our gateway, the batched hand script, the naive bridge) and
each repeat: a fresh database, the consumer started as its own process, N messages
published with QoS 1 by the load generator, and the clock stopped when InfluxDB holds all
N points (its write counters polled, then confirmed by a count query). Medians of the
repeats are printed with ratios against the baselines measured in the same run, plus CPU
seconds and peak RSS of the consumer.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.loadgen import Device, make_devices, make_messages, publish, publish_packets
from gateway.core.config import Settings
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine
from gateway.services.base import ManagedProcess
from gateway.services.influxdb import create_influx_database, influx_query, start_influxdb
from gateway.services.mosquitto import start_mosquitto
from gateway.sources.mqtt import wire

HIERARCHY = {
    "code": "ST1", "level": "street", "name": "街道", "children": [
        {"code": "SQ1", "level": "community", "name": "社区", "children": [
            {"code": "G1", "level": "grid", "name": "网格", "children": [
                {"code": "C1", "level": "compound", "name": "小区"}]}]}],
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunResult:
    """One measured run."""

    system: str
    messages: int
    stored: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        """Messages per second, published → stored."""
        return self.stored / self.seconds if self.seconds else 0.0


def stored_count(influx: ManagedProcess, database: str) -> int:
    """Points with a ``seq`` field in every measurement of the database."""
    body = influx_query(influx.url, "SELECT count(seq) FROM /.*/", db=database, timeout=10)
    series = body["results"][0].get("series", [])
    return sum(int(s["values"][0][1]) for s in series if s["name"] != "gateway_stats")


def points_written(influx: ManagedProcess, database: str) -> int:
    """Points InfluxDB has accepted into the database's shards (its ``/debug/vars`` counters).

    Cheap to poll, unlike a ``count()`` query, which scans every stored point and would load
    the server it measures. Rewrites of a point count twice, so the final figure is always
    confirmed by :func:`stored_count`.
    """
    try:
        with urllib.request.urlopen(influx.url + "/debug/vars", timeout=5) as resp:
            stats = json.loads(resp.read())
    except (OSError, ValueError):
        return 0
    return sum(
        int(entry["values"].get("writePointsOk", 0))
        for entry in stats.values()
        if isinstance(entry, dict)
        and entry.get("name") == "shard"
        and (entry.get("tags") or {}).get("database") == database
    )


def wait_until_stored(
    influx: ManagedProcess,
    database: str,
    total: int,
    started: float,
    on_poll: Callable[[], object] = lambda: None,
) -> int:
    """Poll until the database holds ``total`` points (or a deadline scaled to ``total``
    passes); the stored count. ``on_poll`` runs at every poll (e.g. to sample RSS)."""
    deadline = started + max(60.0, total / 200)
    while time.perf_counter() < deadline:
        on_poll()
        if points_written(influx, database) >= total:
            stored = stored_count(influx, database)
            if stored >= total:
                return stored
        time.sleep(0.02)
    return stored_count(influx, database)


def prepare_registry(state_dir: Path, devices: list[Device]) -> None:
    """The gateway's registry: one compound holding every benchmark device."""
    registry = Registry(make_engine(f"sqlite:///{state_dir / 'gateway.db'}"))
    registry.load_hierarchy(HIERARCHY)
    path = state_dir / "devices.csv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(
            ["device_id", "kind", "model", "codec", "node", "location", "params", "installed_at"]
        )
        for device in devices:
            params = "depth_mm=1000" if device.kind == "bin" else ""
            out.writerow([device.device_id, device.kind, "bench", "json", "C1", "", params, ""])
    registry.load_devices_csv(path)


def start_consumer(
    system: str, workdir: Path, mqtt: ManagedProcess, influx: ManagedProcess, db: str
) -> subprocess.Popen[bytes]:
    """Start the system under test and wait until it has subscribed."""
    log_path = workdir / f"{system}-{db}.log"
    log = log_path.open("wb")
    if system == "gateway":
        command = [
            sys.executable, "-m", "gateway", "run", "--state-dir", str(workdir), "--name", db,
            "--mqtt-port", str(mqtt.port), "--influx-url", influx.url, "--influx-database", db,
            "--api-port", "0",
        ]  # fmt: skip
        ready = b"subscribed to"
    else:
        command = [
            sys.executable, "-m", "bench.baselines", system, "--port", str(mqtt.port),
            "--influx-url", influx.url, "--database", db,
        ]  # fmt: skip
        ready = b"ready"
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while ready not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{system} did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def stop_consumer(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gateway) / close stdin (baselines), then wait."""
    if proc.stdin is not None:
        proc.stdin.close()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def drop_session(port: int, client_id: str) -> None:
    """End a persistent session so later runs' messages do not pile up in the broker."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opts = wire.ConnectOptions(client_id=client_id, clean_start=True, session_expiry_s=0)
    writer.write(wire.connect_packet(opts))
    await reader.readexactly(2)
    writer.write(wire.DISCONNECT_NORMAL)
    await writer.drain()
    writer.close()


def measure(
    system: str,
    messages: list[tuple[str, bytes]],
    workdir: Path,
    mqtt: ManagedProcess,
    influx: ManagedProcess,
) -> RunResult:
    """One run of one system."""
    db = f"bench_{system}_{uuid.uuid4().hex[:8]}"
    create_influx_database(influx.url, db)
    proc = start_consumer(system, workdir, mqtt, influx, db)
    ps = psutil.Process(proc.pid)
    cpu0 = sum(ps.cpu_times()[:2])
    peak = ps.memory_info().rss
    packets = publish_packets(messages, qos=1)
    started = time.perf_counter()
    publisher = threading.Thread(
        target=lambda: asyncio.run(publish(mqtt.port, packets, 1, "bench-pub")), daemon=True
    )
    publisher.start()
    peaks = [peak]
    stored = wait_until_stored(
        influx, db, len(messages), started, lambda: peaks.append(ps.memory_info().rss)
    )
    peak = max(peaks)
    seconds = time.perf_counter() - started
    cpu = sum(ps.cpu_times()[:2]) - cpu0
    publisher.join(120)
    stop_consumer(proc)
    if system == "gateway":
        asyncio.run(drop_session(mqtt.port, Settings(state_dir=workdir, name=db).client_id))
    return RunResult(system, len(messages), stored, seconds, cpu, peak / 2**20)


def run(messages_total: int, naive_total: int, repeats: int, devices_count: int) -> list[RunResult]:
    """All systems, ``repeats`` times each, interleaved so machine noise hits all alike."""
    devices = make_devices(devices_count)
    messages = make_messages(devices, messages_total)
    naive_messages = make_messages(devices, naive_total, seed=2)
    results = []
    with tempfile.TemporaryDirectory(prefix="scc-bench-") as tmp:
        workdir = Path(tmp)
        prepare_registry(workdir, devices)
        mqtt = start_mosquitto(workdir / "mosquitto")
        influx = start_influxdb(workdir / "influxdb")
        try:
            for repeat in range(repeats):
                for system, batch in (
                    ("gateway", messages),
                    ("batched", messages),
                    ("naive", naive_messages),
                ):
                    result = measure(system, batch, workdir, mqtt, influx)
                    print(
                        f"  run {repeat + 1}/{repeats} {system:8} "
                        f"{result.stored:>7}/{result.messages} stored "
                        f"in {result.seconds:6.2f} s = {result.rate:9.0f} msg/s, "
                        f"cpu {result.cpu_s:5.1f} s, peak rss {result.peak_rss_mb:5.0f} MiB",
                        flush=True,
                    )
                    results.append(result)
        finally:
            mqtt.stop()
            influx.stop()
    return results


def report(results: list[RunResult]) -> str:
    """The summary table: medians and ratios against the baselines."""
    medians = {}
    header = f"{'system':10} {'median msg/s':>13} {'runs (msg/s)':40} {'lost':>6}"
    lines = [f"{header} {'cpu s/100k':>11} {'peak RSS':>9}"]
    for system in ("gateway", "batched", "naive"):
        runs = [r for r in results if r.system == system]
        if not runs:
            continue
        rate = statistics.median(r.rate for r in runs)
        medians[system] = rate
        lost = sum(r.messages - r.stored for r in runs)
        cpu = statistics.median(r.cpu_s / r.messages * 100_000 for r in runs)
        rss = max(r.peak_rss_mb for r in runs)
        each = ", ".join(f"{r.rate:.0f}" for r in runs)
        lines.append(f"{system:10} {rate:13.0f} {each:40} {lost:6d} {cpu:11.1f} {rss:7.0f}MiB")
    if "gateway" in medians:
        for base in ("batched", "naive"):
            if medians.get(base):
                lines.append(f"gateway / {base}: {medians['gateway'] / medians[base]:.1f}x")
    return "\n".join(lines)


def main() -> int:
    """Entry point of ``python -m bench e2e``."""
    total = int(os.environ.get("BENCH_MESSAGES", "200000"))
    naive = int(os.environ.get("BENCH_NAIVE_MESSAGES", "4000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    devices = int(os.environ.get("BENCH_DEVICES", "10000"))
    print(
        f"end-to-end ingest: {total} msgs ({naive} for naive), {devices} devices, "
        f"QoS 1, {repeats} repeats"
    )
    results = run(total, naive, repeats, devices)
    print()
    print(report(results))
    return 0
