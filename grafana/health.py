"""Gateway health over ``gateway_stats``: ingest rate, dead letters, InfluxDB writes, spool.

The gateway writes its counters every stats interval (``gateway.core.metrics.influx_lines``):
counters are cumulative since the gateway started, so rates are
``non_negative_derivative(last(x), 1s)`` (a restart's reset to zero is dropped, not drawn
as a negative spike); gauges (batch sizes, latencies, spool depth) are drawn as they are.
"""

# Dashboard queries are InfluxQL text built from constants, never from user input.

from __future__ import annotations

from grafana.common import by_time, match, where
from grafana.model import Dashboard, Panel, Query, Threshold, Variable

GATEWAY = Variable(
    "gateway", "Gateway", 'SHOW TAG VALUES FROM "gateway_stats" WITH KEY = "gateway"'
)
KIND = Variable(
    "kind",
    "Device kind",
    'SHOW TAG VALUES FROM "gateway_stats" WITH KEY = "kind" WHERE "gateway" =~ /^$gateway$/',
)
GW = match("gateway")


def _rate(field: str, *group: str, condition: str = GW) -> str:
    """Per-second rate of a cumulative counter, per gateway and ``group``."""
    return (
        f'SELECT non_negative_derivative(last("{field}"), 1s) FROM "gateway_stats" '
        f"{where(condition)} {by_time('gateway', *group)}"
    )


def _gauge(field: str, aggregate: str = "max") -> str:
    """A gauge per gateway (``max`` shows the worst moment of each bucket)."""
    return f'SELECT {aggregate}("{field}") FROM "gateway_stats" {where(GW)} {by_time("gateway")}'


def _panel(
    title: str, *queries: Query, unit: str = "", description: str = "", width: int = 8
) -> Panel:
    return Panel("timeseries", title, queries, width=width, unit=unit, description=description)


def dashboard() -> Dashboard:
    """The gateway health dashboard."""
    items = (
        _panel(
            "Messages in per second by kind",
            Query(
                _rate("messages", "kind", condition=match("gateway", "kind")),
                alias="$tag_gateway $tag_kind",
            ),
            unit="cps",
            description="Valid messages accepted by the pipeline.",
        ),
        _panel(
            "Dead letters per second by reason",
            Query(_rate("dead_letters", "reason"), alias="$tag_gateway $tag_reason"),
            unit="cps",
            description="Rejected messages, kept in the dead-letter store (see the CLI).",
        ),
        _panel(
            "Points per second: spooled and written to InfluxDB",
            Query(_rate("points"), alias="$tag_gateway spooled"),
            Query(_rate("influx_written_lines"), alias="$tag_gateway written"),
            unit="cps",
        ),
        _panel(
            "InfluxDB write batch latency",
            Query(_gauge("influx_write_batch_seconds"), alias="$tag_gateway"),
            unit="s",
            description="Time of the last write request group (all connections).",
        ),
        _panel(
            "InfluxDB write batch size",
            Query(_gauge("influx_write_batch_lines"), alias="$tag_gateway"),
            unit="short",
        ),
        _panel(
            "InfluxDB write retries and rejected lines per second",
            Query(_rate("influx_write_retries"), alias="$tag_gateway retries"),
            Query(_rate("influx_rejected_lines"), alias="$tag_gateway rejected"),
            unit="cps",
        ),
        Panel(
            "timeseries",
            "Spool depth (not yet in InfluxDB)",
            (Query(_gauge("spool_bytes"), alias="$tag_gateway"),),
            width=8,
            unit="bytes",
            thresholds=(Threshold(256 * 1024 * 1024, "orange"),),
            description="Grows while InfluxDB is down or slow; at its bound the gateway "
            "stops acknowledging and the broker keeps the backlog.",
        ),
        _panel(
            "MQTT reconnects",
            Query(
                'SELECT non_negative_difference(last("mqtt_reconnects")) FROM "gateway_stats" '
                f"{where(GW)} {by_time('gateway')}",
                alias="$tag_gateway",
            ),
            unit="short",
        ),
        _panel(
            "Batch processing time",
            Query(_gauge("batch_process_seconds"), alias="$tag_gateway"),
            unit="s",
            description="Decode, validate and enrich of the last batch.",
            width=12,
        ),
        _panel(
            "Rule evaluation time",
            Query(_gauge("rules_eval_seconds"), alias="$tag_gateway"),
            unit="s",
            description="The rules engine over the last batch (numpy-vectorised conditions).",
            width=12,
        ),
        _panel(
            "Persist commit time",
            Query(_gauge("persist_commit_seconds"), alias="$tag_gateway"),
            unit="s",
            description="One group commit: spool fsync, dead letters, alerts and rule state.",
            width=12,
        ),
        _panel(
            "Batch size (messages)",
            Query(_gauge("batch_size"), alias="$tag_gateway"),
            unit="short",
            width=12,
        ),
    )
    return Dashboard(
        uid="scc-gateway",
        title="SCC · Gateway health",
        description="Ingest rate, dead letters, InfluxDB writes, spool depth, MQTT reconnects "
        "and batch processing of each gateway.",
        items=items,
        variables=(GATEWAY, KIND),
        tags=("scc", "gateway"),
        refresh="10s",
        time_from="now-1h",
    )
