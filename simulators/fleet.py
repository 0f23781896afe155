"""Fleet runner: every device of a community simulated and published over MQTT.

The pure part, :class:`FleetCore`, owns a heap of due times (one step entry per device plus
scripted incidents) and turns simulator output into :class:`Outgoing` messages, replacing a
share of them with bad input (malformed payloads, unregistered devices, topic mismatches).
:func:`plan` drives it over a simulated clock, so tests check determinism without a broker;
:func:`run_fleet` drives the same core by real time and hands messages to a publisher.
"""

from __future__ import annotations

import heapq
import logging
import random
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import orjson

from devices import load_kind
from devices.base import DeviceSimulator
from simulators.community import DeviceRow, parse_location

logger = logging.getLogger(__name__)

Category = Literal["ok", "status", "bad_payload", "ghost", "mismatch"]
#: Longest gap between two steps of one simulator; scripted incident steps (a fire's smoke
#: rising every 30 s) are published at most this late even if the heartbeat is hours.
MAX_STEP_S = 5.0
ONLINE = b'{"state":"online"}'
OFFLINE = b'{"state":"offline"}'


class FleetError(Exception):
    """The fleet cannot start as asked (bad option, unknown kind or codec, no broker)."""


class IncidentError(FleetError, ValueError):
    """An ``--incident`` spec is malformed or names no suitable device."""


@dataclass(frozen=True, slots=True)
class IncidentSpec:
    """``name@target[+delay_seconds]`` as typed on the command line."""

    name: str
    target: str
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident bound to one device, ``delay_s`` after the fleet starts."""

    name: str
    device_id: str
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish on ``scc/v1/<device_id>/<topic_kind>``."""

    at: float
    device_id: str
    topic_kind: str
    payload: bytes
    kind: str
    category: Category


def parse_incident(text: str) -> IncidentSpec:
    """Parse ``fire@B3-2-1001`` or ``overflow@bin-C2-07+30``; IncidentError if malformed."""
    name, sep, rest = text.partition("@")
    target, plus, delay = rest.partition("+")
    if not sep or not name.strip() or not target.strip():
        raise IncidentError(f"incident {text!r} is not name@target[+delay_seconds]")
    try:
        delay_s = float(delay) if plus else 0.0
    except ValueError as err:
        raise IncidentError(f"incident {text!r}: delay {delay!r} is not seconds") from err
    if not 0.0 <= delay_s <= 365 * 86400.0:
        raise IncidentError(f"incident {text!r}: delay must be between 0 and one year")
    return IncidentSpec(name.strip(), target.strip(), delay_s)


def incident_names(kind: str) -> tuple[str, ...]:
    """Incident names the simulator of ``kind`` accepts."""
    return load_kind(kind).simulator.incidents


def resolve_incident(
    spec: IncidentSpec, rows: Sequence[DeviceRow], parents: Mapping[str, str] | None = None
) -> Incident:
    """Bind a spec to one device: a device id, a ``B3-2-1001`` location, or a node code.

    For a node code the first device under that node (``parents`` maps child → parent node
    codes; without it only devices directly at the node count) whose kind has the incident.
    """
    by_id = {row.device_id: row for row in rows}
    row = by_id.get(spec.target) or _at_location(spec.target, rows)
    if row is not None:
        names = incident_names(row.kind)
        if spec.name not in names:
            raise IncidentError(
                f"{row.device_id} ({row.kind}) has no incident {spec.name!r}; "
                f"valid: {', '.join(names) or 'none'}"
            )
        return Incident(spec.name, row.device_id, spec.delay_s)
    under = [r for r in rows if _is_under(r.node, spec.target, parents or {})]
    if not under:
        raise IncidentError(f"incident target {spec.target!r} is no device, location or node")
    for candidate in under:
        if spec.name in incident_names(candidate.kind):
            return Incident(spec.name, candidate.device_id, spec.delay_s)
    valid = sorted({name for r in under for name in incident_names(r.kind)})
    raise IncidentError(
        f"no device under {spec.target} has incident {spec.name!r}; valid: {', '.join(valid)}"
    )


def _at_location(target: str, rows: Sequence[DeviceRow]) -> DeviceRow | None:
    try:
        node, location = parse_location(target)
    except ValueError:
        return None
    return next((r for r in rows if r.node == node and r.location == location), None)


def _is_under(node: str, ancestor: str, parents: Mapping[str, str]) -> bool:
    for _ in range(64):  # the tree is six levels deep; the bound guards against cycles
        if node == ancestor:
            return True
        if node not in parents:
            return False
        node = parents[node]
    return False


def build_simulator(row: DeviceRow, seed: int, interval: float | None) -> DeviceSimulator:
    """The simulator of one device row, seeded by ``seed`` and the device id."""
    kind = load_kind(row.kind)
    if row.codec not in kind.codecs:
        raise FleetError(
            f"{row.device_id}: kind {row.kind} has no codec {row.codec!r}; "
            f"known: {', '.join(kind.codecs)}"
        )
    return kind.simulator(
        row.device_id,
        codec=kind.codecs[row.codec],
        params=row.params,
        rng=random.Random(f"{seed}:{row.device_id}"),
        heartbeat_s=interval or kind.heartbeat_s,
    )


class FleetCore:
    """Pure scheduler of a fleet: no I/O, time is passed in, randomness is seeded."""

    def __init__(
        self,
        devices: Sequence[DeviceRow],
        seed: int,
        start: float,
        *,
        interval: float | None = None,
        incidents: Sequence[Incident] = (),
        bad_rate: float = 0.0,
    ) -> None:
        if not 0.0 <= bad_rate <= 1.0:
            raise FleetError(f"bad rate {bad_rate} is not between 0 and 1")
        self.rows = list(devices)
        self.start = start
        self.bad_rate = bad_rate
        self.rng = random.Random(f"{seed}:fleet")
        self.sims = [build_simulator(row, seed, interval) for row in self.rows]
        self._index = {row.device_id: i for i, row in enumerate(self.rows)}
        self._heap: list[tuple[float, int, int, str]] = []
        self._order = 0
        count = max(1, len(self.rows))
        for i, sim in enumerate(self.sims):
            # Spread the steps over one period so the loop wakes evenly, not in bursts.
            self._push(start + self._period(sim) * i / count, i, "")
        for incident in incidents:
            if incident.device_id not in self._index:
                raise IncidentError(f"incident target {incident.device_id} is not in the fleet")
            self._push(start + incident.delay_s, self._index[incident.device_id], incident.name)
            logger.info("incident %s@%s +%gs", incident.name, incident.device_id, incident.delay_s)

    @staticmethod
    def _period(sim: DeviceSimulator) -> float:
        return min(sim.heartbeat_s, MAX_STEP_S)

    def _push(self, due: float, index: int, incident: str) -> None:
        self._order += 1
        heapq.heappush(self._heap, (due, self._order, index, incident))

    def opening(self) -> list[Outgoing]:
        """An ``online`` status of every device at the start."""
        return [self._status(self.start, i, ONLINE) for i in range(len(self.rows))]

    def closing(self, now: float) -> list[Outgoing]:
        """An ``offline`` status of every device at a clean stop."""
        return [self._status(now, i, OFFLINE) for i in range(len(self.rows))]

    def _status(self, at: float, index: int, payload: bytes) -> Outgoing:
        row = self.rows[index]
        return Outgoing(at, row.device_id, "status", payload, row.kind, "status")

    def next_due(self) -> float | None:
        """When the next step or incident falls due (None for an empty fleet)."""
        return self._heap[0][0] if self._heap else None

    def advance(self, now: float, max_events: int = 100_000) -> list[Outgoing]:
        """Run every step and incident due at or before ``now`` (at most ``max_events``)."""
        out: list[Outgoing] = []
        for _ in range(max_events):
            if not self._heap or self._heap[0][0] > now:
                break
            due, _, index, incident = heapq.heappop(self._heap)
            sim = self.sims[index]
            if incident:
                messages = sim.start_incident(incident, due)
            else:
                messages = sim.step(due)
                self._push(due + self._period(sim), index, "")
            out.extend(self._outgoing(due, index, m.topic_kind, m.payload) for m in messages)
        return out

    def _outgoing(self, at: float, index: int, topic_kind: str, payload: bytes) -> Outgoing:
        row = self.rows[index]
        if self.bad_rate <= 0.0 or self.rng.random() >= self.bad_rate:
            return Outgoing(at, row.device_id, topic_kind, payload, row.kind, "ok")
        variant = self.rng.random()
        if variant < 0.1:
            ghost = f"ghost-{self.rng.randrange(1, 1000)}"
            return Outgoing(at, ghost, topic_kind, payload, "ghost", "ghost")
        if variant < 0.2:
            other = self.rows[(index + 1) % len(self.rows)].device_id
            forged = _forge_device_id(payload, other if other != row.device_id else "ghost-0")
            if forged is not None:
                return Outgoing(at, row.device_id, topic_kind, forged, row.kind, "mismatch")
        bad = self.sims[index].bad_payload()
        return Outgoing(at, row.device_id, bad.topic_kind, bad.payload, row.kind, "bad_payload")


def _forge_device_id(payload: bytes, device_id: str) -> bytes | None:
    """The same JSON object claiming to come from another device (None if not a JSON object)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    doc["device_id"] = device_id
    return orjson.dumps(doc)


def plan_messages(
    devices: Sequence[DeviceRow],
    seed: int,
    start: float,
    until: float,
    interval: float | None = None,
    incidents: Sequence[Incident] = (),
    bad_rate: float = 0.0,
) -> list[Outgoing]:
    """Everything the fleet sends from ``start`` to ``until`` (statuses included)."""
    core = FleetCore(
        devices, seed, start, interval=interval, incidents=incidents, bad_rate=bad_rate
    )
    out = core.opening()
    for _ in range(10_000_000):  # a bound far above any test plan
        due = core.next_due()
        if due is None or due > until:
            break
        out.extend(core.advance(due))
    out.extend(core.closing(until))
    return out


def plan(
    devices: Sequence[DeviceRow],
    seed: int,
    start: float,
    until: float,
    interval: float | None = None,
    incidents: Sequence[Incident] = (),
    bad_rate: float = 0.0,
) -> list[tuple[float, str, str, bytes]]:
    """``(time, device_id, topic_kind, payload)`` of every message, as the runner sends it."""
    messages = plan_messages(devices, seed, start, until, interval, incidents, bad_rate)
    return [(m.at, m.device_id, m.topic_kind, m.payload) for m in messages]


class Publisher(Protocol):
    """Where the runner sends messages (MQTT in production, a list in tests)."""

    def publish(self, device_id: str, topic_kind: str, payload: bytes) -> None:
        """Queue one message."""
        ...

    def flush(self, timeout: float) -> int:
        """Wait for queued messages; return how many are still unconfirmed."""
        ...


@dataclass
class FleetStats:
    """Messages sent, by device kind and by category."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)
    unconfirmed: int = 0

    def add(self, message: Outgoing) -> None:
        """Count one sent message."""
        self.by_kind[message.kind] += 1
        self.by_category[message.category] += 1

    def line(self, elapsed: float) -> str:
        """One human-readable stats line."""
        total = sum(self.by_kind.values())
        kinds = " ".join(f"{k}={n}" for k, n in sorted(self.by_kind.items()))
        cats = " ".join(f"{k}={n}" for k, n in sorted(self.by_category.items()))
        rate = total / elapsed if elapsed > 0 else 0.0
        return f"fleet t={elapsed:.1f}s sent={total} ({rate:.1f}/s) {kinds} | {cats}"


def run_fleet(
    core: FleetCore,
    publisher: Publisher,
    stop: threading.Event,
    *,
    duration: float | None = None,
    stats_every: float = 5.0,
    clock: Callable[[], float] = time.time,
) -> FleetStats:
    """Publish the core's messages by real time until ``duration`` passes or ``stop`` is set."""
    stats = FleetStats()
    began = clock()
    deadline = None if duration is None else began + duration
    next_stats = began + stats_every if stats_every > 0 else None

    def send(messages: list[Outgoing]) -> None:
        for message in messages:
            publisher.publish(message.device_id, message.topic_kind, message.payload)
            stats.add(message)

    send(core.opening())
    try:
        while not stop.is_set():
            now = clock()
            if deadline is not None and now >= deadline:
                break
            send(core.advance(now))
            if next_stats is not None and now >= next_stats:
                print(stats.line(now - began), file=sys.stderr, flush=True)
                next_stats = now + stats_every
            stop.wait(max(0.0, _wake_at(now, core.next_due(), next_stats, deadline) - clock()))
    finally:
        # Also after a simulator error: the devices still say goodbye.
        send(core.closing(clock()))
        stats.unconfirmed = publisher.flush(timeout=5.0)
    print(stats.line(clock() - began), file=sys.stderr, flush=True)
    return stats


def _wake_at(now: float, *times: float | None) -> float:
    """The earliest of ``times``, and at most half a second from now (to notice a stop)."""
    return min([now + 0.5, *(t for t in times if t is not None)])


def select_devices(
    rows: Sequence[DeviceRow],
    kinds: Sequence[str] | None = None,
    limit: int | None = None,
    keep: Sequence[str] = (),
) -> list[DeviceRow]:
    """Rows of the wanted kinds; with ``limit``, round-robin over kinds so every kind stays.

    Devices named in ``keep`` (incident targets) are always included.
    """
    chosen = [row for row in rows if kinds is None or row.kind in kinds]
    if limit is not None and limit < len(chosen):
        queues: dict[str, deque[DeviceRow]] = {}
        for row in chosen:
            queues.setdefault(row.kind, deque()).append(row)
        picked: list[DeviceRow] = []
        while len(picked) < limit:
            picked.extend(q.popleft() for q in queues.values() if q)
        picked_ids = {row.device_id for row in picked[:limit]} | set(keep)
        chosen = [row for row in rows if row.device_id in picked_ids]
    return chosen
