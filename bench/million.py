"""The 1,000,000-device target, measured: registry import, start-up, RSS idle and under traffic.

``python -m bench.million [--devices N]`` (or ``BENCH_MILLION_DEVICES``): N devices in the
load generator's kind mix, spread over a hierarchy of realistic depth (street → communities
→ grids → compounds → buildings), imported from CSV into a fresh registry; then real
Mosquitto and InfluxDB on free loopback ports, the gateway as its own process (as in
production, its API on), one QoS 1 message from every device and then a second round, then
a restart with the rule state the first run saved. Start-up is the time until the gateway
logs "subscribed to"; RSS is sampled with psutil throughout; a round ends when the gateway's
/metrics count every message (processed and acknowledged after the spool: InfluxDB drains
the spool behind it, and the time until it holds every point is reported separately). A
rules tick over N devices is not exported by the gateway, so it is timed in this process
on an engine holding the same devices.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.e2e import points_written, stop_consumer
from bench.fleet import import_registry
from bench.loadgen import Device, make_devices, make_messages, publish, publish_packets
from devices import KINDS, load_kind
from gateway.services.base import ManagedProcess, ServiceError, free_port
from gateway.services.influxdb import create_influx_database, influx_query, start_influxdb
from gateway.services.mosquitto import start_mosquitto
from rules import Engine, load_rules

GIB = 2**30
MIB = 2**20
ROUND_TIMEOUT_S = 240.0
STORED_TIMEOUT_S = 300.0
STARTUP_TIMEOUT_S = 120.0


@dataclass(slots=True)
class RssSampler:
    """Samples a process's RSS every ``interval_s`` on a thread; keeps the peak."""

    pid: int
    interval_s: float = 0.05
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sampling (the peak is reset)."""
        self.peak = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """Stop sampling; the peak RSS in bytes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.peak

    def _run(self) -> None:
        proc = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.interval_s)


@dataclass(slots=True)
class Round:
    """One round: every device sends one message."""

    gateway_s: float  # first publish → the gateway has processed every message
    processed: int
    peak_rss: int


@dataclass(slots=True)
class Figures:
    """Everything measured in one run (seconds, bytes)."""

    devices: int
    import_s: float = 0.0
    startup_s: float = 0.0
    startup_peak: int = 0
    rss_idle: int = 0
    rounds: list[Round] = field(default_factory=list)
    rss_after: int = 0
    cpu_s: float = 0.0
    restart_s: float = 0.0
    restart_peak: int = 0
    rss_restart: int = 0
    state_rows: int = 0
    stored_s: float | None = None  # first publish → InfluxDB holds every point
    verified: int | None = None  # points with a seq field, by a count query at the end
    tick_idle_s: float = 0.0
    tick_all_due_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class Run:
    """Broker, InfluxDB and the gateway process of one measurement, in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.db = f"million_{uuid.uuid4().hex[:8]}"
        self.mqtt: ManagedProcess | None = None
        self.influx: ManagedProcess | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_port = free_port()
        self.token = ""

    def start_services(self) -> None:
        """Mosquitto, InfluxDB, the database and a metrics token."""
        self.mqtt = start_mosquitto(self.workdir / "mosquitto")
        self.influx = start_influxdb(self.workdir / "influxdb")
        create_influx_database(self.influx.url, self.db)
        command = [sys.executable, "-m", "gateway", "token", "--state-dir", str(self.workdir)]
        command += ["create", "--role", "read_only", "--node", "ST1", "--name", "million"]
        done = subprocess.run(command, check=True, capture_output=True, timeout=60)
        self.token = done.stdout.decode().split()[-1]

    def start_gateway(self) -> tuple[float, int]:
        """``python -m gateway run`` as in production (API on, for its metrics): seconds until
        it logged "subscribed to", and its peak RSS meanwhile."""
        assert self.mqtt is not None and self.influx is not None
        log_path = self.workdir / "gateway.log"
        command = [
            sys.executable, "-m", "gateway", "run", "--state-dir", str(self.workdir),
            "--name", self.db, "--mqtt-port", str(self.mqtt.port),
            "--influx-url", self.influx.url, "--influx-database", self.db,
            "--api-port", str(self.api_port),
        ]  # fmt: skip
        # no gateway_stats/fleet points during the run: InfluxDB's counters count ours only
        env = {**os.environ, "SCC_STATS_INTERVAL_S": "3600"}
        started = time.perf_counter()
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env
            )
        sampler = RssSampler(self.proc.pid)
        sampler.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while b"subscribed to" not in log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sampler.stop()
                raise RuntimeError(f"gateway did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        return time.perf_counter() - started, sampler.stop()

    def stop_gateway(self) -> None:
        """SIGTERM and wait (the spool keeps what InfluxDB does not have yet)."""
        if self.proc is not None:
            stop_consumer(self.proc)
            self.proc = None

    def stop(self) -> None:
        """Stop everything this run started."""
        self.stop_gateway()
        for server in (self.mqtt, self.influx):
            if server is not None:
                server.stop()

    def processed(self) -> int:
        """Messages the gateway has handled (valid + dead letters), from its /metrics."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/metrics",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return -1
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith(("scc_messages_total", "scc_dead_letters_total"))
        )

    def publish_round(self, packets: list[bytes], target: int, client_id: str) -> Round:
        """Publish; wait (bounded) until the gateway has processed ``target`` in total."""
        assert self.mqtt is not None and self.proc is not None
        port = self.mqtt.port
        sampler = RssSampler(self.proc.pid)
        sampler.start()
        started = time.perf_counter()
        publisher = threading.Thread(
            target=lambda: asyncio.run(publish(port, packets, 1, client_id)), daemon=True
        )
        publisher.start()
        processed = 0
        deadline = started + ROUND_TIMEOUT_S
        while time.perf_counter() < deadline and processed < target:
            time.sleep(0.1)
            processed = self.processed()
        seconds = time.perf_counter() - started
        publisher.join(60)
        return Round(seconds, processed, sampler.stop())

    def wait_stored(self, target: int, since: float) -> float | None:
        """Seconds from ``since`` until InfluxDB holds ``target`` points (None: timed out)."""
        assert self.influx is not None
        deadline = time.perf_counter() + STORED_TIMEOUT_S
        while time.perf_counter() < deadline:
            if points_written(self.influx, self.db) >= target:
                return time.perf_counter() - since
            time.sleep(0.5)
        return None


def time_rules_tick(devices: list[Device]) -> tuple[float, float]:
    """A rules tick over every device, in this process: (nothing due, every device due)."""
    heartbeat = {kind: float(load_kind(kind).heartbeat_s) for kind in KINDS}
    engine = Engine(load_rules(None), heartbeat)
    now = time.time_ns()
    for device in devices:
        engine.seen(device.device_id, device.kind, now)
    engine.dirty_states()
    started = time.perf_counter()
    engine.tick(now + 1_000_000_000)
    idle = time.perf_counter() - started
    started = time.perf_counter()
    fired = engine.tick(now + 30 * 86400 * 1_000_000_000)  # a month later: all offline
    all_due = time.perf_counter() - started
    assert len(fired) >= len(devices) * 0.5, len(fired)
    return idle, all_due


def rule_state_rows(database: Path) -> int:
    """Rows of saved rule state (device activity and alert states) in the gateway's database."""
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM rule_state").fetchone()[0])


def verified_count(influx: ManagedProcess, db: str) -> int | None:
    """Points stored, by a ``count(seq)`` query (None when InfluxDB does not answer in time)."""
    try:
        body = influx_query(influx.url, "SELECT count(seq) FROM /.*/", db=db, timeout=120)
    except (OSError, ServiceError, ValueError):
        return None
    series = body["results"][0].get("series", [])
    return sum(int(s["values"][0][1]) for s in series)


def wait_idle_rss(pid: int, settle_s: float = 3.0) -> int:
    """RSS once it has stopped moving by more than 1 MiB for ``settle_s`` (at most 30 s)."""
    proc = psutil.Process(pid)
    last = int(proc.memory_info().rss)
    stable_since = time.monotonic()
    deadline = stable_since + 30
    while time.monotonic() < deadline:
        time.sleep(0.25)
        rss = int(proc.memory_info().rss)
        if abs(rss - last) > MIB:
            last, stable_since = rss, time.monotonic()
        elif time.monotonic() - stable_since >= settle_s:
            break
    return last


def measure(count: int, workdir: Path) -> Figures:
    """The whole run in ``workdir``."""
    devices = make_devices(count)
    f = Figures(len(devices))
    f.import_s = import_registry(workdir, devices)
    print(f"  import {f.import_s:.1f} s; building messages …", flush=True)
    # one message per device, then every device's next message (sequence 2: a new point)
    messages = make_messages(devices, 2 * len(devices))
    rounds = [publish_packets(messages[: f.devices], 1), publish_packets(messages[f.devices :], 1)]
    del messages
    run = Run(workdir)
    try:
        run.start_services()
        f.startup_s, f.startup_peak = run.start_gateway()
        assert run.proc is not None
        f.rss_idle = wait_idle_rss(run.proc.pid)
        print(f"  start-up {f.startup_s:.1f} s, idle RSS {f.rss_idle / MIB:.0f} MiB", flush=True)
        ps = psutil.Process(run.proc.pid)
        cpu0 = sum(ps.cpu_times()[:2])
        first_publish = time.perf_counter()
        for number, packets in enumerate(rounds, start=1):
            result = run.publish_round(packets, number * f.devices, f"million-{number}")
            f.rounds.append(result)
            print(
                f"  round {number}: gateway processed {result.processed} in "
                f"{result.gateway_s:.1f} s, peak RSS {result.peak_rss / MIB:.0f} MiB",
                flush=True,
            )
        f.cpu_s = sum(ps.cpu_times()[:2]) - cpu0
        f.rss_after = wait_idle_rss(run.proc.pid)
        run.stop_gateway()
        # again, with the rule state the first run saved (device activity, alerts)
        f.state_rows = rule_state_rows(workdir / "gateway.db")
        f.restart_s, f.restart_peak = run.start_gateway()
        f.rss_restart = wait_idle_rss(run.proc.pid)
        print(f"  restart {f.restart_s:.1f} s; waiting for InfluxDB …", flush=True)
        f.stored_s = run.wait_stored(len(rounds) * f.devices, first_publish)
        assert run.influx is not None
        f.verified = verified_count(run.influx, run.db)
    finally:
        run.stop()
    print("timing a rules tick over every device (in this process) …", flush=True)
    f.tick_idle_s, f.tick_all_due_s = time_rules_tick(devices)
    return f


def table(f: Figures) -> Iterator[str]:
    """The report: figure, target, verdict."""
    judged = f.devices >= 1_000_000  # the memory target is for a million; not scaled down

    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> str:
        verdict = {True: "ok", False: "MISSED", None: ""}[ok]
        return f"{name:46} {value:>15}  {target:>16}  {verdict}".rstrip()

    def rss(name: str, value: int) -> str:
        ok = value <= GIB if judged else None
        return row(name, f"{value / MIB:.0f} MiB", "≤ 1024 MiB at 1M", ok)

    def seconds(name: str, value: float, limit: float | None = None) -> str:
        if limit is None:
            return row(name, f"{value:.1f} s")
        return row(name, f"{value:.1f} s", f"≤ {limit:.0f} s", value <= limit)

    n = f.devices
    yield f"{n} registered devices, {len(f.rounds)} rounds of one QoS 1 message per device"
    yield row("measure", "figure", "target")
    yield seconds("registry CSV import (CLI)", f.import_s)
    yield seconds("gateway start-up (to 'subscribed to')", f.startup_s, 30)
    yield rss("RSS peak during start-up", f.startup_peak)
    yield rss("RSS at idle after start-up", f.rss_idle)
    for number, r in enumerate(f.rounds, start=1):
        done = r.processed - (number - 1) * n
        yield row(f"round {number}: gateway throughput", f"{done / r.gateway_s:.0f} msg/s")
        yield row(f"round {number}: processed / sent", f"{done}/{n}", "all", done >= n)
        yield rss(f"round {number}: peak RSS", r.peak_rss)
    yield rss("RSS after traffic (every device seen)", f.rss_after)
    if f.rounds:
        yield row("gateway CPU per 100k messages", f"{f.cpu_s / len(f.rounds) / n * 1e5:.2f} s")
    yield seconds(f"restart, {f.state_rows} saved rule states", f.restart_s, 30)
    yield rss("RSS peak during the restart", f.restart_peak)
    yield rss("RSS at idle after the restart", f.rss_restart)
    total = n * len(f.rounds)
    if f.stored_s is not None:
        yield row("end to end (publish → all in InfluxDB)", f"{total / f.stored_s:.0f} msg/s")
    verified = "no answer" if f.verified is None else f"{f.verified}/{total}"
    yield row("points in InfluxDB (count query)", verified, "all", (f.verified or 0) >= total)
    tick_ms = f"{f.tick_idle_s * 1000:.1f} ms"
    yield row("rules tick, nothing due (in-process)", tick_ms, "< 100 ms", f.tick_idle_s < 0.1)
    yield seconds("rules tick, every device offline", f.tick_all_due_s)
    yield from (f"note: {note}" for note in f.notes)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.million``."""
    parser = argparse.ArgumentParser(prog="python -m bench.million", description=__doc__)
    parser.add_argument(
        "--devices",
        type=int,
        default=int(os.environ.get("BENCH_MILLION_DEVICES", "1000000")),
        help="registered devices (env BENCH_MILLION_DEVICES; default 1000000)",
    )
    args = parser.parse_args(argv)
    if not 1000 <= args.devices <= 5_000_000:
        parser.error("--devices must be 1000-5000000")
    with tempfile.TemporaryDirectory(prefix="scc-million-") as tmp:
        figures = measure(args.devices, Path(tmp))
    print()
    for line in table(figures):
        print(line)
    complete = (figures.verified or 0) >= figures.devices * len(figures.rounds)
    return 0 if complete and len(figures.rounds) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
