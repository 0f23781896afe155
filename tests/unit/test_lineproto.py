"""Line protocol serialisation from field specs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from devices.base import FieldSpec
from gateway.lineproto import FieldWriter, escape_string_field, escape_tag, series_prefix

SPECS = (
    FieldSpec("level", "float"),
    FieldSpec("count", "int"),
    FieldSpec("ok", "bool"),
    FieldSpec("state", "str"),
)


@dataclass
class R:
    level: float | None = None
    count: int | None = None
    ok: bool | None = None
    state: str | None = None


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        (R(level=1), "level=1.0"),
        (R(level=0.15, count=3), "level=0.15,count=3i"),
        (R(ok=False, state="alarm"), 'ok=false,state="alarm"'),
        (R(state='say "hi"\\'), r'state="say \"hi\"\\"'),
        (R(level=float("nan"), count=1), "count=1i"),
        (R(), ""),
    ],
)
def test_fields(reading: R, expected: str) -> None:
    assert FieldWriter(SPECS).fields(reading) == expected


def test_fields_from_mapping_matches() -> None:
    writer = FieldWriter(SPECS)
    assert writer.fields_from_mapping({"count": 2, "ok": True}) == "count=2i,ok=true"


def test_series_prefix_sorts_and_escapes() -> None:
    prefix = series_prefix(
        "smoke", {"unit": "B1 2", "device_id": "a,b", "grid": "", "building": "B=1"}
    )
    assert prefix == r"smoke,building=B\=1,device_id=a\,b,unit=B1\ 2"


def test_escapes() -> None:
    assert escape_tag("a b,c=d") == r"a\ b\,c\=d"
    assert escape_string_field("line\nbreak") == '"line\\nbreak"'
