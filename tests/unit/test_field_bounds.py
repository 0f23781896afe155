"""A field's range is written once, in its kind's field table; the model enforces exactly it.

``devices.base.bounded`` turns a spec's range into the model field's ``ge``/``le``; here every
ranged field of every kind is checked at its edges, through the field's own validator with
the models' strict config (the int64 ``seq`` bound included: 2**63 - 1 passes, 2**63 not).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, cast

import pytest
from pydantic import ConfigDict, TypeAdapter, ValidationError

from devices import KINDS, load_kind
from devices.base import FieldSpec, bounded

RANGED = [
    (name, spec)
    for name in KINDS
    for spec in load_kind(name).fields
    if (spec.minimum is not None or spec.maximum is not None)
    and spec.key in load_kind(name).model.model_fields
]


def _adapter(kind: str, key: str) -> TypeAdapter[Any]:
    info = load_kind(kind).model.model_fields[key]
    field_type = cast(Any, Annotated[info.annotation, info])
    return TypeAdapter(field_type, config=ConfigDict(strict=True))


def _beyond(spec: FieldSpec, edge: float, direction: float) -> float:
    if spec.type == "int":
        return int(edge) + int(direction)
    return math.nextafter(edge, direction * math.inf)


@pytest.mark.parametrize(("kind", "spec"), RANGED, ids=[f"{k}.{s.key}" for k, s in RANGED])
def test_the_model_takes_the_spec_range_and_nothing_beyond(kind: str, spec: FieldSpec) -> None:
    adapter = _adapter(kind, spec.key)
    for edge, outward in ((spec.minimum, -1.0), (spec.maximum, 1.0)):
        if edge is None:
            continue
        value = int(edge) if spec.type == "int" else float(edge)
        assert adapter.validate_python(value) == value
        with pytest.raises(ValidationError, match=r"greater_than_equal|less_than_equal"):
            adapter.validate_python(_beyond(spec, edge, outward))


def test_seq_takes_the_largest_int64_and_not_one_more() -> None:
    adapter = _adapter("smoke", "seq")
    assert adapter.validate_python(2**63 - 1) == 2**63 - 1
    with pytest.raises(ValidationError, match="less_than_equal"):
        adapter.validate_python(2**63)


def test_bounded_refuses_an_unknown_key_and_a_spec_without_range() -> None:
    specs = (FieldSpec("level", "float", "", 0, 1), FieldSpec("name", "str"))
    with pytest.raises(KeyError, match="nope"):
        bounded(specs, "nope")
    with pytest.raises(ValueError, match="no range"):
        bounded(specs, "name")
