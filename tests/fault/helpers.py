"""Shared pieces of the fault-injection suite.

- :class:`GatewayProcess` runs ``python -m gateway run`` as a child process, so a test can
  SIGKILL it; readiness is the log line ``subscribed to`` written after each start.
- :class:`NumberedPublisher` publishes a numbered stream at a steady rate with paho-mqtt
  (MQTT 3.1.1, persistent session, QoS 1) and counts a message as sent only once the broker
  acknowledged it.
- :func:`stored_seqs` reads every stored ``seq`` per device back from InfluxDB and
  :func:`account` turns sent and stored into ``sent / stored / lost / duplicated``.
- :class:`RssSampler` follows a process's resident memory; :func:`publish_burst` sends a
  burst at full speed with the benchmark's raw MQTT 5 publisher.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from bench.loadgen import publish, publish_packets
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine
from gateway.services.base import ServiceError
from gateway.services.influxdb import influx_query
from gateway.storage.deadletter import DeadLetter, DeadLetterStore
from gateway.storage.spool_files import load_cursor

REPO = Path(__file__).resolve().parents[2]

#: Device timestamps of the numbered streams start here (epoch ms): two hours before the
#: suite started, so that they stay within what the gateway accepts (7 days back, 5 minutes
#: ahead of its clock) and a stream of a million messages (ts T0_MS + n) stays in the past.
T0_MS = (int(time.time()) - 7200) * 1000

HIERARCHY = {
    "code": "ST1", "level": "street", "name": "望京街道", "children": [
        {"code": "SQ1", "level": "community", "name": "花园社区", "children": [
            {"code": "G1", "level": "grid", "name": "第一网格", "children": [
                {"code": "C1", "level": "compound", "name": "阳光小区", "children": [
                    {"code": "B1", "level": "building", "name": "1号楼", "children": [
                        {"code": "B1-1", "level": "unit", "name": "1单元"}]}]}]}]}],
}  # fmt: skip

Key = tuple[str, int]  # (device_id, seq)


# -- time-bounded waiting ----------------------------------------------------------------


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> float:
    """Poll ``condition`` until true; return the seconds it took, AssertionError on timeout."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(interval)


def show(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Print past pytest's capture, so the numbers appear in a plain ``make test`` run."""
    with capsys.disabled():
        print(f"\n{text}", flush=True)


# -- registry ------------------------------------------------------------------------------


def prepare_registry(state_dir: Path, device_ids: Iterable[str], kind: str = "smoke") -> None:
    """Write the gateway's registry (``state_dir/gateway.db``): one unit holding the devices."""
    state_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(make_engine(f"sqlite:///{state_dir / 'gateway.db'}"))
    registry.load_hierarchy(HIERARCHY)
    path = state_dir / "devices.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(
            ["device_id", "kind", "model", "codec", "node", "location", "params", "installed_at"]
        )
        for device_id in device_ids:
            out.writerow([device_id, kind, "JTY-GD-H388", "json", "B1-1", "", "", "2024-04-12"])
    registry.load_devices_csv(path)
    registry.engine.dispose()


def dead_letter_counts(state_dir: Path) -> dict[str, int]:
    """Dead letters by reason in a gateway's registry database."""
    engine = make_engine(f"sqlite:///{state_dir / 'gateway.db'}")
    try:
        return DeadLetterStore(engine).counts_by_reason()
    finally:
        engine.dispose()


def dead_letters_by_device(state_dir: Path) -> dict[tuple[str | None, str], int]:
    """Dead letters by (device, reason) in a gateway's registry database."""
    engine = make_engine(f"sqlite:///{state_dir / 'gateway.db'}")
    query = select(DeadLetter.device_id, DeadLetter.reason, func.count()).group_by(
        DeadLetter.device_id, DeadLetter.reason
    )
    try:
        with engine.connect() as conn:
            return {(device, reason): int(n) for device, reason, n in conn.execute(query)}
    finally:
        engine.dispose()


def spool_depth_bytes(spool_dir: Path) -> int:
    """Bytes not yet drained, from the spool's files: segments from the cursor's on, minus
    the cursor's offset."""
    sizes = {}
    for path in spool_dir.glob("seg-*.spool"):
        try:
            sizes[int(path.stem[4:])] = path.stat().st_size
        except FileNotFoundError:  # drained and deleted meanwhile
            continue
    segment, offset = load_cursor(spool_dir) or (min(sizes, default=1), 0)
    return sum(size for number, size in sizes.items() if number >= segment) - offset


def spooled_lines(spool_dir: Path, prefix: bytes) -> int:
    """Lines starting with ``prefix`` in a spool's segment files, read without opening the
    spool (which would repair its tail): records are ``[u32 length][u32 crc][data]``."""
    total = 0
    for path in sorted(spool_dir.glob("seg-*.spool")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # drained and deleted meanwhile
            continue
        pos = 0
        while pos + 8 <= len(data):
            (length,) = struct.unpack_from("!I", data, pos)
            body = data[pos + 8 : pos + 8 + length]
            if len(body) < length:
                break
            total += body.startswith(prefix) + body.count(b"\n" + prefix)
            pos += 8 + length
    return total


# -- the gateway as a child process --------------------------------------------------------


class GatewayProcess:
    """``python -m gateway run`` in a child process: start, SIGKILL, restart, stop.

    Every start appends to one log file; a start is ready when the ``subscribed to`` line
    appears in the part of the log written since that start.
    """

    def __init__(
        self,
        state_dir: Path,
        name: str,
        mqtt_port: int,
        influx_url: str,
        database: str,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.state_dir = state_dir
        self.name = name
        self.mqtt_port = mqtt_port
        self.influx_url = influx_url
        self.database = database
        self.log_path = (log_dir or state_dir) / f"gateway-{name}.log"
        self.args = list(args)
        # Settings come from flags here, never from a developer's SCC_* environment.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SCC_")}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def command(self) -> list[str]:
        """The command line of one gateway run."""
        return [
            sys.executable, "-m", "gateway", "run", "--state-dir", str(self.state_dir),
            "--name", self.name, "--mqtt-port", str(self.mqtt_port),
            "--influx-url", self.influx_url, "--influx-database", self.database, *self.args,
        ]  # fmt: skip

    @property
    def pid(self) -> int:
        """The running child's pid."""
        assert self.proc is not None and self.proc.poll() is None, "gateway is not running"
        return self.proc.pid

    def running(self) -> bool:
        """Whether the child is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until subscribed; return the seconds it took."""
        assert not self.running(), "gateway already running"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"--- test: start {self.starts + 1} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env,
            )
        self.starts += 1
        deadline = started + timeout
        while True:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                if b"subscribed to" in handle.read():
                    return time.monotonic() - started
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"gateway did not subscribe:\n{self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a crash."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The end of the log, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_count(self, needle: str) -> int:
        """How often ``needle`` occurs in the log (over all starts)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").count(needle)
        except OSError:
            return 0


# -- the numbered stream ---------------------------------------------------------------------


def numbered(n: int, devices: Sequence[str]) -> tuple[str, bytes, Key]:
    """Message ``n`` of a stream: devices take turns, ``seq`` counts per device from 1 and
    ``ts`` is unique per message (so each is a distinct InfluxDB point)."""
    device = devices[n % len(devices)]
    seq = n // len(devices) + 1
    payload = orjson.dumps({"state": "normal", "seq": seq, "ts": T0_MS + n})
    return f"scc/v1/{device}/telemetry", payload, (device, seq)


class NumberedPublisher:
    """Publishes ``total`` numbered messages at ``rate`` msg/s from a thread of its own.

    paho-mqtt with MQTT 3.1.1, ``clean_session=False`` and a fixed client id: if the broker
    restarts, paho reconnects and resends the messages the broker had not acknowledged, and
    the messages published meanwhile wait in paho's queue. A message counts as sent only once
    its PUBACK arrived (``on_publish``).
    """

    def __init__(
        self,
        port: int,
        devices: Sequence[str],
        total: int,
        rate: float,
        client_id: str,
        max_inflight: int = 100,
    ) -> None:
        assert total < 65_000, "packet ids must not wrap: sent messages are told apart by id"
        self.devices = list(devices)
        self.total = total
        self.rate = rate
        self.port = port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)  # unbounded: hold the stream while offline
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.keys: dict[int, Key] = {}
        self.published_at: dict[Key, float] = {}  # monotonic time of each publish() call
        self._acked: deque[int] = deque()
        self.published = 0
        self.connects = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="numbered-publisher", daemon=True)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._acked.append(mid)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connects += 1

    def start(self) -> None:
        """Connect and start publishing."""
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            for n in range(self.total):
                if self._stop.is_set():
                    return
                delay = started + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                topic, payload, key = numbered(n, self.devices)
                self.published_at[key] = time.monotonic()
                info = self.client.publish(topic, payload, qos=1)
                # NO_CONN is fine: the message is queued and sent after the reconnect.
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    raise RuntimeError(f"publish {n} refused: {mqtt.error_string(info.rc)}")
                self.keys[info.mid] = key
                self.published += 1
        except BaseException as err:
            self.errors.append(err)

    @property
    def acked_count(self) -> int:
        """Messages the broker has acknowledged so far."""
        return len(self._acked)

    def done_publishing(self) -> bool:
        """Whether the publishing thread finished."""
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for the publishing thread; AssertionError if it failed or hangs."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "publisher did not finish in time"
        assert not self.errors, f"publisher failed: {self.errors[0]!r}"

    def wait_acked(self, timeout: float) -> None:
        """Wait until every published message is acknowledged."""
        wait_until(
            lambda: self.acked_count >= self.published,
            timeout,
            f"broker acks ({self.acked_count}/{self.published})",
        )

    def sent(self) -> set[Key]:
        """The (device, seq) of every acknowledged message."""
        return {self.keys[mid] for mid in list(self._acked) if mid in self.keys}

    def close(self) -> None:
        """Stop publishing and disconnect."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()


def publish_burst(port: int, messages: list[tuple[str, bytes]], client_id: str) -> float:
    """Publish at full speed with QoS 1 (raw MQTT 5 publisher); seconds until the last PUBACK."""
    packets = publish_packets(messages, qos=1)
    return asyncio.run(publish(port, packets, 1, client_id))


# -- InfluxDB read-back and accounting ---------------------------------------------------------


def stored_count(url: str, database: str, measurement: str = "smoke", where: str = "") -> int:
    """Points with a ``seq`` in ``measurement``; -1 while InfluxDB does not answer."""
    clause = f" WHERE {where}" if where else ""
    try:
        body = influx_query(url, f'SELECT count("seq") FROM "{measurement}"{clause}', db=database)
    except ServiceError:
        return -1
    series = body["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def stored_seqs(
    url: str, database: str, measurement: str = "smoke", where: str = ""
) -> dict[str, list[int]]:
    """Every stored ``seq`` of ``measurement``, per device (one entry per point)."""
    clause = f" WHERE {where}" if where else ""
    query = f'SELECT "seq" FROM "{measurement}"{clause} GROUP BY "device_id"'
    body = influx_query(url, query, db=database, timeout=60)
    out: dict[str, list[int]] = {}
    for series in body["results"][0].get("series", []):
        device = series["tags"]["device_id"]
        out[device] = [int(row[1]) for row in series["values"] if row[1] is not None]
    return out


@dataclass(frozen=True, slots=True)
class Accounting:
    """What was sent (acknowledged by the broker) against what InfluxDB holds."""

    sent: int  # acknowledged by the broker (PUBACK to the publisher)
    stored: int
    lost: int
    duplicated: int
    unexpected: int  # stored points that were never acknowledged as sent
    lost_examples: tuple[Key, ...]
    published: int = -1  # publish() calls, acknowledged or not (-1: not given)

    def line(self) -> str:
        """The ``sent / acknowledged / stored / lost / duplicated`` line."""
        published = self.published if self.published >= 0 else self.sent
        return (
            f"sent {published} / acknowledged {self.sent} / stored {self.stored} / "
            f"lost {self.lost} / duplicated {self.duplicated}"
        )


def account(sent: set[Key], stored: dict[str, list[int]], published: int = -1) -> Accounting:
    """Compare: lost = sent and not stored; duplicated = points of one seq beyond the first."""
    points = Counter((device, seq) for device, seqs in stored.items() for seq in seqs)
    lost = sorted(sent - points.keys())
    return Accounting(
        published=published,
        sent=len(sent),
        stored=len(sent & points.keys()),
        lost=len(lost),
        duplicated=sum(count - 1 for count in points.values()),
        unexpected=len(points.keys() - sent),
        lost_examples=tuple(lost[:10]),
    )


class StoredWatcher:
    """Polls InfluxDB from a thread and notes when each (device, seq) is first seen stored.

    The time noted is when the query answered, an upper bound of when the point was stored.
    """

    def __init__(self, url: str, database: str, where: str, interval: float = 0.1) -> None:
        self.url = url
        self.database = database
        self.where = where
        self.interval = interval
        self.first_seen: dict[Key, float] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stored-watcher", daemon=True)

    def __enter__(self) -> StoredWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stored = stored_seqs(self.url, self.database, where=self.where)
            except ServiceError:
                stored = {}
            now = time.monotonic()
            self.polls += 1
            for device, seqs in stored.items():
                for seq in seqs:
                    self.first_seen.setdefault((device, seq), now)
            self._stop.wait(self.interval)


# -- memory ----------------------------------------------------------------------------------


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds from a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = int(self.process.memory_info().rss)
            except psutil.Error:
                return
            self.samples.append((time.monotonic() - self._started, rss))
            self._stop.wait(self.interval)

    @property
    def peak_mib(self) -> float:
        """The largest RSS seen, in MiB."""
        return max((rss for _, rss in self.samples), default=0) / 2**20
