"""The pipeline validates single JSON objects straight from the bytes when it can.

That fast path may refuse more than the regular path (a refusal falls back to it, which
names the reason) but must never accept a payload the regular path refuses, nor read it
differently: booleans and text as numbers, 0/1 as flags and keys given twice included
(pydantic's JSON parser, like orjson, keeps the last of two equal keys; the pipeline's
comma count catches them, see ``devices.jsonkeys``).
"""

from __future__ import annotations

import json
import time

import pytest

from devices import KINDS, load_kind
from devices.base import JSON_CODEC, DecodeError
from gateway.ingest.pipeline import Pipeline
from gateway.registry.store import DeviceInfo
from gateway.sources.batch import Batch

TOPIC = b"scc/v1/dev-1/telemetry"

EDGE_CASES = [
    b'{"smoke": NaN}',
    b'{"temperature": Infinity}',
    b'{"seq": 99999999999999999999999}',
    b'{"temperature": 1e400}',
    b'{"smoke": 0.1, "smoke": 0.2}',
    b'{"state": "\\ud800"}',
    b'\xef\xbb\xbf{"state": "normal"}',
    b'{"fw": "\xff"}',
    b'{"smoke": "0.1"}',
    b'{"smoke": true}',
    b'{"seq": 1.0}',
    b'{"seq": 1.5}',
    b'{"seq": "1"}',
    b'{"ts": 1764000001000.5}',
    b'{"ts": "2026-11-28T10:00:00+08:00"}',
    b'{"ts": "2026-11-28T10:00:00"}',
    b'[{"state": "normal"}]',
    b"{}",
    b'{"state":"normal","smoke":true}',
    b'{"state":"normal","battery":false}',
    b'{"state":"normal","seq":true}',
    b'{"state":"normal","temperature":"21.5"}',
    b'{"state":"alarm","state":"normal"}',
    b'{"state":"normal","state":"normal"}',
    b'{"state":"normal","smoke":0.1,"smoke":0.9}',
    b'{"state":"normal","st\\u0061te":"alarm"}',
    b'{"state":"normal","fw":"a,b","fw":"c"}',
    b'{"event":"throw","floor_estimate":5,"confidence":0.9,"floor_range":[4,6],"event":"heartbeat"}',
    b'{"event":"heartbeat","floor_range":null,"event":"online"}',
    b'{"event":"throw","floor_estimate":5,"confidence":0.9,"floor_range":[4,6],"floor_low":4}',
]

FAST_KINDS = [name for name in KINDS if not load_kind(name).derives]


def _payloads(name: str) -> list[bytes]:
    samples = sorted((load_kind(name).folder / "samples").rglob("*.json"))
    return [path.read_bytes() for path in samples] + EDGE_CASES


def test_some_kinds_take_the_fast_path() -> None:
    assert "smoke" in FAST_KINDS
    assert "bin" not in FAST_KINDS  # fill % is derived from the bin's depth


@pytest.mark.parametrize("name", FAST_KINDS)
def test_fast_path_accepts_only_what_the_regular_path_accepts(name: str) -> None:
    kind = load_kind(name)
    # the pipeline's fast path for this kind (a window wide enough for the samples' ts)
    pipeline = Pipeline({"dev-1": DeviceInfo("dev-1", name, "M", "json", {})}.get,
                        ts_max_skew_s=1e10, ts_max_age_s=1e10)  # fmt: skip
    accepted = 0
    for payload in _payloads(name):
        result = pipeline.process(Batch([TOPIC], [payload], [], 1, time.time_ns()))
        assert pipeline.known("dev-1") is not None
        route = pipeline._routes[TOPIC]
        assert route.json_model is not None
        try:
            raws = JSON_CODEC.decode(payload)
            regular = [kind.validate(raw, {}) for raw in raws]
        except DecodeError as err:
            assert [r.reason for r in result.rejected] == [err.reason], payload
            continue
        fast = [item.reading for item in result.accepted]
        assert [r.model_dump() for r in regular] == [f.model_dump() for f in fast if f], payload
        accepted += isinstance(json.loads(payload), dict)
    assert accepted > 0
