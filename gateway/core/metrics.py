"""The gateway's own counters as Prometheus-style samples (``/metrics``) and InfluxDB lines.

One source for both: ``samples()`` walks the counters once; ``prometheus_text()`` renders
them for scraping and ``stats_lines()`` writes the same figures to ``gateway_stats``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.lineproto import escape_tag


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric value with its labels."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    kind: str = "counter"  # or "gauge"
    help: str = ""


def label_text(labels: tuple[tuple[str, str], ...]) -> str:
    """``{key="value",...}`` in Prometheus escaping ('' without labels)."""
    if not labels:
        return ""
    inner = ",".join(
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in labels
    )
    return "{" + inner + "}"


def prometheus_text(samples: Iterable[Sample]) -> str:
    """Prometheus text exposition format (0.0.4), HELP/TYPE once per metric name."""
    out: list[str] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.name not in seen:
            seen.add(sample.name)
            if sample.help:
                out.append(f"# HELP {sample.name} {sample.help}")
            out.append(f"# TYPE {sample.name} {sample.kind}")
        value = sample.value
        text = repr(float(value)) if isinstance(value, float) else str(value)
        out.append(f"{sample.name}{label_text(sample.labels)} {text}")
    return "\n".join(out) + "\n"


def influx_lines(samples: Iterable[Sample], gateway: str, ts_ns: int) -> list[str]:
    """``gateway_stats`` lines: unlabelled samples on one line, each labelled one on its own."""
    plain: list[str] = []
    lines: list[str] = []
    gw = escape_tag(gateway)
    for sample in samples:
        field = sample.name.removeprefix("scc_").removesuffix("_total")
        value = f"{sample.value!r}" if isinstance(sample.value, float) else f"{int(sample.value)}i"
        if sample.labels:
            tags = ",".join(f"{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(sample.labels))
            lines.append(f"gateway_stats,gateway={gw},{tags} {field}={value} {ts_ns}")
        else:
            plain.append(f"{field}={value}")
    if plain:
        lines.insert(0, f"gateway_stats,gateway={gw} {','.join(plain)} {ts_ns}")
    return lines
