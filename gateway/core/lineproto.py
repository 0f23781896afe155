"""InfluxDB line protocol from field specs: one generic serializer for every device kind.

A kind's ``FieldSpec`` table says how each field is typed; a field's InfluxDB type therefore
never changes (floats always carry a decimal point, integers the ``i`` suffix).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
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

    Hot path (every message): for each reading class a formatter is generated on first use,
    with one straight-line step per field of the kind's table (its key, prefix and type fixed
    in the code), in the class's declaration order. The generated source holds only literals
    from the field table written with ``repr``, never a value from a message. Plain mappings
    (alerts, statistics) take the generic :meth:`fields_from_mapping`.
    """

    def __init__(self, specs: Iterable[FieldSpec]) -> None:
        self._plan = {spec.key: (f"{escape_tag(spec.key)}=", _CODES[spec.type]) for spec in specs}
        self._formatters: dict[type, Callable[[Mapping[str, Any]], str]] = {}

    def fields(self, reading: object) -> str:
        """``key=value,...`` for the fields the reading carries ('' when none)."""
        values = reading.__dict__
        formatter = self._formatters.get(type(reading))
        if formatter is None:
            formatter = self._formatters[type(reading)] = self._compile(values)
        return formatter(values)

    def _compile(self, sample: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], str]:
        """A formatter for readings whose attribute dict is ordered like ``sample``."""
        keys = [key for key in sample if key in self._plan]
        keys += [key for key in self._plan if key not in sample]
        lines = ["def format_fields(values):", "    get = values.get", "    out = []"]
        for key in keys:
            prefix, code = self._plan[key]
            lines += [f"    value = get({key!r})", "    if value is not None:"]
            if code == _FLOAT:
                lines += [
                    "        value = float(value)",
                    "        if value - value == 0.0:  # NaN and infinity cannot be stored",
                    f"            out.append({prefix!r} + repr(value))",
                ]
            elif code == _INT:
                lines.append(f"        out.append({prefix!r} + str(int(value)) + 'i')")
            elif code == _BOOL:
                lines.append(
                    f"        out.append({prefix + 'true'!r} if value else {prefix + 'false'!r})"
                )
            else:
                lines.append(f"        out.append({prefix!r} + escape(str(value)))")
        lines.append("    return ','.join(out)")
        namespace: dict[str, Any] = {"escape": escape_string_field}
        exec(compile("\n".join(lines), f"<fields of {len(keys)} keys>", "exec"), namespace)  # noqa: S102
        formatter: Callable[[Mapping[str, Any]], str] = namespace["format_fields"]
        return formatter

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
