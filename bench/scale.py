"""Scaling benchmark: one gateway process against two sharing the subscription.

Same measurement as ``bench.e2e`` (QoS 1 messages published by the load generator → points
stored in InfluxDB, InfluxDB's write counters polled, the end verified by a count query),
for three set-ups, each ``repeats`` times, interleaved:

- ``single``: one process, the normal path (rules evaluated in process);
- ``partitioned-1``: one process in worker mode (``--partitioned``): shared subscription,
  readings forwarded through the broker to rule partitions it consumes itself, which shows
  what the forwarding costs;
- ``workers-2``: two worker processes (``--workers 2 --worker-index 0|1``).

Run with ``python -m bench scale`` (or ``python -m bench.scale``); ``BENCH_MESSAGES``,
``BENCH_DEVICES`` and ``BENCH_REPEATS`` as for the end-to-end benchmark.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.e2e import drop_session, prepare_registry, stop_consumer, wait_until_stored
from bench.loadgen import make_devices, make_messages, publish, publish_packets
from gateway.core.config import Settings
from gateway.services.base import ManagedProcess
from gateway.services.influxdb import create_influx_database, start_influxdb
from gateway.services.mosquitto import start_mosquitto

SYSTEMS = {"single": 1, "partitioned-1": 1, "workers-2": 2}


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """One measured run of one set-up."""

    system: str
    messages: int
    stored: int
    seconds: float
    cpu_s: float  # the gateway process(es)
    broker_cpu_s: float
    influx_cpu_s: float

    @property
    def rate(self) -> float:
        """Messages per second, published → stored."""
        return self.stored / self.seconds if self.seconds else 0.0


def start_workers(
    system: str, workdir: Path, mqtt: ManagedProcess, influx: ManagedProcess, db: str
) -> list[subprocess.Popen[bytes]]:
    """Start the gateway process(es) of a set-up; wait until every one has subscribed."""
    workers = SYSTEMS[system]
    procs, logs = [], []
    for index in range(workers):
        log_path = workdir / f"{system}-{db}-{index}.log"
        command = [
            sys.executable, "-m", "gateway", "run", "--state-dir", str(workdir), "--name", db,
            "--mqtt-port", str(mqtt.port), "--influx-url", influx.url, "--influx-database", db,
            "--api-port", "0",
        ]  # fmt: skip
        if system != "single":
            command += ["--workers", str(workers), "--worker-index", str(index), "--partitioned"]
        with log_path.open("wb") as log:
            procs.append(
                subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            )
        logs.append(log_path)
    # the device subscription, plus the rule partitions in worker mode
    expected = 1 if system == "single" else 2
    deadline = time.monotonic() + 60
    for proc, log_path in zip(procs, logs, strict=True):
        while log_path.read_bytes().count(b"subscribed to") < expected:
            if proc.poll() is not None or time.monotonic() > deadline:
                for other in procs:
                    stop_consumer(other)
                raise RuntimeError(f"{system} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
    return procs


def measure(
    system: str,
    packets: list[bytes],
    workdir: Path,
    mqtt: ManagedProcess,
    influx: ManagedProcess,
) -> ScaleResult:
    """One run of one set-up, from the first message published to the last point stored."""
    db = f"scale_{system.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    create_influx_database(influx.url, db)
    procs = start_workers(system, workdir, mqtt, influx, db)
    watched = [psutil.Process(proc.pid) for proc in procs]
    cpu0 = sum(sum(p.cpu_times()[:2]) for p in watched)
    servers = [psutil.Process(server.pid or 0) for server in (mqtt, influx)]
    server0 = [sum(p.cpu_times()[:2]) for p in servers]
    started = time.perf_counter()
    publisher = threading.Thread(
        target=lambda: asyncio.run(publish(mqtt.port, packets, 1, "bench-scale-pub")),
        daemon=True,
    )
    publisher.start()
    total = len(packets)
    stored = wait_until_stored(influx, db, total, started)
    seconds = time.perf_counter() - started
    cpu = sum(sum(p.cpu_times()[:2]) for p in watched) - cpu0
    broker_cpu, influx_cpu = (
        sum(p.cpu_times()[:2]) - before for p, before in zip(servers, server0, strict=True)
    )
    publisher.join(120)
    for proc in procs:
        stop_consumer(proc)
    client = Settings(state_dir=workdir, name=db).client_id
    sessions = [client] if system == "single" else []
    for index in range(SYSTEMS[system] if system != "single" else 0):
        sessions += [f"{client}-{index}", f"{client}-rules-{index}"]
    for session in sessions:
        asyncio.run(drop_session(mqtt.port, session))
    return ScaleResult(system, total, stored, seconds, cpu, broker_cpu, influx_cpu)


def run(total: int, devices_count: int, repeats: int) -> list[ScaleResult]:
    """Every set-up ``repeats`` times, interleaved so machine noise hits all alike."""
    devices = make_devices(devices_count)
    packets = publish_packets(make_messages(devices, total), qos=1)
    results = []
    with tempfile.TemporaryDirectory(prefix="scc-scale-") as tmp:
        workdir = Path(tmp)
        prepare_registry(workdir, devices)
        mqtt = start_mosquitto(workdir / "mosquitto")
        influx = start_influxdb(workdir / "influxdb")
        try:
            for repeat in range(repeats):
                for system in SYSTEMS:
                    result = measure(system, packets, workdir, mqtt, influx)
                    print(
                        f"  run {repeat + 1}/{repeats} {system:13} "
                        f"{result.stored:>7}/{result.messages} stored "
                        f"in {result.seconds:6.2f} s = {result.rate:8.0f} msg/s, "
                        f"cpu s: gateway {result.cpu_s:4.1f}, mosquitto "
                        f"{result.broker_cpu_s:4.1f}, influxd {result.influx_cpu_s:4.1f}",
                        flush=True,
                    )
                    results.append(result)
        finally:
            mqtt.stop()
            influx.stop()
    return results


def report(results: list[ScaleResult]) -> str:
    """Medians per set-up and the scaling factors."""
    lines = [
        f"{'set-up':14} {'median msg/s':>13} {'runs (msg/s)':32} {'lost':>6} "
        "cpu s: gateway mosquitto influxd (medians)"
    ]
    medians = {}
    for system in SYSTEMS:
        runs = [r for r in results if r.system == system]
        if not runs:
            continue
        medians[system] = statistics.median(r.rate for r in runs)
        each = ", ".join(f"{r.rate:.0f}" for r in runs)
        lost = sum(r.messages - r.stored for r in runs)
        cpu = [
            statistics.median(getattr(r, name) for r in runs)
            for name in ("cpu_s", "broker_cpu_s", "influx_cpu_s")
        ]
        lines.append(
            f"{system:14} {medians[system]:13.0f} {each:32} {lost:6d} "
            f"{cpu[0]:14.1f} {cpu[1]:9.1f} {cpu[2]:8.1f}"
        )
    if medians.get("single") and "workers-2" in medians:
        lines.append(
            f"scaling 2 processes / 1 process: {medians['workers-2'] / medians['single']:.2f}x"
        )
    if medians.get("partitioned-1") and "workers-2" in medians:
        ratio = medians["workers-2"] / medians["partitioned-1"]
        lines.append(f"scaling 2 workers / 1 worker (both forwarding): {ratio:.2f}x")
    if medians.get("single") and "partitioned-1" in medians:
        ratio = medians["partitioned-1"] / medians["single"]
        lines.append(f"forwarding cost, 1 worker / single: {ratio:.2f}x")
    return "\n".join(lines)


def main() -> int:
    """Entry point of ``python -m bench scale``."""
    total = int(os.environ.get("BENCH_MESSAGES", "200000"))
    devices = int(os.environ.get("BENCH_DEVICES", "10000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    print(
        f"scaling: {total} msgs, {devices} devices, QoS 1, {repeats} repeats, "
        f"{os.cpu_count()} CPUs shared with Mosquitto and InfluxDB"
    )
    results = run(total, devices, repeats)
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
