"""InfluxDB line protocol from field specs: one generic serializer for every device kind.

A kind's ``FieldSpec`` table says how each field is typed; a field's InfluxDB type therefore
never changes (floats always carry a decimal point, integers the ``i`` suffix).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from devices.base import FieldSpec

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})


@functools.lru_cache(maxsize=1 << 16)
def escape_tag(value: str) -> str:
    """Escape a tag key or value.

    InfluxDB cannot store a tag value ending in a backslash (it escapes the separator after
    it, and a doubled one is refused too), so trailing backslashes are dropped; the registry
    refuses such codes and models up front. Cached: hierarchy codes, models and keys repeat
    across every device's series.
    """
    return value.rstrip("\\").translate(_TAG_ESCAPES)


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


_FLOAT, _INT, _BOOL, _STR = range(4)
_CODES = {"float": _FLOAT, "int": _INT, "bool": _BOOL, "str": _STR}


class FieldWriter:
    """Formats the fields of one kind's readings.

    Hot path: it walks the reading's own attribute dict (pydantic models and dataclasses
    keep fields there, in declaration order), so absent optional fields cost almost nothing.
    """

    def __init__(self, specs: Iterable[FieldSpec]) -> None:
        self._plan = {spec.key: (f"{escape_tag(spec.key)}=", _CODES[spec.type]) for spec in specs}

    def fields(self, reading: object) -> str:
        """``key=value,...`` for the fields the reading carries ('' when none)."""
        return self.fields_from_mapping(reading.__dict__)

    def fields_from_mapping(self, values: Mapping[str, Any]) -> str:
        """Same as ``fields`` for a plain mapping (alerts, statistics)."""
        out = []
        plan = self._plan
        for key, value in values.items():
            if value is None:
                continue
            entry = plan.get(key)
            if entry is None:
                continue
            prefix, code = entry
            if code == _FLOAT:
                number = float(value)
                if number - number != 0.0:  # NaN or infinity: not representable
                    continue
                out.append(prefix + repr(number))
            elif code == _INT:
                out.append(f"{prefix}{int(value)}i")
            elif code == _BOOL:
                out.append(prefix + ("true" if value else "false"))
            else:
                out.append(prefix + escape_string_field(str(value)))
        return ",".join(out)
