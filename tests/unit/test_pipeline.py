"""Pipeline: routing, validation, enrichment and rejection reasons (no I/O)."""

from __future__ import annotations

import pytest

from gateway.ingest.pipeline import Pipeline, parse_status
from gateway.registry.store import DeviceInfo
from gateway.sources.batch import Batch

PATH = (
    ("street", "ST1"),
    ("community", "SQ1"),
    ("grid", "G1"),
    ("compound", "C1"),
    ("building", "B1"),
    ("unit", "B1-1"),
)
DEVICES = {
    "smoke-1": DeviceInfo("smoke-1", "smoke", "JTY", "json", {}, PATH),
    "bin-1": DeviceInfo("bin-1", "bin", "EM310-UDL", "em310-udl", {"depth_mm": "2500"}, PATH[:4]),
    "odd-1": DeviceInfo("odd-1", "lamp", "X", "json", {}, PATH),
}
NOW = 1_700_000_000_000_000_000


def run(*messages: tuple[str, bytes]) -> tuple[Pipeline, list[str], list[tuple[str, str | None]]]:
    pipeline = Pipeline(DEVICES.get, max_payload_bytes=512)
    batch = Batch([t.encode() for t, _ in messages], [p for _, p in messages], [], 1, NOW)
    result = pipeline.process(batch)
    return pipeline, result.lines, [(r.reason, r.device_id) for r in result.rejected]


def test_valid_json_is_enriched_with_the_hierarchy() -> None:
    _, lines, rejected = run(
        ("scc/v1/smoke-1/telemetry", b'{"state":"normal","smoke":0.02,"ts":1700000000000,"seq":5}')
    )
    assert rejected == []
    assert lines == [
        "smoke,building=B1,community=SQ1,compound=C1,device_id=smoke-1,grid=G1,model=JTY,"
        'street=ST1,unit=B1-1 seq=5i,state="normal",smoke=0.02 1700000000000000000'
    ]


def test_batch_array_and_missing_ts_get_distinct_times() -> None:
    _, lines, _ = run(
        ("scc/v1/smoke-1/telemetry", b'[{"state":"normal"},{"state":"alarm","smoke":0.4}]')
    )
    stamps = [line.rsplit(" ", 1)[1] for line in lines]
    assert len(set(stamps)) == 2
    assert all(int(s) >= NOW for s in stamps)


def test_binary_codec_and_derived_fill() -> None:
    _, lines, rejected = run(
        ("scc/v1/bin-1/telemetry", bytes.fromhex("01755C0382440804 0001".replace(" ", "")))
    )
    assert rejected == []
    assert "battery=92.0" in lines[0] and "distance=2116i" in lines[0]
    assert 'position="tilt"' in lines[0]
    assert "fill=15.4" in lines[0]


def test_status_goes_to_events() -> None:
    _, lines, _ = run(
        ("scc/v1/smoke-1/status", b'{"state":"offline"}'), ("scc/v1/smoke-1/status", b"online")
    )
    assert lines[0].startswith("events,") and 'event="offline",online=false' in lines[0]
    assert ",kind=smoke," in lines[0]
    assert 'event="online",online=true' in lines[1]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("scc/v1/smoke-1/telemetry", b'{"state":"normal",', "malformed_json"),
        ("scc/v1/smoke-1/telemetry", b'{"state":"normal","smoke":"lots"}', "wrong_type"),
        ("scc/v1/smoke-1/telemetry", b'{"state":"normal","smoke":7}', "out_of_range"),
        ("scc/v1/smoke-1/telemetry", b'{"state":"normal","colour":"red"}', "unknown_field"),
        ("scc/v1/smoke-1/telemetry", b'{"smoke":0.1}', "missing_field"),
        ("scc/v1/smoke-1/telemetry", b"\xff\xfe{}", "not_utf8"),
        ("scc/v1/smoke-1/telemetry", b"[1,2]", "not_object"),
        ("scc/v1/smoke-1/telemetry", b'{"state":"normal","x":"' + b"a" * 600 + b'"}', "oversized"),
        ("scc/v1/smoke-1/telemetry", b'{"state":"normal","device_id":"smoke-2"}', "topic_mismatch"),
        ("scc/v1/ghost/telemetry", b'{"state":"normal"}', "unknown_device"),
        ("scc/v1/odd-1/telemetry", b"{}", "unknown_device_kind"),
        ("scc/v1/smoke-1/commands", b"{}", "unknown_message_kind"),
        ("other/topic", b"{}", "bad_topic"),
        ("scc/v1/smoke-1/status", b"maybe", "malformed_json"),
        ("scc/v1/bin-1/telemetry", bytes.fromhex("0175"), "truncated"),
    ],
)
def test_rejections_are_named(topic: str, payload: bytes, reason: str) -> None:
    _, lines, rejected = run(
        ("scc/v1/smoke-1/telemetry", b'{"state":"normal"}'),
        (topic, payload),
        ("scc/v1/smoke-1/telemetry", b'{"state":"test"}'),
    )
    assert [r for r, _ in rejected] == [reason]
    assert len(lines) == 2  # the valid messages around the bad one are kept


def test_one_bad_batch_item_rejects_the_message_and_names_the_item() -> None:
    pipeline = Pipeline(DEVICES.get)
    batch = Batch(
        [b"scc/v1/smoke-1/telemetry"], [b'[{"state":"normal"},{"state":"on fire"}]'], [], 1, NOW
    )
    result = pipeline.process(batch)
    assert result.lines == []
    assert result.rejected[0].detail.startswith("batch item 1:")


def test_unknown_device_is_looked_up_again_after_registration() -> None:
    known: dict[str, DeviceInfo] = {}
    pipeline = Pipeline(known.get)
    batch = Batch([b"scc/v1/smoke-1/telemetry"], [b'{"state":"normal"}'], [], 1, NOW)
    assert pipeline.process(batch).rejected[0].reason == "unknown_device"
    known["smoke-1"] = DEVICES["smoke-1"]
    pipeline.invalidate("smoke-1")
    assert pipeline.process(batch).lines


@pytest.mark.parametrize(
    ("payload", "state"), [(b"online", "online"), (b' {"state":"offline"} ', "offline")]
)
def test_parse_status(payload: bytes, state: str) -> None:
    assert parse_status(payload) == state


def test_a_flooding_device_is_throttled_and_its_excess_kept() -> None:
    pipeline = Pipeline(DEVICES.get, device_rate_per_s=10, device_burst=5)
    flood = [("scc/v1/smoke-1/telemetry", b'{"state":"normal"}')] * 8
    other = [("scc/v1/bin-1/telemetry", bytes.fromhex("0175500382440804 0000".replace(" ", "")))]
    batch = Batch([t.encode() for t, _ in flood + other], [p for _, p in flood + other], [], 1, NOW)
    result = pipeline.process(batch)
    assert [r.reason for r in result.rejected] == ["rate_limited"] * 3
    assert all(r.device_id == "smoke-1" and r.payload for r in result.rejected)
    assert result.messages_by_kind == {"smoke": 5, "bin": 1}
    # a second later the bucket holds 10 more tokens (capped at the burst of 5)
    later = Batch(batch.topics, batch.payloads, [], 1, NOW + 1_000_000_000)
    assert [r.reason for r in pipeline.process(later).rejected] == ["rate_limited"] * 3
