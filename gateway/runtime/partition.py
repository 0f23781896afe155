"""Rule partitions: device affinity for the stateful stage, through the broker.

With several gateway processes on one shared subscription, Mosquitto hands each device
message to any of them (round robin). Rules keep per-device state, so they must see all of
a device's readings in one place. Each worker therefore evaluates no rules on what it
receives: it groups a batch's valid readings by partition ``crc32(device_id) % P`` and
publishes one message per partition on ``scc/internal/v1/<group>/rules/<p>`` (``group`` is
the shared-subscription group, so two gateway clusters on one broker never mix). Worker
``K`` of ``N`` owns the partitions ``p % N == K`` and subscribes to exactly those topics, so
every reading of a device reaches the same rules engine, whichever process decoded it.

A forward message is a compact JSON list of ``[device_id, topic_kind, ts_ns, status,
values]`` rows; ``values`` is null for status messages (activity only) and otherwise holds
the reading's scalar fields (rule conditions compare scalars; nested values such as a
camera's trajectory are not forwarded).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.ingest.pipeline import Accepted

INTERNAL_ROOT = "scc/internal/v1"
_SCALARS = (str, int, float, bool)


class ForwardError(ValueError):
    """A forward message that is not a list of well-formed rows."""


def partition_of(device_id: str, partitions: int) -> int:
    """The rule partition of a device (stable across processes, hosts and restarts)."""
    return zlib.crc32(device_id.encode("utf-8")) % partitions


def owned_partitions(partitions: int, workers: int, index: int) -> tuple[int, ...]:
    """The partitions worker ``index`` of ``workers`` evaluates rules for."""
    if not 0 <= index < workers <= partitions:
        raise ValueError(f"worker {index} of {workers} with {partitions} partitions")
    return tuple(p for p in range(partitions) if p % workers == index)


def partition_topic(group: str, partition: int) -> str:
    """The internal topic carrying the readings of one partition of a worker group."""
    return f"{INTERNAL_ROOT}/{group}/rules/{partition}"


@dataclass(frozen=True, slots=True)
class Forwarded:
    """One reading as the rules stage receives it from another (or the same) worker."""

    device_id: str
    topic_kind: str
    ts_ns: int
    status: str | None
    values: Mapping[str, object] | None  # None: status message, activity only


def _row(item: Accepted) -> list[Any]:
    values = None
    if item.reading is not None:
        values = {
            key: value
            for key, value in item.reading.__dict__.items()
            if value is not None and isinstance(value, _SCALARS)
        }
    return [item.info.device_id, item.topic_kind, item.ts_ns, item.status, values]


def encode_forwards(accepted: Iterable[Accepted], partitions: int) -> dict[int, bytes]:
    """One payload per partition that has readings in the batch (batch order kept)."""
    rows: dict[int, list[list[Any]]] = {}
    for item in accepted:
        part = partition_of(item.info.device_id, partitions)
        bucket = rows.get(part)
        if bucket is None:
            rows[part] = [_row(item)]
        else:
            bucket.append(_row(item))
    return {part: orjson.dumps(items) for part, items in rows.items()}


def decode_forward(payload: bytes) -> list[Forwarded]:
    """Parse a forward message; ForwardError when it is not what ``encode_forwards`` wrote."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise ForwardError(f"forward is not JSON: {err}") from err
    if not isinstance(doc, list):
        raise ForwardError("forward is not a list of rows")
    return [_forwarded(row) for row in doc]


def _forwarded(row: object) -> Forwarded:
    if not isinstance(row, list) or len(row) != 5:
        raise ForwardError(f"forward row is not a list of 5: {row!r:.100}")
    device_id, topic_kind, ts_ns, status, values = row
    if not (isinstance(device_id, str) and isinstance(topic_kind, str)):
        raise ForwardError(f"forward row without device id and kind: {row!r:.100}")
    if not isinstance(ts_ns, int) or isinstance(ts_ns, bool):
        raise ForwardError(f"forward row time is not an integer: {row!r:.100}")
    if status is not None and not isinstance(status, str):
        raise ForwardError(f"forward row status is not a string: {row!r:.100}")
    if values is not None and not isinstance(values, dict):
        raise ForwardError(f"forward row values are not a mapping: {row!r:.100}")
    return Forwarded(device_id, topic_kind, ts_ns, status, values)
