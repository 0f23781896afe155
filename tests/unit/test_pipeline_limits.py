"""Issue 14: the pipeline's edges for device time and rate (no I/O).

- A ``ts`` beyond the batch's receive time plus ``ts_max_skew_s`` is ``future_ts``, older
  than ``ts_max_age_s`` is ``stale_ts``: on the fast path, the regular path (derived kinds,
  batch arrays) and for ISO 8601 text alike.
- The per-device rate limit tells an outage backlog (readings spaced by the device's own
  clock, delivered at once) from a flood (no ts, or many readings per device second, or a
  made-up past older than what the device already reported). As in the gateway, the rules
  engine sees each batch's readings and tells the limit the newest one it applied.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from devices import KINDS, load_kind
from gateway.ingest.pipeline import BatchResult, Pipeline
from gateway.registry.store import DeviceInfo
from gateway.sources.batch import Batch
from rules import Observation, load_rules
from rules.engine import Engine

S = 1_000_000_000
MS = 1_000_000
NOW = 1_764_000_000 * S  # the batch's receive time
NOW_MS = NOW // MS
PATH = (("street", "ST1"), ("community", "SQ1"), ("grid", "G1"), ("compound", "C1"))
DEVICES = {
    **{f"smoke-{n}": DeviceInfo(f"smoke-{n}", "smoke", "JTY", "json", {}, PATH) for n in range(6)},
    "bin-1": DeviceInfo("bin-1", "bin", "SB-200", "json", {"depth_mm": "1000"}, PATH),
    "bin-2": DeviceInfo("bin-2", "bin", "EM310-UDL", "em310-udl", {"depth_mm": "1000"}, PATH),
}
SKEW_MS = 300_000  # the defaults: 5 min ahead, 7 days back
AGE_MS = 7 * 86_400_000


def process(pipeline: Pipeline, messages: list[tuple[str, bytes]], recv: int = NOW) -> BatchResult:
    topics = [topic.encode() for topic, _ in messages]
    return pipeline.process(Batch(topics, [p for _, p in messages], [], 1, recv))


def reasons(result: BatchResult) -> list[str]:
    return [item.reason for item in result.rejected]


def smoke(ts: object, **fields: object) -> bytes:
    return orjson.dumps({"state": "normal", **fields, "ts": ts})


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# -- the timestamp window --------------------------------------------------------------------

WINDOW = [
    (NOW_MS, None),
    (NOW_MS + SKEW_MS, None),
    (NOW_MS + SKEW_MS + 1, "future_ts"),
    (NOW_MS + 86_400_000, "future_ts"),
    (4_070_908_800_000, "future_ts"),  # 2099-01-01
    (NOW_MS - AGE_MS, None),
    (NOW_MS - AGE_MS - 1, "stale_ts"),
    (946_684_800_000, "stale_ts"),  # 2000-01-01
    (float(NOW_MS + SKEW_MS + 1), "future_ts"),
    (iso(NOW_MS + SKEW_MS + 1000), "future_ts"),
    (iso(NOW_MS - AGE_MS - 1000), "stale_ts"),
    (iso(NOW_MS), None),
]


@pytest.mark.parametrize(("ts", "reason"), WINDOW)
@pytest.mark.parametrize(
    "shape", ["fast path", "batch array", "derived kind", "derived kind in a batch"]
)
def test_ts_outside_the_window_is_a_dead_letter(ts: object, reason: str | None, shape: str) -> None:
    good = {"state": "normal", "ts": NOW_MS - 1}
    if shape.startswith("derived"):
        topic, reading, good = "scc/v1/bin-1/telemetry", {"distance": 100, "ts": ts}, {"fill": 5}
    else:
        topic, reading = "scc/v1/smoke-1/telemetry", {"state": "alarm", "ts": ts}
    doc = [good, reading] if "batch" in shape else reading
    result = process(Pipeline(DEVICES.get), [(topic, orjson.dumps(doc))])
    if reason is None:
        assert reasons(result) == [] and len(result.accepted) == (2 if "batch" in shape else 1)
        return
    assert reasons(result) == [reason] and result.lines == [] and result.accepted == []
    detail = result.rejected[0].detail
    assert ("batch item 1: " in detail) is ("batch" in shape), detail
    assert ("ahead of the gateway clock" if reason == "future_ts" else "older than") in detail


def test_the_window_follows_the_settings_and_the_receive_time() -> None:
    pipeline = Pipeline(DEVICES.get, ts_max_skew_s=10, ts_max_age_s=60)
    messages = [
        ("scc/v1/smoke-1/telemetry", smoke(NOW_MS + 11_000)),
        ("scc/v1/smoke-2/telemetry", smoke(NOW_MS + 9_000)),
        ("scc/v1/smoke-3/telemetry", smoke(NOW_MS - 61_000)),
        ("scc/v1/smoke-4/telemetry", smoke(NOW_MS - 59_000)),
    ]
    assert reasons(process(pipeline, messages)) == ["future_ts", "stale_ts"]
    # the same messages a minute later: one more is stale, none is ahead any more
    later = process(pipeline, messages, NOW + 60 * S)
    assert reasons(later) == ["stale_ts", "stale_ts"]


# -- an outage backlog and floods ------------------------------------------------------------


def backlog(device: str, count: int, spacing_ms: int, end_ms: int) -> list[tuple[str, bytes]]:
    """``count`` readings of one device, ``spacing_ms`` apart by its clock, the last at
    ``end_ms``: what the broker delivers at once after the gateway was down."""
    start = end_ms - (count - 1) * spacing_ms
    topic = f"scc/v1/{device}/telemetry"
    return [(topic, smoke(start + n * spacing_ms, seq=n + 1)) for n in range(count)]


HEARTBEAT = {kind: float(load_kind(kind).heartbeat_s) for kind in KINDS}


class Flow(Pipeline):
    """The pipeline with the rate limit on, followed by the rules engine, as in the gateway."""

    def __init__(self, engine: Engine | None = None, **options: float) -> None:
        super().__init__(DEVICES.get, device_rate_per_s=20, device_burst=200, **options)  # type: ignore[arg-type]
        self.engine = engine or Engine(load_rules(None), HEARTBEAT)
        self.limits.latest = self.engine.latest_reading

    def process(self, batch: Batch) -> BatchResult:
        result = super().process(batch)
        observations = [
            Observation(a.info.device_id, a.info.kind, a.ts_ns, a.reading.__dict__, {})
            for a in result.accepted
            if a.reading is not None
        ]
        self.engine.evaluate(observations, batch.received_ns)
        return result


def limited_pipeline(engine: Engine | None = None, device_backlog_s: float = 86_400) -> Flow:
    return Flow(engine, device_backlog_s=device_backlog_s)


def test_an_outage_backlog_is_kept_whole() -> None:
    # 5 devices x 300 readings, one every 10 s over the last 50 minutes, all in one batch
    # (issue 14: 495 of them used to be rate_limited).
    pipeline = limited_pipeline()
    messages = [m for n in range(5) for m in backlog(f"smoke-{n}", 300, 10_000, NOW_MS - 1000)]
    result = process(pipeline, messages)
    assert reasons(result) == [] and len(result.lines) == 1500
    # and the devices' live readings after it pass as before
    live = [(f"scc/v1/smoke-{n}/telemetry", smoke(NOW_MS + 500)) for n in range(5)]
    assert reasons(process(pipeline, live, NOW + S)) == []


def test_a_backlog_split_over_batches_and_in_batch_arrays_is_kept() -> None:
    pipeline = limited_pipeline()
    readings = [{"state": "normal", "ts": NOW_MS - 3_000_000 + n * 10_000} for n in range(300)]
    arrays = [
        ("scc/v1/smoke-1/telemetry", orjson.dumps(readings[n : n + 3])) for n in range(0, 300, 3)
    ]
    singles = backlog("smoke-2", 300, 10_000, NOW_MS)
    for part in range(3):  # three batches, 10 ms apart
        chunk = arrays[part * 34 : (part + 1) * 34] + singles[part * 100 : (part + 1) * 100]
        assert reasons(process(pipeline, chunk, NOW + part * 10 * MS)) == []


@pytest.mark.parametrize(
    "flood",
    [
        [("scc/v1/smoke-1/telemetry", b'{"state":"normal"}')] * 1000,
        [("scc/v1/smoke-1/telemetry", smoke(NOW_MS - 500 + n % 500)) for n in range(1000)],
        [("scc/v1/smoke-1/telemetry", smoke(NOW_MS)) for _ in range(1000)],
        [("scc/v1/smoke-1/status", b"online")] * 1000,
        [("scc/v1/bin-2/telemetry", bytes.fromhex("01755003824408040000"))] * 1000,
    ],
    ids=["no ts", "ts within a second", "one ts", "status", "binary (no ts)"],
)
def test_a_flood_is_still_limited(flood: list[tuple[str, bytes]]) -> None:
    result = process(limited_pipeline(), flood)
    # the burst (200) passes by the gateway's clock, and by the device's at most one more
    # burst plus 20 per device second (here: at most one)
    assert 200 <= len(result.accepted) <= 420
    assert set(reasons(result)) == {"rate_limited"}
    assert all(item.payload for item in result.rejected)


def test_a_sustained_flood_with_true_timestamps_gets_the_rate_not_twice_it() -> None:
    # 200 msg/s for 20 s, each with the true time: a burst by each clock, then 20 msg/s.
    pipeline = limited_pipeline()
    kept = 0
    for tick in range(200):  # every 0.1 s
        recv = NOW + tick * S // 10
        batch = [("scc/v1/smoke-1/telemetry", smoke(recv // MS - 20 + n)) for n in range(20)]
        kept += len(process(pipeline, batch, recv).accepted)
    assert 2 * 200 + 20 * 20 - 20 <= kept <= 2 * 200 + 20 * 20 + 20


def test_a_device_that_reported_live_cannot_make_up_a_past() -> None:
    # After live readings, a "backlog" older than what it already reported is a flood.
    pipeline = limited_pipeline()
    for second in range(10):
        live = [("scc/v1/smoke-1/telemetry", smoke(NOW_MS + second * 1000))]
        assert reasons(process(pipeline, live, NOW + second * S)) == []
    made_up = backlog("smoke-1", 2000, 10_000, NOW_MS)  # 5.5 hours, 10 s apart
    result = process(pipeline, made_up, NOW + 10 * S)
    assert len(result.accepted) <= 210
    assert set(reasons(result)) == {"rate_limited"}


def test_a_device_heard_before_a_restart_cannot_make_up_a_past_either() -> None:
    # The engine's rule state (saved with every batch, restored at start-up) keeps the
    # device's newest reading, so a fresh pipeline knows it too.
    before = limited_pipeline()
    live = [("scc/v1/smoke-1/telemetry", smoke(NOW_MS - 1000))]
    assert reasons(process(before, live)) == []
    saved = before.engine.dirty_states()
    engine = Engine(load_rules(None), HEARTBEAT)
    engine.load_states((rule, key, doc) for (rule, key), doc in saved.items() if doc)
    after = limited_pipeline(engine=engine)
    made_up = backlog("smoke-1", 2000, 10_000, NOW_MS - 2000)
    result = process(after, made_up, NOW + 60 * S)
    assert len(result.accepted) <= 210
    # while a backlog newer than that reading is kept whole
    again = limited_pipeline(engine=engine)
    kept = process(again, backlog("smoke-1", 600, 100, NOW_MS + 59_000), NOW + 60 * S)
    assert reasons(kept) == []


def test_a_made_up_past_gains_at_most_device_backlog_s_of_the_device_clock() -> None:
    # A device first heard now (e.g. after the gateway restarted) may deliver readings
    # faster than its rate by the gateway's clock, but not from further back than
    # device_backlog_s: at 20 msg/s of its own time, at most 20 x 600 + 2 bursts of 200.
    pipeline = limited_pipeline(device_backlog_s=600)
    made_up = backlog("smoke-1", 30_000, 50, NOW_MS)  # 25 minutes at 20 per device second
    result = process(pipeline, made_up)
    assert 600 * 20 <= len(result.accepted) <= 600 * 20 + 2 * 200
    # past the first burst (taken by the gateway's clock), nothing from before the floor
    beyond_burst = result.accepted[200:]
    assert min(item.ts_ns for item in beyond_burst) >= NOW - 600 * S - 10 * S


def test_a_backlog_further_back_than_device_backlog_s_is_kept_from_there_on() -> None:
    pipeline = limited_pipeline(device_backlog_s=1800)
    result = process(pipeline, backlog("smoke-1", 720, 10_000, NOW_MS))  # two hours
    # the first 200 pass by the gateway's clock, then the last 30 minutes (~180 readings);
    # what lies between is kept as rate_limited dead letters
    assert 200 + 180 <= len(result.accepted) <= 200 + 182
    assert reasons(result) == ["rate_limited"] * (720 - len(result.accepted))
    assert max(item.received_ns for item in result.rejected) == NOW


def test_without_a_rate_limit_nothing_is_limited() -> None:
    pipeline = Pipeline(DEVICES.get)
    flood = [("scc/v1/smoke-1/telemetry", b'{"state":"normal"}')] * 1000
    assert reasons(process(pipeline, flood)) == []
