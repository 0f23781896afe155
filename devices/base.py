"""Building blocks every device kind is made of.

A device kind is pure description: a pydantic payload model, a table of field specs (units,
physical ranges, InfluxDB types), codecs that turn wire bytes into raw readings, and a
simulator profile. Nothing here does I/O or knows about the gateway.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from devices.jsonkeys import first_duplicate_key, flat_commas

FieldType = Literal["float", "int", "bool", "str"]
TopicKind = Literal["telemetry", "event", "status"]
TOPIC_KINDS: tuple[TopicKind, ...] = ("telemetry", "event", "status")

#: Largest JSON array a device may send as one batch.
MAX_BATCH_ITEMS = 1000


class DecodeError(ValueError):
    """A payload was rejected; ``reason`` is a short stable code used for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One reading a device kind reports: how it is typed, measured and bounded."""

    key: str
    type: FieldType
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    choices: tuple[str, ...] = ()


def bounded(specs: Iterable[FieldSpec], key: str, **more: Any) -> Any:
    """The pydantic ``Field`` (default None) of ``key`` with the range of its spec as ``ge``
    and ``le``: a field's range is written once, in the kind's field table, and its model
    takes it from there. ``more`` adds what is no range (``max_length``, ``description``).

    The constraints are pydantic's own, so the validators (and the JSON fast path) are the
    same as with the numbers written in the model.
    """
    spec = next((s for s in specs if s.key == key), None)
    if spec is None:
        raise KeyError(f"no field spec {key!r}")
    if spec.minimum is None and spec.maximum is None:
        raise ValueError(f"field spec {key!r} has no range to bound the model field with")
    return Field(default=None, ge=spec.minimum, le=spec.maximum, **more)


#: Fields every kind may carry (signal, battery, firmware, sequence number).
COMMON_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("battery", "float", "%", 0, 100, "battery level; absent for mains devices"),
    FieldSpec("rsrp", "float", "dBm", -140, -44, "NB-IoT reference signal received power"),
    FieldSpec("snr", "float", "dB", -20, 30, "NB-IoT signal-to-noise ratio"),
    FieldSpec("rssi", "float", "dBm", -140, 0, "received signal strength (LoRaWAN, Wi-Fi)"),
    FieldSpec("seq", "int", "", 0, 2**63 - 1, "device sequence number (int64)"),
    FieldSpec("fw", "str", "", None, None, "firmware version"),
)


#: Device timestamps must lie within these years (epoch ms); anything else is a unit mistake
#: (seconds, microseconds) or a clock that lost its time. The gateway narrows this to a
#: window around its own clock (``ts_max_skew_s``, ``ts_max_age_s``).
TS_MIN_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z


def _out_of_era(value: object, ms: float) -> PydanticCustomError:
    """The error for a ts outside 2000..2100: ``stale_ts`` before, ``future_ts`` after."""
    if ms < TS_MIN_MS:
        hint = " (epoch seconds instead of milliseconds?)" if ms >= TS_MIN_MS / 1000 else ""
        return PydanticCustomError(
            "stale_ts", "ts {value} is before 2000-01-01{hint}", {"value": value, "hint": hint}
        )
    big = ms >= TS_MIN_MS * 1000
    hint = " (epoch micro- or nanoseconds instead of milliseconds?)" if big else ""
    return PydanticCustomError(
        "future_ts", "ts {value} is after 2100-01-01{hint}", {"value": value, "hint": hint}
    )


def parse_device_ts(value: object) -> int | None:
    """Turn a device timestamp (epoch ms number or ISO 8601 string) into epoch nanoseconds.

    Raises ``ValueError`` for what is no timestamp at all (a boolean, text that is not ISO
    8601 with an offset), and ``PydanticCustomError`` ``stale_ts`` / ``future_ts`` for a
    timestamp before 2000 or from 2100 on.
    """
    if value is None:
        return None
    # The common case, kept cheap (it runs for every reading): literals, not the constants'
    # global lookups.
    if type(value) is int and 946_684_800_000 <= value < 4_102_444_800_000:
        return value * 1_000_000
    if isinstance(value, bool):
        raise ValueError("ts must be epoch milliseconds or an ISO 8601 string, not a boolean")
    if isinstance(value, int | float):
        if not TS_MIN_MS <= value < TS_MAX_MS:  # also false for NaN
            if value != value:  # noqa: PLR0124 - NaN is the one value unequal to itself
                raise ValueError("ts must be a number of epoch milliseconds, not NaN")
            raise _out_of_era(value, value)
        return round(value * 1000) * 1000  # microsecond resolution, no float noise
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as err:
            raise ValueError(f"ts {value!r} is not ISO 8601") from err
        if parsed.tzinfo is None:
            raise ValueError(f"ts {value!r} has no time zone offset")
        stamp_s = parsed.timestamp()
        if not TS_MIN_MS <= stamp_s * 1000 < TS_MAX_MS:
            raise _out_of_era(repr(value), stamp_s * 1000)
        return int(stamp_s * 1_000_000) * 1000
    raise ValueError("ts must be epoch milliseconds or an ISO 8601 string")


class Reading(BaseModel):
    """Base payload model: what every device kind's message may carry.

    ``ts`` is normalised to epoch nanoseconds. Unknown keys are refused so an integrator
    learns at once that a payload does not match the model.

    Strict for every field of every kind (``strict=True`` is inherited): a number field
    takes a JSON number only, never ``true``/``false`` (lax pydantic reads ``true`` as 1)
    nor a string ("12.5", and lax ones such as "1_000" or "nan"); an integer field takes a
    JSON integer only (not 12.0 or 12.5); a boolean field ``true``/``false`` only (not 0/1
    or "true"); a text field a JSON string only. A payload whose meaning would have to be
    guessed is refused (``wrong_type``), so it becomes a dead letter.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    ts: int | None = None
    seq: int | None = bounded(COMMON_FIELDS, "seq")  # InfluxDB integers are int64
    device_id: str | None = Field(default=None, max_length=128)
    fw: str | None = Field(default=None, max_length=64)
    battery: float | None = bounded(COMMON_FIELDS, "battery")
    rsrp: float | None = bounded(COMMON_FIELDS, "rsrp")
    snr: float | None = bounded(COMMON_FIELDS, "snr")
    rssi: float | None = bounded(COMMON_FIELDS, "rssi")

    @field_validator("ts", mode="before")
    @classmethod
    def _normalise_ts(cls, value: object) -> int | None:
        return parse_device_ts(value)


class Codec(Protocol):
    """Turns wire bytes into raw readings (dicts validated by the kind's model) and back."""

    name: str

    def decode(self, payload: bytes) -> list[dict[str, Any]]:
        """Decode one payload into one or more raw readings; raise DecodeError."""
        ...

    def encode(self, reading: Mapping[str, Any]) -> bytes:
        """Encode one raw reading (used by simulators)."""
        ...


def reject_duplicate_keys(payload: bytes) -> None:
    """``DecodeError("duplicate_key")`` naming the key (and the batch item) when a JSON object
    in ``payload``, at any depth, has a key twice (see ``devices.jsonkeys``)."""
    try:
        found = first_duplicate_key(payload)
    except ValueError as err:  # orjson accepted it, so this is unlikely; refuse, never guess
        raise DecodeError("malformed_json", f"cannot check for duplicate keys: {err}") from err
    if found is not None:
        key, item = found
        where = "" if item is None else f"batch item {item}: "
        detail = f"{where}key {key!r} appears more than once; which one is meant?"
        raise DecodeError("duplicate_key", detail)


class JsonCodec:
    """JSON object, or a JSON array of objects for a batch.

    A key that appears twice in an object is refused (``duplicate_key``); the comma count
    (``devices.jsonkeys``) tells at C speed which payloads need the exact check.
    """

    name = "json"

    def decode(self, payload: bytes) -> list[dict[str, Any]]:
        """Parse the payload; errors name what is wrong (UTF-8, syntax, shape, a key twice)."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as err:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as uerr:
                raise DecodeError("not_utf8", f"byte {uerr.start} is not UTF-8") from err
            raise DecodeError("malformed_json", str(err)) from err
        if isinstance(doc, dict):
            if payload.count(b",") + 1 != (len(doc) or 1):  # flat_commas(doc), inlined
                reject_duplicate_keys(payload)
            return [doc]
        if isinstance(doc, list):
            if not doc:
                raise DecodeError("not_object", "empty JSON array")
            if len(doc) > MAX_BATCH_ITEMS:
                raise DecodeError(
                    "batch_too_large", f"{len(doc)} items, at most {MAX_BATCH_ITEMS} allowed"
                )
            for index, item in enumerate(doc):
                if not isinstance(item, dict):
                    raise DecodeError(
                        "not_object", f"batch item {index} is {type(item).__name__}, not object"
                    )
            if payload.count(b",") != flat_commas(doc):
                reject_duplicate_keys(payload)
            return doc
        raise DecodeError("not_object", f"payload is a JSON {type(doc).__name__}, not an object")

    def encode(self, reading: Mapping[str, Any]) -> bytes:
        """Serialise one reading as a JSON object."""
        return orjson.dumps(dict(reading))


JSON_CODEC = JsonCodec()

_RANGE_ERRORS = {
    "greater_than_equal",
    "less_than_equal",
    "greater_than",
    "less_than",
    "too_long",
    "too_short",
    "string_too_long",
    "string_too_short",
}


_TS_ERRORS = {"stale_ts", "future_ts"}
#: Why a strict field refused what lax parsing would have guessed at.
_STRICT_ERRORS = {
    "float_type": "a number must be a JSON number, not a string or true/false",
    "int_type": "an integer must be a JSON integer, not a string, true/false or 12.0",
    "bool_type": "a flag must be JSON true or false, not 0/1 or a string",
}


def explain_validation(kind: str, err: ValidationError) -> DecodeError:
    """Translate a pydantic error into our reason codes with a readable first problem."""
    first = err.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    etype = first["type"]
    if etype in _RANGE_ERRORS:
        reason = "out_of_range"
    elif etype == "extra_forbidden":
        reason = "unknown_field"
    elif etype == "missing":
        reason = "missing_field"
    elif etype in {"value_error", "assertion_error"}:
        reason = "invalid_value"
    elif etype in _TS_ERRORS:
        reason = etype
    else:
        reason = "wrong_type"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    value = first.get("input")
    shown = "" if reason in {"missing_field", *_TS_ERRORS} else f" (got {value!r:.60})"
    if etype in _STRICT_ERRORS and isinstance(value, str | bool):
        shown += f"; {_STRICT_ERRORS[etype]}"
    return DecodeError(reason, f"{kind}.{where}: {first['msg']}{shown}{more}")


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message a simulated device publishes on ``scc/v1/<id>/<topic_kind>``."""

    topic_kind: TopicKind
    payload: bytes


class DeviceSimulator(ABC):
    """Behaviour of one simulated device.

    Pure and deterministic: time is passed in, randomness comes from the injected ``rng``.
    The fleet runner owns the clock and the MQTT connection.
    """

    #: Names accepted by ``start_incident`` (e.g. "fire", "overflow").
    incidents: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        device_id: str,
        codec: Codec,
        params: Mapping[str, str],
        rng: random.Random,
        heartbeat_s: float,
    ) -> None:
        self.device_id = device_id
        self.codec = codec
        self.params = params
        self.rng = rng
        self.heartbeat_s = heartbeat_s
        self.seq = 0
        self.setup()

    def setup(self) -> None:  # noqa: B027 - an optional hook: kinds without state skip it
        """Set up per-kind state; ``device_id``, ``codec``, ``params``, ``rng`` and
        ``heartbeat_s`` are already attributes. Subclasses override this, not ``__init__``."""

    def next_seq(self) -> int:
        """Sequence numbers increase by one per reading, as real devices do."""
        self.seq += 1
        return self.seq

    @abstractmethod
    def step(self, now: float) -> list[SimMessage]:
        """Advance the device to ``now`` (epoch seconds); return the messages due."""

    @abstractmethod
    def start_incident(self, name: str, now: float) -> list[SimMessage]:
        """Begin a scripted incident; return messages to send at once."""

    def bad_payload(self) -> SimMessage:
        """A malformed message of a kind that real devices do send."""
        choice = self.rng.randrange(4)
        if choice == 0:
            return SimMessage("telemetry", b'{"battery": 50, "ts": ')
        if choice == 1:
            return SimMessage("telemetry", b'{"battery": "full"}')
        if choice == 2:
            return SimMessage("telemetry", b'{"battery": 250}')
        return SimMessage("telemetry", b"\xff\xfe\x00garbage")


Derive = Callable[[dict[str, Any], Mapping[str, str]], dict[str, Any]]


def _no_derive(raw: dict[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    return raw


@dataclass(frozen=True)
class DeviceKind:
    """Everything the rest of the system knows about one kind of device."""

    name: str
    title_zh: str
    title_en: str
    model: type[Reading]
    fields: tuple[FieldSpec, ...]
    heartbeat_s: int
    simulator: type[DeviceSimulator]
    folder: Path
    codecs: Mapping[str, Codec] = field(default_factory=lambda: {"json": JSON_CODEC})
    #: Fills derived readings from install parameters (bin fill % from its depth).
    derive: Derive = _no_derive

    @property
    def derives(self) -> bool:
        """Whether readings get derived values from install parameters before validation."""
        return self.derive is not _no_derive

    def validate(self, raw: dict[str, Any], params: Mapping[str, str]) -> Reading:
        """Validate one raw reading; raise DecodeError with a reason code."""
        derived = raw
        if self.derive is not _no_derive:
            try:
                derived = self.derive(raw, params)
            except Exception as err:  # a kind's bug must not stop the ingest loop
                detail = f"{self.name}: cannot derive readings: {err}"
                raise DecodeError("invalid_value", detail) from err
        try:
            # The core validator called directly: ``model_validate`` adds ~0.3 us a call.
            return cast(Reading, self.model.__pydantic_validator__.validate_python(derived))
        except ValidationError as err:
            raise explain_validation(self.name, err) from err

    def field(self, key: str) -> FieldSpec:
        """The spec of one field, KeyError if the kind has none of that name."""
        for spec in self.fields:
            if spec.key == key:
                return spec
        raise KeyError(f"{self.name} has no field {key!r}")
