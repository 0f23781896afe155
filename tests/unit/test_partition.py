"""Rule partitions: the partition function, ownership and the forward encoding."""

from __future__ import annotations

import zlib

import orjson
import pytest

from devices.base import Reading
from devices.throw_camera.model import ThrowCameraReading
from gateway.ingest.pipeline import Accepted
from gateway.registry.store import DeviceInfo
from gateway.runtime.partition import (
    Forwarded,
    ForwardError,
    decode_forward,
    encode_forwards,
    owned_partitions,
    partition_of,
    partition_topic,
)

CAM = DeviceInfo("cam-1", "throw_camera", "HK", "json", {}, (("street", "ST1"),))
SMOKE = DeviceInfo("smoke-1", "smoke", "JTY", "json", {})


@pytest.mark.parametrize("device_id", ["cam-1", "smoke-1", "", "设备-7", "b" * 128])
@pytest.mark.parametrize("partitions", [1, 2, 16, 1000])
def test_partition_is_crc32_mod_p(device_id: str, partitions: int) -> None:
    expected = zlib.crc32(device_id.encode()) % partitions
    assert partition_of(device_id, partitions) == expected
    assert 0 <= partition_of(device_id, partitions) < partitions


def test_partition_values_are_pinned() -> None:
    # Every worker of every version must agree: these numbers may never change.
    assert [partition_of(d, 16) for d in ("cam-1", "smoke-1", "")] == [0, 12, 0]


@pytest.mark.parametrize(("partitions", "workers"), [(16, 1), (16, 2), (16, 3), (5, 5), (7, 2)])
def test_every_partition_has_exactly_one_owner(partitions: int, workers: int) -> None:
    owned = [owned_partitions(partitions, workers, k) for k in range(workers)]
    flat = [p for parts in owned for p in parts]
    assert sorted(flat) == list(range(partitions))
    assert all(parts for parts in owned)


@pytest.mark.parametrize(("partitions", "workers", "index"), [(2, 3, 0), (16, 2, 2), (16, 2, -1)])
def test_impossible_ownership_is_refused(partitions: int, workers: int, index: int) -> None:
    with pytest.raises(ValueError, match="worker"):
        owned_partitions(partitions, workers, index)


def test_partition_topic() -> None:
    assert partition_topic("scc-gw", 7) == "scc/internal/v1/scc-gw/rules/7"


def _camera(ts: int, event: str, confidence: float) -> Accepted:
    doc = {"event": event, "confidence": confidence, "floor_estimate": 12}
    reading = ThrowCameraReading.model_validate(doc)
    return Accepted(CAM, "event", reading, ts)


def test_forward_round_trip_groups_by_partition_in_order() -> None:
    items = [
        _camera(3, "throw", 0.9),
        Accepted(SMOKE, "status", None, 4, "offline"),
        _camera(5, "heartbeat", 0.5),
        Accepted(SMOKE, "telemetry", Reading(battery=50.0, seq=1), 6),
    ]
    encoded = encode_forwards(items, 16)
    assert sorted(encoded) == [0, 12]
    cams = decode_forward(encoded[0])
    assert [(f.device_id, f.topic_kind, f.ts_ns) for f in cams] == [
        ("cam-1", "event", 3),
        ("cam-1", "event", 5),
    ]
    assert cams[0].values == {"event": "throw", "confidence": 0.9, "floor_estimate": 12}
    assert decode_forward(encoded[12]) == [
        Forwarded("smoke-1", "status", 4, "offline", None),
        Forwarded("smoke-1", "telemetry", 6, None, {"battery": 50.0, "seq": 1}),
    ]


def test_forward_keeps_scalars_only() -> None:
    reading = ThrowCameraReading.model_validate(
        {"event": "heartbeat", "trajectory": [[0, 1, 2], [40, 1, 3]]}
    )
    (payload,) = encode_forwards([Accepted(CAM, "event", reading, 9)], 16).values()
    (row,) = decode_forward(payload)
    assert reading.trajectory is not None
    assert row.values == {"event": "heartbeat"}


def test_forward_is_compact_json() -> None:
    (payload,) = encode_forwards([Accepted(SMOKE, "status", None, 4, "online")], 1).values()
    assert payload == b'[["smoke-1","status",4,"online",null]]'


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"a": 1}',
        b"[[1]]",
        b'[["d","k",1,null]]',
        b'[[1,"k",1,null,null]]',
        b'[["d","k","1",null,null]]',
        b'[["d","k",true,null,null]]',
        b'[["d","k",1,5,null]]',
        b'[["d","k",1,null,[1]]]',
    ],
)
def test_bad_forwards_are_refused(payload: bytes) -> None:
    with pytest.raises(ForwardError):
        decode_forward(payload)


def test_empty_batch_forwards_nothing() -> None:
    assert encode_forwards([], 16) == {}
    assert decode_forward(orjson.dumps([])) == []
