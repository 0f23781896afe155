"""The fleet overview: devices online and offline, open alerts and work orders, SLA breaches.

Counts come from the snapshots the gateway computes from its database
(``gateway.runtime.fleetstats``: ``fleet``, ``alert_stats``, ``workorder_stats``); status messages
from ``events``, alert transitions from ``alerts``.
"""

# Dashboard queries are InfluxQL text built from constants, never from user input.

from __future__ import annotations

from grafana.common import (
    KIND,
    PLACE_VARIABLES,
    PLACES,
    by_time,
    current_sum,
    firing_alerts,
    last_sum,
    match,
    where,
)
from grafana.model import Dashboard, Panel, Query, Row, Threshold

FLEET = match(*PLACES, "kind")  # fleet and events carry the place tags and the kind
ALERT_STATS = match("community", "kind")  # alert_stats: community, severity, kind
ORDERS = match("community")  # workorder_stats: community, level, category
RED = (Threshold(1, "red"),)


def _stat(title: str, query: str, description: str, *, alarm: bool = False) -> Panel:
    return Panel(
        "stat",
        title,
        (Query(query),),
        width=3,
        height=4,
        description=description,
        thresholds=RED if alarm else (),
        decimals=0,
    )


def _now() -> list[Panel | Row]:
    return [
        Row("Now"),
        _stat(
            "Devices",
            current_sum('last("devices")', "fleet", FLEET),
            "Registered active devices.",
        ),
        _stat(
            "Online",
            current_sum('last("devices") - last("offline")', "fleet", FLEET),
            "Devices without a firing offline alert.",
        ),
        _stat(
            "Offline",
            current_sum('last("offline")', "fleet", FLEET),
            "Devices with a firing *.offline alert (silent for longer than allowed).",
            alarm=True,
        ),
        _stat(
            "Alerts firing",
            current_sum('last("firing")', "alert_stats", ALERT_STATS),
            "Alerts firing now.",
            alarm=True,
        ),
        _stat(
            "Unacknowledged",
            current_sum('last("unacknowledged")', "alert_stats", ALERT_STATS),
            "Firing alerts nobody has acknowledged.",
            alarm=True,
        ),
        _stat(
            "Open work orders",
            current_sum('last("open")', "workorder_stats", ORDERS),
            "Work orders not closed (of every kind: orders carry no device kind).",
        ),
        _stat(
            "Overdue (SLA breached)",
            current_sum('last("overdue")', "workorder_stats", ORDERS),
            "Active work orders past their acknowledge or resolve deadline.",
            alarm=True,
        ),
        _stat(
            "Escalated",
            current_sum('last("escalated")', "workorder_stats", ORDERS),
            "Open work orders moved up the hierarchy after an SLA breach.",
        ),
    ]


def _fleet() -> list[Panel | Row]:
    online = last_sum(
        "online",
        "fleet",
        FLEET,
        "community",
        "kind",
        expression='last("devices") - last("offline")',
    )
    status = ('SELECT count("online") FROM "events" {} ' + by_time("kind", fill="0")).format
    return [
        Row("Devices"),
        Panel(
            "timeseries",
            "Devices online by community and kind",
            (Query(online, alias="$tag_community $tag_kind"),),
        ),
        Panel(
            "timeseries",
            "Devices offline by community and kind",
            (
                Query(
                    last_sum("offline", "fleet", FLEET, "community", "kind"),
                    alias="$tag_community $tag_kind",
                ),
            ),
            thresholds=RED,
        ),
        Panel(
            "table",
            "Devices by compound and kind",
            (
                Query(
                    'SELECT last("devices") AS "devices", last("offline") AS "offline", '
                    'last("alerts_firing") AS "alerts firing" FROM "fleet" '
                    f'{where(FLEET)} GROUP BY "community", "compound", "kind"',
                    table=True,
                ),
            ),
            sort_by="offline",
        ),
        Panel(
            "timeseries",
            "Status messages (online / offline) by kind",
            (
                Query(status(where('"online" = true', FLEET)), alias="online $tag_kind"),
                Query(status(where('"online" = false', FLEET)), alias="offline $tag_kind"),
            ),
            draw="bars",
            description="MQTT status messages: devices saying hello or goodbye (last will).",
        ),
    ]


def _alerts_and_orders() -> list[Panel | Row]:
    firing = where("\"state\" = 'firing'", FLEET)
    recent = (
        'SELECT "title", "severity", "kind", "device_id", "compound", "building", "message" '
        f'FROM "alerts" {firing} ORDER BY time DESC LIMIT 50'
    )
    orders_now = (
        'SELECT "open", "overdue", "escalated" FROM ('
        'SELECT last("open") AS "open", last("overdue") AS "overdue", '
        'last("escalated") AS "escalated" FROM "workorder_stats" '
        f'{where(ORDERS)} GROUP BY "community", "level", "category") '
        'WHERE "open" > 0 GROUP BY "community", "level", "category"'
    )
    return [
        Row("Alerts and work orders"),
        Panel(
            "timeseries",
            "Firing alerts by severity",
            (
                Query(
                    last_sum("firing", "alert_stats", ALERT_STATS, "severity"),
                    alias="$tag_severity",
                ),
            ),
        ),
        Panel(
            "timeseries",
            "Open work orders by owner level",
            (Query(last_sum("open", "workorder_stats", ORDERS, "level"), alias="$tag_level"),),
            description="Owner level now, after escalations (all kinds).",
        ),
        Panel(
            "timeseries",
            "SLA breaches: overdue work orders by category",
            (
                Query(
                    last_sum("overdue", "workorder_stats", ORDERS, "category"),
                    alias="$tag_category",
                ),
            ),
            thresholds=RED,
        ),
        Panel(
            "table",
            "Open work orders by community, owner level and category",
            (Query(orders_now, table=True),),
            sort_by="overdue",
        ),
        Panel(
            "table",
            "Recent firing alerts",
            (Query(recent, table=True),),
            width=24,
        ),
    ]


def dashboard() -> Dashboard:
    """The fleet overview dashboard."""
    return Dashboard(
        uid="scc-fleet",
        title="SCC · Fleet overview",
        description="Devices online/offline by community and kind, open alerts, work orders "
        "and SLA breaches.",
        items=(*_now(), *_fleet(), *_alerts_and_orders()),
        variables=(*PLACE_VARIABLES, KIND),
        annotations=(firing_alerts(),),
    )
