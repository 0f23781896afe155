"""The ingest hot path: route, decode, validate, enrich and serialise a batch of messages.

Pure CPU work with no I/O except a registry lookup for a topic seen for the first time.
Each topic is parsed once: the route (device, kind, codec, series prefix) is cached by the
raw topic bytes, so a message costs one dict lookup before its codec runs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import cast

import orjson
from pydantic import ValidationError

from devices import KINDS, load_kind
from devices.base import (
    JSON_CODEC,
    TOPIC_KINDS,
    Codec,
    DecodeError,
    DeviceKind,
    Reading,
    reject_duplicate_keys,
)
from gateway.core.lineproto import FieldWriter, escape_string_field, series_prefix
from gateway.ingest.limits import DeviceLimits
from gateway.ingest.rejectlog import RateLimitedLog
from gateway.registry.store import DeviceInfo
from gateway.sources.batch import RECEIVE_STEP_NS, Batch

log = logging.getLogger(__name__)

TOPIC_ROOT = "scc/v1"
LOOKUP_RETRY_S = 2.0


@dataclass(frozen=True, slots=True)
class Route:
    """Everything needed to handle messages of one topic.

    A million devices each have a route, so the series prefix is not stored per device but
    as the text before and after the device id (``head``, ``tail``), shared by every device
    of the same kind, model and place."""

    info: DeviceInfo
    topic_kind: str
    kind: DeviceKind
    codec: Codec
    head: str  # the series up to the device id: "smoke,building=B1,...,device_id="
    tail: str  # after it: ",grid=G1,model=...,street=ST1" (tags sorted by key)
    writer: FieldWriter
    #: Validates a payload straight from JSON bytes into the kind's model when it can be
    #: (JSON codec, nothing derived from install parameters); None otherwise. One function per
    #: kind, shared by its routes.
    json_model: Callable[[bytes], Reading] | None = None

    @property
    def events_prefix(self) -> str:
        """The device's ``events`` series (status messages are rare: built when needed)."""
        return series_prefix("events", {**device_tags(self.info), "kind": self.info.kind})


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message the pipeline refused, with everything needed to inspect and replay it."""

    received_ns: int
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 4x as much to build, per message
class Accepted:
    """A valid reading, handed to the rules engine (read-only by convention)."""

    info: DeviceInfo
    topic_kind: str
    reading: Reading | None
    ts_ns: int
    status: str | None = None


@dataclass(slots=True)
class BatchResult:
    """What one batch produced."""

    lines: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)
    messages_by_kind: Counter[str] = field(default_factory=Counter)

    def line_bytes(self) -> bytes:
        """The batch's points as one line-protocol body."""
        return "\n".join(self.lines).encode("utf-8")


def _mismatch(named: str, topic_device: str) -> DecodeError:
    return DecodeError("topic_mismatch", f"payload names device {named!r}, topic {topic_device!r}")


class _TopicError(Exception):
    def __init__(self, reason: str, detail: str, device_id: str | None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.device_id = device_id


def device_tags(info: DeviceInfo) -> dict[str, str]:
    """Tags of a device's points: identity, model and the hierarchy path."""
    tags = {"device_id": info.device_id, "model": info.model}
    tags.update(dict(info.path))
    return tags


class Pipeline:
    """Turns batches of raw MQTT messages into points, rejections and accepted readings."""

    def __init__(
        self,
        lookup: Callable[[str], DeviceInfo | None],
        max_payload_bytes: int = 65536,
        log_rejection: Callable[[Rejected], None] | None = None,
        lookup_retry_s: float = LOOKUP_RETRY_S,
        device_rate_per_s: float = 0.0,
        device_burst: int = 200,
        *,
        ts_max_skew_s: float = 300.0,
        ts_max_age_s: float = 7 * 86400.0,
        device_backlog_s: float = 86400.0,
    ) -> None:
        self._lookup = lookup
        # The device-time window and the per-device rate limit (gateway.ingest.limits): a flooding
        # device is throttled (its excess kept as rate_limited dead letters), so it cannot
        # crowd out the others; an outage backlog with the devices' own ts is kept.
        self.limits = DeviceLimits(
            device_rate_per_s, device_burst, ts_max_skew_s, ts_max_age_s, device_backlog_s
        )
        self.lookup_retry_s = lookup_retry_s
        self.max_payload_bytes = max_payload_bytes
        self._routes: dict[bytes, Route] = {}
        self._prefixes: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[str, str]] = {}
        self._misses: dict[str, float] = {}
        self._writers = {name: FieldWriter(load_kind(name).fields) for name in KINDS}
        # The models' core validators, called directly: the ``model_validate_json`` wrapper
        # costs ~0.3 us a call, a fifth of validating a typical message.
        self._json_validators = {
            name: cast(
                "Callable[[bytes], Reading]",
                load_kind(name).model.__pydantic_validator__.validate_json,
            )
            for name in KINDS
        }
        self._log = log_rejection or RateLimitedLog()
        self.last_seen: dict[str, int] = {}

    def invalidate(self, device_id: str | None = None) -> None:
        """Forget cached routes (after a device is moved, re-registered or removed)."""
        if device_id is None:
            self._routes.clear()
            self._misses.clear()
            return
        self._misses.pop(device_id, None)
        for topic in [t for t, r in self._routes.items() if r.info.device_id == device_id]:
            del self._routes[topic]

    def known(self, device_id: str) -> DeviceInfo | None:
        """The registry entry of a device the pipeline has routed (None otherwise)."""
        for topic_kind in TOPIC_KINDS:  # its routes, rather than a second dict per device
            route = self._routes.get(f"{TOPIC_ROOT}/{device_id}/{topic_kind}".encode())
            if route is not None:
                return route.info
        return None

    def _route(self, topic: bytes) -> Route:
        try:
            text = topic.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _TopicError("bad_topic", "topic is not UTF-8", None) from err
        parts = text.split("/")
        if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT or not parts[2]:
            raise _TopicError(
                "bad_topic", f"topic {text!r} is not {TOPIC_ROOT}/<device_id>/<kind>", None
            )
        device_id, topic_kind = parts[2], parts[3]
        if topic_kind not in TOPIC_KINDS:
            raise _TopicError(
                "unknown_message_kind",
                f"{topic_kind!r} is not one of {', '.join(TOPIC_KINDS)}",
                device_id,
            )
        info = self._find(device_id)
        if info.kind not in KINDS:
            raise _TopicError(
                "unknown_device_kind", f"device kind {info.kind!r} is not installed", device_id
            )
        kind = load_kind(info.kind)
        codec = kind.codecs.get(info.codec)
        if codec is None:
            raise _TopicError(
                "unknown_codec", f"codec {info.codec!r} not available for {info.kind}", device_id
            )
        head, tail = self._prefix_parts(info)
        route = Route(
            info,
            topic_kind,
            kind,
            codec,
            head,
            tail,
            self._writers[info.kind],
            self._json_validators[info.kind] if codec is JSON_CODEC and not kind.derives else None,
        )
        self._routes[topic] = route
        return route

    def _prefix_parts(self, info: DeviceInfo) -> tuple[str, str]:
        """The series prefix around the device id, one shared pair per kind, model, place."""
        key = (info.kind, info.model, info.path)
        parts = self._prefixes.get(key)
        if parts is None:
            # A device id never needs escaping (the registry allows [A-Za-z0-9_.:-] only),
            # so a NUL stand-in marks where it goes.
            prefix = series_prefix(info.kind, device_tags(replace(info, device_id="\0")))
            head, _, tail = prefix.partition("\0")
            if len(self._prefixes) > 100_000:
                self._prefixes.clear()
            parts = self._prefixes[key] = (head, tail)
        return parts

    def _find(self, device_id: str) -> DeviceInfo:
        missed = self._misses.get(device_id)
        now = time.monotonic()
        if missed is None or now - missed > self.lookup_retry_s:
            info = self._lookup(device_id)
            if info is not None:
                self._misses.pop(device_id, None)
                return info
            if len(self._misses) > 100_000:
                self._misses.clear()
            self._misses[device_id] = now
        raise _TopicError("unknown_device", f"device {device_id!r} is not registered", device_id)

    # One loop body per message, inlined on purpose: each Python call it saves is ~0.1 us.
    def process(self, batch: Batch) -> BatchResult:  # noqa: PLR0912, PLR0915 - see above
        """Handle every message of the batch; never raises for bad input.

        Device times outside the window and the rate limit: see ``gateway.ingest.limits``.
        """
        result = BatchResult()
        recv = batch.received_ns
        if batch.refused:
            self._refused(batch, result)
        # Receive times: message i's is recv + i * step, unless it is a redelivery whose
        # first receive time was kept (then its points are the same points again).
        step = RECEIVE_STEP_NS
        fixed = batch.fixed_ts
        routes = self._routes
        last_seen = self.last_seen
        by_kind = result.messages_by_kind
        max_payload = self.max_payload_bytes
        limits = self.limits
        limits.begin(recv)
        ts_high, ts_low = limits.high, limits.low
        # The rate limit, inlined (it runs for every message): per device the time its
        # bucket is full again by the gateway's clock (past that: ``limits.backlog``).
        rate = limits.rate_per_s
        buckets, own_clock = limits.live, limits.own
        interval, allowance = limits.interval, limits.allowance
        lines_append = result.lines.append
        accepted_append = result.accepted.append
        for index, (topic, payload) in enumerate(zip(batch.topics, batch.payloads, strict=True)):
            route = routes.get(topic)
            try:
                if route is None:
                    route = self._route(topic)
                if len(payload) > max_payload:
                    raise DecodeError("oversized", f"{len(payload)} bytes, at most {max_payload}")
                device_id = route.info.device_id
                over = False
                if rate:
                    full_at = buckets.get(device_id, 0.0)
                    if full_at < recv:  # noqa: PLR1730 - an if costs less than max() here
                        full_at = recv
                    if full_at - recv > allowance:
                        over = True  # only a backlog on the device's own clock may pass
                    else:
                        buckets[device_id] = full_at + interval
                reading = None
                if route.json_model is not None and route.topic_kind != "status":
                    # Fast path (most messages): one JSON object validated from the bytes in
                    # one step, inlined here. Anything it refuses (syntax, a batch array, a
                    # bad field) takes ``_readings``, which names the reason precisely.
                    try:  # noqa: SIM105 - contextlib.suppress costs ~0.15 us a message
                        reading = route.json_model(payload)
                    except ValidationError:
                        pass
                if reading is not None:
                    # A key given twice adds a comma but no field (see devices.jsonkeys).
                    if payload.count(b",") + 1 != len(reading.__pydantic_fields_set__):
                        reject_duplicate_keys(payload)
                    if reading.device_id is not None and reading.device_id != device_id:
                        raise _mismatch(reading.device_id, device_id)
                    ts = reading.ts
                    if ts is None:
                        if over:
                            raise limits.rate_limited()
                        if fixed is None:
                            ts = recv + index * step
                        else:
                            ts = fixed.get(index, recv + index * step)
                    else:
                        if ts > ts_high or ts < ts_low:
                            raise limits.bad_ts(ts, recv)
                        if over:
                            limits.backlog(device_id, route.info.kind, ts)
                        elif own_clock and device_id in own_clock:
                            limits.charge(device_id, ts)  # it went over before: count this too
                    fields = route.writer.fields(reading)
                    if not fields:
                        raise DecodeError("empty_reading", "no readings in the message")
                    lines_append(f"{route.head}{device_id}{route.tail} {fields} {ts}")
                    accepted_append(Accepted(route.info, route.topic_kind, reading, ts))
                elif route.topic_kind == "status":
                    if over:
                        raise limits.rate_limited()
                    self._status(route, payload, _receive_ts(recv, index, fixed), result)
                else:
                    default_ts = _receive_ts(recv, index, fixed)
                    self._readings(route, payload, default_ts, result, recv, over)
            except _TopicError as err:
                self._reject(result, recv, topic, err.device_id, err.reason, err.detail, payload)
                continue
            except DecodeError as err:
                assert route is not None
                self._reject(
                    result, recv, topic, route.info.device_id, err.reason, err.detail, payload
                )
                continue
            last_seen[device_id] = recv
            by_kind[route.info.kind] += 1
        return result

    def _refused(self, batch: Batch, result: BatchResult) -> None:
        """Dead letters for the messages the source refused itself (oversized, retained)."""
        for item in batch.refused:
            route = self._routes.get(item.topic)
            if route is not None:
                device_id: str | None = route.info.device_id
            else:
                parts = item.topic.decode("utf-8", "replace").split("/")
                device_id = parts[2] if len(parts) == 4 and parts[2] else None
            self._reject(
                result, batch.received_ns, item.topic, device_id, item.reason, item.detail,
                item.payload,
            )  # fmt: skip

    def _readings(
        self,
        route: Route,
        payload: bytes,
        default_ts: int,
        result: BatchResult,
        recv: int,
        over: bool,
    ) -> None:
        """The regular path: decode (one reading or a batch), derive, validate, format.

        ``over``: the device is over its rate by the gateway's clock, so the message passes
        only if every reading carries a ts and they fit the rate by the device's own clock.
        """
        raws = route.codec.decode(payload)
        device_id = route.info.device_id
        params = route.info.params
        limits = self.limits
        ts_high, ts_low = limits.high, limits.low
        lines = []
        accepted = []
        newest = -1  # the message's device time (its newest ts), -1 when it has none
        all_own = True  # every reading carries the device's ts
        for position, raw in enumerate(raws):
            try:
                reading = route.kind.validate(raw, params)
            except DecodeError as err:
                if len(raws) > 1:
                    raise DecodeError(err.reason, f"batch item {position}: {err.detail}") from err
                raise
            if reading.device_id is not None and reading.device_id != device_id:
                raise _mismatch(reading.device_id, device_id)
            if reading.ts is None:
                all_own = False
                ts = default_ts + position
            else:
                ts = reading.ts
                if ts > ts_high or ts < ts_low:
                    where = f"batch item {position}: " if len(raws) > 1 else ""
                    raise limits.bad_ts(ts, recv, where)
                if ts > newest:  # noqa: PLR1730 - an if costs less than max() here
                    newest = ts
            fields = route.writer.fields(reading)
            if not fields:
                raise DecodeError("empty_reading", "no readings in the message")
            lines.append(f"{route.head}{device_id}{route.tail} {fields} {ts}")
            accepted.append(Accepted(route.info, route.topic_kind, reading, ts))
        if over:
            if not all_own:
                raise limits.rate_limited()
            limits.backlog(device_id, route.info.kind, newest)
        elif newest >= 0 and device_id in limits.own:
            limits.charge(device_id, newest)
        # Only a fully valid message contributes: a bad batch item rejects the whole payload.
        result.lines.extend(lines)
        result.accepted.extend(accepted)

    def _status(self, route: Route, payload: bytes, ts: int, result: BatchResult) -> None:
        state = parse_status(payload)
        online = "true" if state == "online" else "false"
        result.lines.append(
            f"{route.events_prefix} event={escape_string_field(state)},online={online} {ts}"
        )
        result.accepted.append(Accepted(route.info, "status", None, ts, state))

    def _reject(
        self,
        result: BatchResult,
        recv: int,
        topic: bytes,
        device_id: str | None,
        reason: str,
        detail: str,
        payload: bytes,
    ) -> None:
        item = Rejected(recv, topic.decode("utf-8", "replace"), device_id, reason, detail, payload)
        result.rejected.append(item)
        self._log(item)


def _receive_ts(recv: int, index: int, fixed: dict[int, int] | None) -> int:
    """Receive time of message ``index`` of a batch (see Pipeline.process)."""
    default = recv + index * RECEIVE_STEP_NS
    return default if fixed is None else fixed.get(index, default)


def parse_status(payload: bytes) -> str:
    """``online``/``offline`` as plain text or ``{"state": ...}``; DecodeError otherwise."""
    text = payload.strip()
    if text in (b"online", b"offline"):
        return text.decode()
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise DecodeError("malformed_json", f"status payload: {err}") from err
    if isinstance(doc, dict) and text.count(b",") != max(len(doc) - 1, 0):
        reject_duplicate_keys(text)  # {"state":"online","state":"offline"} means nothing
    state = doc.get("state") if isinstance(doc, dict) else None
    if state not in ("online", "offline"):
        raise DecodeError(
            "wrong_type", 'status must be "online"/"offline" or {"state": "online"|"offline"}'
        )
    return str(state)


def registry_lookup(
    infos: Mapping[str, DeviceInfo], fallback: Callable[[str], DeviceInfo | None]
) -> Callable[[str], DeviceInfo | None]:
    """Look a device up in a preloaded snapshot first, then in the database."""

    def lookup(device_id: str) -> DeviceInfo | None:
        return infos.get(device_id) or fallback(device_id)

    return lookup
