"""InfluxDB line protocol from field specs: one generic serializer for every device kind.

A kind's ``FieldSpec`` table says how each field is typed; a field's InfluxDB type therefore
never changes (floats always carry a decimal point, integers the ``i`` suffix).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from devices.base import FieldSpec

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})


def escape_tag(value: str) -> str:
    """Escape a tag key or value."""
    return value.translate(_TAG_ESCAPES)


def escape_string_field(value: str) -> str:
    """Quote a string field value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def series_prefix(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,...`` with tags sorted by key (InfluxDB's preferred order)."""
    parts = [measurement.translate(_MEASUREMENT_ESCAPES)]
    for key in sorted(tags):
        value = tags[key]
        if value:
            parts.append(f"{escape_tag(key)}={escape_tag(value)}")
    return ",".join(parts)


def _fmt_float(value: Any) -> str | None:
    number = float(value)
    return repr(number) if math.isfinite(number) else None


def _fmt_int(value: Any) -> str | None:
    return f"{int(value)}i"


def _fmt_bool(value: Any) -> str | None:
    return "true" if value else "false"


def _fmt_str(value: Any) -> str | None:
    return escape_string_field(str(value))


_FORMATTERS: dict[str, Callable[[Any], str | None]] = {
    "float": _fmt_float,
    "int": _fmt_int,
    "bool": _fmt_bool,
    "str": _fmt_str,
}


class FieldWriter:
    """Formats the fields of one kind's readings, in the order of its spec table."""

    def __init__(self, specs: Iterable[FieldSpec]) -> None:
        self._plan = [
            (spec.key, f"{escape_tag(spec.key)}=", _FORMATTERS[spec.type]) for spec in specs
        ]

    def fields(self, reading: object) -> str:
        """``key=value,...`` for the fields the reading carries ('' when none)."""
        out = []
        for key, prefix, fmt in self._plan:
            value = getattr(reading, key, None)
            if value is None:
                continue
            text = fmt(value)
            if text is not None:
                out.append(prefix + text)
        return ",".join(out)

    def fields_from_mapping(self, values: Mapping[str, Any]) -> str:
        """Same as ``fields`` for a plain mapping (alerts, statistics)."""
        out = []
        for key, prefix, fmt in self._plan:
            value = values.get(key)
            if value is None:
                continue
            text = fmt(value)
            if text is not None:
                out.append(prefix + text)
        return ",".join(out)
