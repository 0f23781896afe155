"""Pieces every dashboard shares: the place/kind variables, filters and alert panels.

Filters compare tags with ``=~ /^$var$/`` because the variables are multi-select with an
``All`` of ``.*`` (see :class:`grafana.model.Variable`). Grafana expands ``$timeFilter`` to
the dashboard's time range and ``$__interval`` to a bucket width fitting the panel.
"""

# Dashboard queries are InfluxQL text built from constants, never from user input.

from __future__ import annotations

from grafana.model import Annotation, Panel, Query, Variable

#: The place variables of device dashboards, in chain order.
PLACES: tuple[str, ...] = ("street", "community", "compound")

STREET = Variable("street", "Street 街道", 'SHOW TAG VALUES WITH KEY = "street"')
COMMUNITY = Variable(
    "community",
    "Community 社区",
    'SHOW TAG VALUES WITH KEY = "community" WHERE "street" =~ /^$street$/',
)
COMPOUND = Variable(
    "compound",
    "Compound 小区",
    'SHOW TAG VALUES WITH KEY = "compound" '
    'WHERE "street" =~ /^$street$/ AND "community" =~ /^$community$/',
)
KIND = Variable(
    "kind",
    "Device kind",
    'SHOW TAG VALUES FROM "fleet", "events" WITH KEY = "kind" '
    'WHERE "community" =~ /^$community$/ AND "compound" =~ /^$compound$/',
)
PLACE_VARIABLES = (STREET, COMMUNITY, COMPOUND)


def match(*tags: str) -> str:
    """``"tag" =~ /^$tag$/`` for each tag, joined with AND."""
    return " AND ".join(f'"{tag}" =~ /^${tag}$/' for tag in tags)


def where(*conditions: str) -> str:
    """A WHERE clause of the conditions and the dashboard's time range."""
    return "WHERE " + " AND ".join([*filter(None, conditions), "$timeFilter"])


def by_time(*tags: str, fill: str = "none") -> str:
    """``GROUP BY time($__interval), "tag", ... fill(...)``."""
    groups = ", ".join(["time($__interval)", *(f'"{tag}"' for tag in tags)])
    return f"GROUP BY {groups} fill({fill})"


def firing_alerts(kind: str | None = None) -> Annotation:
    """Annotations of alerts as they fire, on the selected places (and kind)."""
    kind_filter = f'"kind" = {_quote(kind)}' if kind else match("kind")
    query = 'SELECT "title", "message", "device_id", "severity" FROM "alerts" ' + where(
        "\"state\" = 'firing'", match(*PLACES), kind_filter
    )
    return Annotation(
        "Firing alerts",
        query,
        text_column="message",
        title_column="title",
        tags_column="device_id,severity",
    )


def alerts_table(kind: str, title: str, width: int = 24) -> Panel:
    """The latest alert transitions of one device kind, newest first."""
    condition = where(f'"kind" = {_quote(kind)}', match(*PLACES))
    query = (
        'SELECT "title", "state", "severity", "device_id", "compound", "building", "message" '
        f'FROM "alerts" {condition} ORDER BY time DESC LIMIT 50'
    )
    return Panel(
        "table",
        title,
        (Query(query, table=True),),
        width=width,
        description="Alert transitions (pending, firing, resolved) from the rules engine.",
    )


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def last_sum(
    field: str, measurement: str, condition: str, *group: str, expression: str = ""
) -> str:
    """Sum over series of each series' last ``field`` per interval, grouped by ``group``.

    Snapshot measurements (``fleet``, ``alert_stats``, ``workorder_stats``) hold one series
    per place; adding their last values gives the total for a bucket without counting a
    snapshot twice when a bucket holds several. ``expression`` replaces ``last(field)``.
    """
    selected = expression or f'last("{field}")'
    inner = (
        f'SELECT {selected} AS "{field}" FROM "{measurement}" '
        f"{where(condition)} GROUP BY time($__interval), *"
    )
    return f'SELECT sum("{field}") AS "{field}" FROM ({inner}) {where()} {by_time(*group)}'


def current_sum(expression: str, measurement: str, condition: str) -> str:
    """One number: the sum over series of ``expression`` of each series' last values."""
    inner = f'SELECT {expression} AS "v" FROM "{measurement}" {where(condition)} GROUP BY *'
    return f'SELECT sum("v") FROM ({inner})'
