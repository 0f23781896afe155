"""The pipeline validates single JSON objects straight from the bytes when it can.

That fast path may refuse more than the regular path (a refusal falls back to it, which
names the reason) but must never accept a payload the regular path refuses, nor read it
differently.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from devices import KINDS, load_kind
from devices.base import JSON_CODEC, DecodeError

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
    accepted = 0
    for payload in _payloads(name):
        try:
            fast = kind.model.model_validate_json(payload)
        except ValidationError:
            continue  # falls back to the regular path
        accepted += 1
        try:
            raws = JSON_CODEC.decode(payload)
            regular = [kind.validate(raw, {}) for raw in raws]
        except DecodeError as err:
            pytest.fail(f"fast path accepted {payload!r}, regular path refuses: {err}")
        assert [r.model_dump() for r in regular] == [fast.model_dump()], payload
    assert accepted > 0
