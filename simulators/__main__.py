"""Command line of the simulators, and the MQTT transport of the fleet runner.

    python -m simulators generate-community --out fixtures/demo_community --seed 1
    python -m simulators fleet --community fixtures/demo_community --port 1883 \\
        --interval 60 --duration 300 --bad-rate 0.01 --incident fire@B3-2-1001

Exit codes: 0 success, 1 runtime failure (no broker), 2 bad usage (unknown kind, incident).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices import KINDS
from simulators.community import (
    CommunityError,
    DeviceRow,
    load_devices,
    load_hierarchy,
    parent_map,
    write_community,
)
from simulators.fleet import (
    FleetCore,
    FleetError,
    parse_incident,
    resolve_incident,
    run_fleet,
    select_devices,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """How to reach the broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    qos: int = 1
    connections: int = 4
    username: str | None = None
    password: str | None = None
    max_pending: int = 1000
    max_queued: int = 100_000
    connect_timeout: float = 10.0


class MqttPublisher:
    """Publishes over several paho connections; a device always uses the same one."""

    def __init__(self, options: MqttOptions, stop: threading.Event | None = None) -> None:
        self.options = options
        #: Once set, publish() no longer waits for the broker, so a stop is never held up.
        self.stop = stop or threading.Event()
        self.clients: list[mqtt.Client] = []
        self._connected: list[threading.Event] = []
        self._pending: list[deque[mqtt.MQTTMessageInfo]] = []
        self.failed = 0

    def connect(self) -> None:
        """Open every connection; FleetError if one is not up within the timeout."""
        opts = self.options
        # A device's own login is bound to its device id as client id: one connection.
        connections = 1 if opts.username else max(1, opts.connections)
        for n in range(connections):
            client_id = opts.username or f"scc-fleet-{os.getpid()}-{n}"
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
            if opts.username:
                client.username_pw_set(opts.username, opts.password)
            client.max_inflight_messages_set(opts.max_pending)
            # Bounded memory while the broker is away: beyond this, messages count as failed.
            client.max_queued_messages_set(opts.max_queued)
            client.reconnect_delay_set(1, 30)
            up = threading.Event()
            client.on_connect = _on_connect(up)
            client.connect_async(opts.host, opts.port, keepalive=30)
            client.loop_start()
            self.clients.append(client)
            self._connected.append(up)
            self._pending.append(deque())
        deadline = time.monotonic() + opts.connect_timeout
        for up in self._connected:
            if not up.wait(max(0.0, deadline - time.monotonic())):
                self.close()
                raise FleetError(f"no MQTT connection to {opts.host}:{opts.port}")

    def publish(self, device_id: str, topic_kind: str, payload: bytes) -> None:
        """Queue one message; wait (at most 1 s) when too many are unconfirmed."""
        slot = zlib.crc32(device_id.encode()) % len(self.clients)
        topic = f"scc/v1/{device_id}/{topic_kind}"
        pending = self._pending[slot]
        pending.append(self.clients[slot].publish(topic, payload, qos=self.options.qos))
        self._drain(pending)
        if len(pending) > self.options.max_pending and not self.stop.is_set():
            _wait(pending[0], 1.0)
            self._drain(pending)

    def _drain(self, pending: deque[mqtt.MQTTMessageInfo]) -> None:
        while pending:
            state = _state(pending[0])
            if state == "pending":
                return
            pending.popleft()
            self.failed += state == "failed"

    def flush(self, timeout: float) -> int:
        """Wait until every queued message is confirmed or ``timeout`` passes.

        Returns how many messages were not confirmed (still queued, or failed to queue).
        """
        deadline = time.monotonic() + timeout
        for pending in self._pending:
            for _ in range(len(pending) + 1):
                self._drain(pending)
                if not pending or time.monotonic() >= deadline:
                    break
                _wait(pending[0], deadline - time.monotonic())
        return sum(len(pending) for pending in self._pending) + self.failed

    def close(self) -> None:
        """Disconnect every connection and stop its network thread."""
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


def _state(info: mqtt.MQTTMessageInfo) -> Literal["done", "failed", "pending"]:
    try:
        return "done" if info.is_published() else "pending"
    except (ValueError, RuntimeError):
        # Queue full, or no connection when published: paho may still resend it, but we
        # cannot confirm it, so it is reported as unconfirmed.
        return "failed"


def _wait(info: mqtt.MQTTMessageInfo, timeout: float) -> None:
    with contextlib.suppress(ValueError, RuntimeError):  # counted by _state
        info.wait_for_publish(max(0.0, timeout))


def _on_connect(up: threading.Event) -> Callable[..., None]:
    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            logger.warning("MQTT connection refused: %s", rc)
            return
        logger.debug("MQTT connection %s up", client)
        up.set()

    return on_connect


# --- command line ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``generate-community`` and ``fleet`` sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate-community", help="write the demo community fixture")
    gen.add_argument("--out", type=Path, default=Path("fixtures/demo_community"))
    gen.add_argument("--seed", type=int, default=1)
    fleet = sub.add_parser("fleet", help="simulate a community's devices over MQTT")
    fleet.add_argument("--community", type=Path, default=Path("fixtures/demo_community"))
    fleet.add_argument("--host", default="127.0.0.1")
    fleet.add_argument("--port", type=int, default=1883)
    fleet.add_argument("--seed", type=int, default=1)
    fleet.add_argument("--interval", type=float, help="heartbeat seconds for every device")
    fleet.add_argument("--duration", type=float, help="stop after this many seconds")
    fleet.add_argument("--bad-rate", type=float, default=0.0, help="share of bad messages")
    fleet.add_argument(
        "--incident", action="append", default=[], help="name@target[+delay_s], repeatable"
    )
    fleet.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    fleet.add_argument("--connections", type=int, default=4)
    fleet.add_argument("--kinds", help="comma-separated device kinds, e.g. smoke,bin")
    fleet.add_argument("--limit", type=int, help="at most N devices (spread over kinds)")
    fleet.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID:KIND[:CODEC]",
        help="simulate this device instead of the community (repeatable), e.g. a newly "
        "registered one; with --username/--password set to its own MQTT login",
    )
    fleet.add_argument("--username")
    fleet.add_argument("--password")
    fleet.add_argument("--stats-every", type=float, default=5.0)
    return parser


def _generate(args: argparse.Namespace) -> int:
    generated = write_community(args.out, args.seed)
    print(f"wrote {len(generated.devices)} devices to {args.out}", file=sys.stderr)
    return 0


def _kinds(text: str | None) -> list[str] | None:
    if text is None:
        return None
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise FleetError(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
    return kinds


def _adhoc_row(spec: str) -> DeviceRow:
    """``ID:KIND[:CODEC]`` → a device row outside any community file."""
    device_id, _, rest = spec.partition(":")
    kind, _, codec = rest.partition(":")
    if not device_id or kind not in KINDS:
        raise FleetError(f"--device {spec!r}: expected ID:KIND[:CODEC], KIND one of {KINDS}")
    return DeviceRow(device_id, kind, "simulated", codec or "json", "", "", {}, date.today())


def _build_core(args: argparse.Namespace) -> FleetCore:
    """Load the community, resolve incidents and build the simulators (no I/O yet)."""
    if args.device:
        return FleetCore(
            [_adhoc_row(spec) for spec in args.device],
            args.seed,
            time.time(),
            interval=args.interval,
            bad_rate=args.bad_rate,
        )
    rows = load_devices(args.community / "devices.csv")
    parents = parent_map(load_hierarchy(args.community / "hierarchy.yaml"))
    incidents = [resolve_incident(parse_incident(s), rows, parents) for s in args.incident]
    if args.limit is not None and args.limit < 1:
        raise FleetError("--limit must be at least 1")
    keep = [incident.device_id for incident in incidents]
    chosen = select_devices(rows, _kinds(args.kinds), args.limit, keep)
    if args.interval is not None and args.interval <= 0:
        raise FleetError("--interval must be positive")
    return FleetCore(
        chosen,
        args.seed,
        time.time(),
        interval=args.interval,
        incidents=incidents,
        bad_rate=args.bad_rate,
    )


def _fleet(args: argparse.Namespace) -> int:
    try:
        core = _build_core(args)
    except (FleetError, CommunityError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    options = MqttOptions(
        args.host, args.port, args.qos, args.connections, args.username, args.password
    )
    stop = threading.Event()
    publisher = MqttPublisher(options, stop)
    try:
        publisher.connect()
    except FleetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    logger.info("fleet of %d devices publishing to %s:%d", len(core.rows), args.host, args.port)
    try:
        with _stop_on_signals(stop):
            stats = run_fleet(
                core, publisher, stop, duration=args.duration, stats_every=args.stats_every
            )
    finally:
        publisher.close()
    if stats.unconfirmed:
        logger.warning("%d messages were not confirmed by the broker", stats.unconfirmed)
    return 0


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM while the block runs, then restore the handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping the fleet", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators`` and the ``scc-simulators`` script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "generate-community":
        return _generate(args)
    return _fleet(args)


if __name__ == "__main__":
    sys.exit(main())
