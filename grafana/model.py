"""A small builder for Grafana's classic dashboard JSON model with InfluxQL queries.

Only what our dashboards use: query variables, InfluxQL annotations, row / time series /
stat / table panels, laid out left to right on Grafana's 24-column grid. Definitions are
frozen dataclasses; :meth:`Dashboard.to_json` renders the JSON Grafana's file provisioning
loads. Every datasource reference is the provisioned InfluxDB datasource, by uid.

Grafana's own ``grafana-foundation-sdk`` was considered: it is maintained by Grafana Labs
but ships no InfluxDB query type, is versioned per Grafana release with PyPI epochs, and is
marked alpha; the few shapes we need are simpler to own than to adapt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from grafana import DATASOURCE_UID

#: Grafana's grid is 24 columns wide.
GRID_COLUMNS = 24
#: The classic dashboard schema version these dashboards are written for (Grafana 10.4+).
SCHEMA_VERSION = 39
DATASOURCE: Mapping[str, str] = {"type": "influxdb", "uid": DATASOURCE_UID}

PanelType = Literal["timeseries", "stat", "table"]
Json = dict[str, Any]


def _datasource() -> Json:
    return dict(DATASOURCE)


@dataclass(frozen=True, slots=True)
class Query:
    """One InfluxQL target; ``table`` asks for Grafana's table result format."""

    influxql: str
    alias: str = ""
    table: bool = False

    def to_json(self, ref_id: str) -> Json:
        """The panel target."""
        target: Json = {
            "refId": ref_id,
            "datasource": _datasource(),
            "query": self.influxql,
            "rawQuery": True,
            "resultFormat": "table" if self.table else "time_series",
        }
        if self.alias:
            target["alias"] = self.alias
        return target


@dataclass(frozen=True, slots=True)
class Threshold:
    """A coloured step from ``value`` up (``None``: the base step)."""

    value: float | None
    color: str


@dataclass(frozen=True, slots=True)
class Panel:
    """A visualisation of one or more queries, ``width`` × ``height`` grid cells."""

    type: PanelType
    title: str
    queries: tuple[Query, ...]
    width: int = 12
    height: int = 8
    unit: str = ""
    description: str = ""
    thresholds: tuple[Threshold, ...] = ()
    draw: Literal["line", "bars", "points"] = "line"
    sort_by: str = ""  # tables: the column to sort by, descending
    decimals: int | None = None

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        """The panel at grid position (x, y)."""
        refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        out: Json = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "datasource": _datasource(),
            "targets": [q.to_json(refs[i]) for i, q in enumerate(self.queries)],
            "fieldConfig": {"defaults": self._defaults(), "overrides": []},
            "options": self._options(),
        }
        if self.type == "table":
            # Tables of several selectors carry a meaningless epoch-0 time column.
            out["transformations"] = [
                {"id": "organize", "options": {"excludeByName": {"Time": True}}}
            ]
        return out

    def _defaults(self) -> Json:
        steps: list[Json] = [{"color": "green", "value": None}]
        steps += [{"color": t.color, "value": t.value} for t in self.thresholds]
        defaults: Json = {"thresholds": {"mode": "absolute", "steps": steps}}
        if self.unit:
            defaults["unit"] = self.unit
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.type == "timeseries":
            defaults["custom"] = {
                "drawStyle": self.draw,
                "lineWidth": 1,
                "fillOpacity": 80 if self.draw == "bars" else 10,
                "pointSize": 6,
                "showPoints": "always" if self.draw == "points" else "auto",
                "spanNulls": True,
                "thresholdsStyle": {"mode": "line" if self.thresholds else "off"},
            }
        elif self.type == "stat":
            defaults["noValue"] = "0"  # counts: nothing to count means zero
            defaults["color"] = {"mode": "thresholds"}
        else:
            defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}}
        return defaults

    def _options(self) -> Json:
        if self.type == "timeseries":
            return {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        if self.type == "stat":
            return {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "area",
                "justifyMode": "auto",
                "orientation": "auto",
                "textMode": "auto",
            }
        options: Json = {"showHeader": True, "cellHeight": "sm"}
        if self.sort_by:
            options["sortBy"] = [{"displayName": self.sort_by, "desc": True}]
        return options


@dataclass(frozen=True, slots=True)
class Row:
    """A collapsible section title spanning the whole width."""

    title: str

    def to_json(self, panel_id: int, y: int) -> Json:
        """The row panel at height ``y``."""
        return {
            "id": panel_id,
            "type": "row",
            "title": self.title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": y},
            "panels": [],
        }


@dataclass(frozen=True, slots=True)
class Variable:
    """A query variable over tag values; multi-select with an ``All`` that matches anything.

    ``All`` stands for the regex ``.*`` so it also matches points that lack the tag (a
    device hung above compound level has no ``compound`` tag): queries therefore compare
    with ``=~ /^$name$/``.
    """

    name: str
    label: str
    query: str

    def to_json(self) -> Json:
        """The templating entry."""
        return {
            "type": "query",
            "name": self.name,
            "label": self.label,
            "datasource": _datasource(),
            "query": self.query,
            "definition": self.query,
            "refresh": 2,  # on time range change: new devices appear without a reload
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "regex": "",
            "sort": 1,
            "hide": 0,
            "skipUrlSync": False,
        }


@dataclass(frozen=True, slots=True)
class Annotation:
    """Events from an InfluxQL query drawn on every time series panel."""

    name: str
    query: str
    text_column: str
    title_column: str = ""
    tags_column: str = ""
    color: str = "red"

    def to_json(self) -> Json:
        """The annotation list entry (current ``target`` form plus the legacy keys)."""
        columns = {
            "textColumn": self.text_column,
            "titleColumn": self.title_column,
            "tagsColumn": self.tags_column,
        }
        return {
            "name": self.name,
            "datasource": _datasource(),
            "enable": True,
            "hide": False,
            "iconColor": self.color,
            "query": self.query,
            **columns,
            "target": {
                "refId": "Anno",
                "query": self.query,
                "rawQuery": True,
                "fromAnnotations": True,
                "queryType": "tags",
                **columns,
            },
        }


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A whole dashboard: variables, annotations and panels in reading order."""

    uid: str
    title: str
    description: str
    items: tuple[Panel | Row, ...]
    variables: tuple[Variable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    tags: tuple[str, ...] = ("scc",)
    refresh: str = "30s"
    time_from: str = "now-6h"
    links: tuple[str, ...] = ("scc",)  # a drop-down of the dashboards with these tags

    def to_json(self) -> Json:
        """The dashboard JSON (classic model) for file provisioning."""
        return {
            "id": None,
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,  # shared crosshair
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "links": [_link(tag) for tag in self.links],
            "annotations": {"list": [a.to_json() for a in self.annotations]},
            "templating": {"list": [v.to_json() for v in self.variables]},
            "panels": layout(self.items),
        }


def _link(tag: str) -> Json:
    return {
        "type": "dashboards",
        "title": "Dashboards",
        "tags": [tag],
        "asDropdown": True,
        "includeVars": True,
        "keepTime": True,
        "icon": "external link",
        "targetBlank": False,
        "tooltip": "",
        "url": "",
    }


def layout(items: Sequence[Panel | Row]) -> list[Json]:
    """Place panels left to right, wrapping at 24 columns; a row starts a new line."""
    out: list[Json] = []
    x = y = line_height = 0
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += line_height
            out.append(item.to_json(panel_id, y))
            x, y, line_height = 0, y + 1, 0
            continue
        if not 0 < item.width <= GRID_COLUMNS:
            raise ValueError(f"panel {item.title!r}: width {item.width} not in 1..24")
        if x + item.width > GRID_COLUMNS:
            x, y, line_height = 0, y + line_height, 0
        out.append(item.to_json(panel_id, x, y))
        x += item.width
        line_height = max(line_height, item.height)
    return out
