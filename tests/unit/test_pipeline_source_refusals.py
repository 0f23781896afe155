"""The pipeline's side of what the MQTT source decided: refused messages become dead letters,
and a redelivered message without a device ``ts`` keeps its first receive time."""

from __future__ import annotations

from gateway.ingest.pipeline import Pipeline
from gateway.registry.store import DeviceInfo
from gateway.sources.batch import RECEIVE_STEP_NS, Batch, Refused

PATH = (("street", "ST1"), ("community", "SQ1"), ("grid", "G1"), ("compound", "C1"))
DEVICES = {
    "smoke-1": DeviceInfo("smoke-1", "smoke", "JTY", "json", {}, PATH),
    "bin-1": DeviceInfo("bin-1", "bin", "EM310-UDL", "em310-udl", {"depth_mm": "2500"}, PATH),
}
NOW = 1_700_000_000_000_000_000
FIRST = NOW - 3_600_000_000_000  # the first delivery, an hour before


def _stamps(lines: list[str]) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in lines]


def test_refused_messages_become_dead_letters_with_their_device() -> None:
    refused = [
        Refused(0, b"scc/v1/smoke-1/event", 3, "retained", "from the store", b'{"state":"alarm"}'),
        Refused(1, b"scc/v1/nobody/telemetry", 4, "oversized", "9 MB; sha256 ab", b"{...prefix"),
        Refused(1, b"elsewhere", 0, "oversized", "9 MB", b"x"),
    ]
    batch = Batch([b"scc/v1/smoke-1/telemetry"], [b'{"state":"normal"}'], [3, 1, 4], 1, NOW,
                  refused)  # fmt: skip
    result = Pipeline(DEVICES.get).process(batch)
    assert len(result.lines) == 1 and result.accepted[0].reading is not None
    got = [(r.reason, r.device_id, r.topic, r.payload, r.detail) for r in result.rejected]
    assert got == [
        ("retained", "smoke-1", "scc/v1/smoke-1/event", b'{"state":"alarm"}', "from the store"),
        ("oversized", "nobody", "scc/v1/nobody/telemetry", b"{...prefix", "9 MB; sha256 ab"),
        ("oversized", None, "elsewhere", b"x", "9 MB"),
    ]
    assert not any(a.info.device_id == "smoke-1" and a.topic_kind == "event"
                   for a in result.accepted)  # fmt: skip


def test_redelivered_messages_without_ts_keep_their_first_receive_time() -> None:
    topics = [b"scc/v1/smoke-1/telemetry"] * 3
    topics += [b"scc/v1/smoke-1/status", b"scc/v1/bin-1/telemetry"]
    payloads = [
        b'{"state":"normal"}',  # redelivered, no ts
        b'{"state":"normal","ts":1700000000123}',  # redelivered, device ts wins
        b'[{"state":"normal"},{"state":"alarm","smoke":0.4}]',  # redelivered batch array
        b"online",  # redelivered status
        bytes.fromhex("01755C03824408040001"),  # new, binary
    ]
    fixed = {0: FIRST, 1: FIRST + 1000, 2: FIRST + 2000, 3: FIRST + 3000}
    batch = Batch(topics, payloads, [1, 2, 3, 4, 5], 1, NOW, fixed_ts=fixed)
    result = Pipeline(DEVICES.get).process(batch)
    assert result.rejected == []
    assert _stamps(result.lines) == [
        FIRST,
        1_700_000_000_123_000_000,
        FIRST + 2000,
        FIRST + 2001,
        FIRST + 3000,
        NOW + 4 * RECEIVE_STEP_NS,
    ]
    assert [a.ts_ns for a in result.accepted] == _stamps(result.lines)
