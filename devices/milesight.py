"""Milesight channel/type uplink frames: the record walker shared by every Milesight model.

A Milesight uplink is a sequence of records ``channel (1 byte), type (1 byte), value``;
integers are little-endian and each (channel, type) pair has a fixed value size. A model
codec is one table of ``Record`` entries; the walker and the encoder here are generic.

Decoding policy (the same for every model):

- an empty payload, or a record cut short, is ``truncated``: the frame is damaged, so
  nothing in it is trusted;
- device-information records (versions, serial number, class, status, reset) are skipped;
- an unknown (channel, type) pair stops the walk, because its size is unknown. If at least
  one measurement was decoded before it, those measurements are returned (newer firmware
  appends records we do not know yet); otherwise the frame is rejected as
  ``unknown_record``;
- a frame with device-information records only carries nothing to store and is rejected as
  ``no_measurement`` (devices send such a frame after joining the network).

``MilesightSimulator`` is the simulator base shared by kinds whose devices speak either JSON
or a Milesight frame (bin, manhole).
"""

from __future__ import annotations

import logging
import struct
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from devices.base import DecodeError, DeviceSimulator, SimMessage, TopicKind

logger = logging.getLogger(__name__)

Reader = Callable[[bytes], dict[str, Any]]
Writer = Callable[[Mapping[str, Any]], bytes | None]


@dataclass(frozen=True, slots=True)
class Record:
    """One (channel, type) record of a model: its value size and how to read and write it.

    ``read`` is None for records that are known but unused (skipped on decode). ``read`` may
    raise ValueError for a value the device must never send; the walker reports it as
    ``out_of_range`` with the record's offset. ``write`` returns the value bytes, or None
    when the reading has nothing for this record.
    """

    channel: int
    type: int
    size: int
    name: str
    read: Reader | None = None
    write: Writer | None = None

    @property
    def label(self) -> str:
        """The record's two header bytes as hex, e.g. ``03 82``."""
        return f"{self.channel:02x} {self.type:02x}"


#: Device-information records every Milesight device may send; values are not stored.
DEVICE_INFO_RECORDS: tuple[Record, ...] = (
    Record(0xFF, 0x01, 1, "protocol version"),
    Record(0xFF, 0x09, 2, "hardware version"),
    Record(0xFF, 0x0A, 2, "firmware version"),
    Record(0xFF, 0x0B, 1, "device status (power on)"),
    Record(0xFF, 0x0F, 1, "LoRaWAN class"),
    Record(0xFF, 0x16, 8, "serial number"),
    Record(0xFF, 0xFE, 1, "reset event"),
    Record(0xFF, 0xFF, 2, "TSL version"),
)


class MilesightCodec:
    """A codec for one Milesight model, driven by its record table."""

    def __init__(self, name: str, records: Iterable[Record]) -> None:
        self.name = name
        self._records = (*records, *DEVICE_INFO_RECORDS)
        self._table = {(r.channel, r.type): r for r in self._records}
        if len(self._table) != len(self._records):
            raise ValueError(f"{name}: two records share a channel/type pair")

    def decode(self, payload: bytes) -> list[dict[str, Any]]:
        """Walk the records of one frame into one raw reading (see the module policy)."""
        if not payload:
            raise DecodeError("truncated", f"{self.name}: empty payload, expected records")
        reading: dict[str, Any] = {}
        measured = False
        offset = 0
        while offset < len(payload):
            record = self._record_at(payload, offset, measured)
            if record is None:
                break
            start = offset + 2
            value = payload[start : start + record.size]
            if len(value) < record.size:
                raise DecodeError(
                    "truncated",
                    f"record {record.label} at offset {offset} needs {record.size} bytes, "
                    f"{len(value)} left",
                )
            if record.read is not None:
                reading.update(_read(record.read, record.label, value, offset))
                measured = True
            offset = start + record.size
        if not measured:
            raise DecodeError(
                "no_measurement", f"{self.name}: frame holds device-information records only"
            )
        return [reading]

    def _record_at(self, payload: bytes, offset: int, measured: bool) -> Record | None:
        """The record whose header starts at ``offset``; None to stop after measurements."""
        if len(payload) - offset < 2:
            raise DecodeError(
                "truncated", f"record header at offset {offset} needs 2 bytes, 1 left"
            )
        channel, rtype = payload[offset], payload[offset + 1]
        record = self._table.get((channel, rtype))
        if record is not None:
            return record
        where = f"{self.name}: offset {offset}: channel 0x{channel:02x} type 0x{rtype:02x}"
        if not measured:
            raise DecodeError("unknown_record", where)
        logger.debug("%s; returning the measurements before it", where)
        return None

    def encode(self, reading: Mapping[str, Any]) -> bytes:
        """Build a frame from the measurement fields present; fields it cannot carry are left out.

        Raises ValueError when a value does not fit its record or nothing can be encoded.
        """
        frame = bytearray()
        for record in self._records:
            value = record.write(reading) if record.write is not None else None
            if value is not None:
                frame += bytes((record.channel, record.type)) + value
        if not frame:
            raise ValueError(f"{self.name}: the reading has no field this model can send")
        return bytes(frame)


def _read(read: Reader, label: str, value: bytes, offset: int) -> dict[str, Any]:
    try:
        return read(value)
    except ValueError as err:
        raise DecodeError("out_of_range", f"record {label} at offset {offset}: {err}") from err


# --- value helpers shared by the model tables -------------------------------------------


def read_u8(value: bytes) -> int:
    """An unsigned byte."""
    return value[0]


def read_u16(value: bytes) -> int:
    """An unsigned little-endian 16-bit integer."""
    result: int = struct.unpack_from("<H", value)[0]
    return result


def read_i16(value: bytes, offset: int = 0) -> int:
    """A signed little-endian 16-bit integer at ``offset``."""
    result: int = struct.unpack_from("<h", value, offset)[0]
    return result


def pack_int(value: object, name: str, fmt: str, scale: float = 1) -> bytes:
    """Pack ``value × scale`` rounded to an integer; ValueError when it does not fit ``fmt``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return struct.pack(fmt, round(value * scale))
    except (struct.error, OverflowError, ValueError) as err:
        raise ValueError(f"{name} {value!r} does not fit the frame ({fmt})") from err


def _write_battery(reading: Mapping[str, Any]) -> bytes | None:
    value = reading.get("battery")
    return None if value is None else pack_int(value, "battery", "<B")


#: ``01 75`` battery level, u8 %, common to the EM300/EM310 families.
BATTERY_RECORD = Record(
    0x01, 0x75, 1, "battery", read=lambda v: {"battery": read_u8(v)}, write=_write_battery
)


# --- simulated Milesight-class devices ---------------------------------------------------


class MilesightSimulator(DeviceSimulator):
    """Common behaviour of a simulated device that speaks JSON or a Milesight frame.

    It owns the report schedule (first report at a random phase within the first heartbeat,
    then every ``interval()`` seconds, which a subclass may shorten during incidents) and the
    wire format: with the JSON codec a message carries ``ts`` (epoch ms) and ``seq`` and goes
    to the topic asked for; with a binary codec the frame carries what the model can send and
    always goes to ``telemetry``, as a LoRaWAN device has a single uplink.

    Subclasses implement ``advance`` (physics over elapsed time), ``interval``, ``reading``
    (what the device measures now) and ``begin`` (set up an incident).
    """

    def setup(self) -> None:
        """Per-device state, from the install parameters and the seeded rng."""
        #: The time (epoch s) the device was last advanced to.
        self.now = 0.0
        self._started = False
        self._first_due = 0.0
        self._last_report: float | None = None

    @property
    def binary(self) -> bool:
        """True when the device sends Milesight frames instead of JSON."""
        return self.codec.name != "json"

    @abstractmethod
    def advance(self, now: float, dt: float) -> list[SimMessage]:
        """Move the physics on by ``dt`` seconds to ``now``; return spontaneous events."""

    @abstractmethod
    def interval(self) -> float:
        """Seconds between periodic reports in the state reached at ``self.now``."""

    @abstractmethod
    def reading(self) -> dict[str, Any]:
        """The raw reading the device would report now (model field names)."""

    @abstractmethod
    def begin(self, name: str, now: float) -> None:
        """Change the state for incident ``name`` (already checked against ``incidents``)."""

    def step(self, now: float) -> list[SimMessage]:
        """Advance to ``now`` and add a periodic report when one is due."""
        messages = self._advance_to(now)
        due = self._first_due if self._last_report is None else self._last_report + self.interval()
        if now >= due:
            messages.append(self.message("telemetry", self.reading(), now))
        return messages

    def start_incident(self, name: str, now: float) -> list[SimMessage]:
        """Begin incident ``name``; the device reports it at once as an event."""
        if name not in self.incidents:
            raise ValueError(f"unknown incident {name!r}; known: {', '.join(self.incidents)}")
        messages = self._advance_to(now)
        self.begin(name, now)
        messages.append(self.message("event", {**self.reading(), "event": name}, now))
        return messages

    def message(self, topic_kind: TopicKind, reading: Mapping[str, Any], now: float) -> SimMessage:
        """Encode one reading in the device's wire format; it counts as a report."""
        self._last_report = now
        if self.binary:
            return SimMessage("telemetry", self.codec.encode(reading))
        stamped = {"ts": int(now * 1000), "seq": self.next_seq(), **reading}
        return SimMessage(topic_kind, self.codec.encode(stamped))

    def bad_payload(self) -> SimMessage:
        """JSON devices: the base's bad JSON. Frame devices: a cut frame or an unknown record."""
        if not self.binary:
            return super().bad_payload()
        frame = self.codec.encode(self.reading())
        if self.rng.randrange(2) == 0:
            return SimMessage("telemetry", frame[:-1])
        return SimMessage("telemetry", bytes((0x0A, 0x99, 0x00)) + frame)

    def _advance_to(self, now: float) -> list[SimMessage]:
        if not self._started:
            self._started = True
            self.now = now
            self._first_due = now + self.rng.uniform(0, self.heartbeat_s)
            return []
        dt = max(0.0, now - self.now)
        self.now = max(self.now, now)
        return self.advance(self.now, dt)
