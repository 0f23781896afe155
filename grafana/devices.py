"""One dashboard per device kind, over the kind's own measurement (same name as the kind).

Fields are those of each kind's field table (``devices/<kind>/model.py``); tags are the
device id, model and the hierarchy codes the gateway adds from the registry.
"""

# Dashboard queries are InfluxQL text built from constants, never from user input.

from __future__ import annotations

from grafana.common import (
    PLACE_VARIABLES,
    PLACES,
    alerts_table,
    by_time,
    firing_alerts,
    match,
    where,
)
from grafana.model import Dashboard, Panel, Query, Threshold

PLACE = match(*PLACES)


def _series(
    measurement: str, select: str, *group: str, condition: str = "", fill: str = "none"
) -> str:
    """``SELECT <select> FROM measurement WHERE places [AND condition] GROUP BY time, …``."""
    grouping = by_time(*group, fill=fill)
    return f'SELECT {select} FROM "{measurement}" {where(PLACE, condition)} {grouping}'


def _kind_dashboard(kind: str, title: str, description: str, items: tuple[Panel, ...]) -> Dashboard:
    return Dashboard(
        uid=f"scc-{kind.replace('_', '-')}",
        title=title,
        description=description,
        items=items,
        variables=PLACE_VARIABLES,
        annotations=(firing_alerts(kind),),
        tags=("scc", kind),
    )


def smoke() -> Dashboard:
    """Smoke detectors: smoke and heat levels by building, alarms, weakest batteries."""
    top = (
        'SELECT top("smoke", "device_id", 10) AS "smoke", "building", "unit", "state" '
        f'FROM "smoke" {where(PLACE)}'
    )
    alarms = _series(
        "smoke", 'count("smoke")', "building", condition="\"state\" = 'alarm'", fill="0"
    )
    return _kind_dashboard(
        "smoke",
        "SCC · Smoke detectors 烟感",
        "Smoke obscuration and temperature by building, detectors in alarm, batteries.",
        (
            Panel(
                "timeseries",
                "Smoke obscuration, highest per building",
                (Query(_series("smoke", 'max("smoke")', "building"), alias="$tag_building"),),
                unit="suffix: dB/m",
                thresholds=(Threshold(0.15, "red"),),
                description="The alarm threshold of the default fire rule is 0.15 dB/m.",
            ),
            Panel(
                "timeseries",
                "Temperature, highest per building",
                (
                    Query(
                        _series("smoke", 'max("temperature")', "building"),
                        alias="$tag_building",
                    ),
                ),
                unit="celsius",
                thresholds=(Threshold(57, "red"),),
            ),
            Panel(
                "timeseries",
                "Readings in alarm state by building",
                (Query(alarms, alias="$tag_building"),),
                draw="bars",
                description="Messages whose state is alarm: a fire, or a detector to check.",
            ),
            Panel(
                "table",
                "Highest smoke readings (top 10 detectors)",
                (Query(top, table=True),),
                sort_by="smoke",
            ),
            Panel(
                "timeseries",
                "Battery, lowest per building",
                (Query(_series("smoke", 'min("battery")', "building"), alias="$tag_building"),),
                unit="percent",
                thresholds=(Threshold(20, "red"),),
            ),
            alerts_table("smoke", "Smoke alerts", width=12),
        ),
    )


def bin_dashboard() -> Dashboard:
    """Bins: fill by compound, the bins closest to overflow, bin temperature (fire)."""
    last_fill = (
        f'SELECT last("fill") AS "fill" FROM "bin" {where(PLACE)} GROUP BY "device_id", "compound"'
    )
    over = 'SELECT count("fill") AS "bins" FROM ({}) WHERE "fill" >= {}'.format
    return _kind_dashboard(
        "bin",
        "SCC · Bin fill level 垃圾满溢",
        "Fill level by compound, the bins closest to overflow, temperature in the bins.",
        (
            Panel(
                "stat",
                "Bins at least 80 % full",
                (Query(over(last_fill, 80)),),
                width=6,
                height=6,
                thresholds=(Threshold(1, "orange"),),
            ),
            Panel(
                "stat",
                "Bins overflowing (95 % and more)",
                (Query(over(last_fill, 95)),),
                width=6,
                height=6,
                thresholds=(Threshold(1, "red"),),
            ),
            Panel(
                "table",
                "Bins closest to overflow (top 10 by last fill)",
                (
                    Query(
                        f'SELECT top("fill", "device_id", 10) AS "fill", "compound" '
                        f"FROM ({last_fill})",
                        table=True,
                    ),
                ),
                height=12,
                unit="percent",
                sort_by="fill",
            ),
            Panel(
                "timeseries",
                "Fill level by compound (mean)",
                (Query(_series("bin", 'mean("fill")', "compound"), alias="$tag_compound"),),
                unit="percent",
            ),
            Panel(
                "timeseries",
                "Fullest bin per compound",
                (Query(_series("bin", 'max("fill")', "compound"), alias="$tag_compound"),),
                unit="percent",
                thresholds=(Threshold(80, "orange"), Threshold(95, "red")),
            ),
            Panel(
                "timeseries",
                "Temperature in the bins, hottest per compound",
                (Query(_series("bin", 'max("temperature")', "compound"), alias="$tag_compound"),),
                unit="celsius",
                thresholds=(Threshold(60, "red"),),
                description="A sharp rise means fire; the default rule fires at 60 °C.",
            ),
            alerts_table("bin", "Bin alerts", width=12),
        ),
    )


def manhole() -> Dashboard:
    """Manhole covers: tilt, water level and gap to the cover, gas, covers opened."""
    top = (
        'SELECT top("tilt", "device_id", 10) AS "tilt", "compound", "state" '
        f'FROM "manhole" {where(PLACE)}'
    )
    return _kind_dashboard(
        "manhole",
        "SCC · Manhole covers 智能井盖",
        "Cover tilt, water level and gap to the cover, gas, covers opened or tilted.",
        (
            Panel(
                "timeseries",
                "Cover tilt, largest per compound",
                (Query(_series("manhole", 'max("tilt")', "compound"), alias="$tag_compound"),),
                unit="degree",
                thresholds=(Threshold(15, "red"),),
            ),
            Panel(
                "table",
                "Most tilted covers (top 10)",
                (Query(top, table=True),),
                unit="degree",
                sort_by="tilt",
            ),
            Panel(
                "timeseries",
                "Water level, highest per compound",
                (
                    Query(
                        _series("manhole", 'max("water_level")', "compound"),
                        alias="$tag_compound",
                    ),
                ),
                unit="suffix: cm",
                description="Water height above the well bottom.",
            ),
            Panel(
                "timeseries",
                "Water gap to the cover, smallest per compound",
                (
                    Query(
                        _series("manhole", 'min("water_gap")', "compound"),
                        alias="$tag_compound",
                    ),
                ),
                unit="suffix: cm",
                thresholds=(Threshold(30, "orange"),),
                description="Cover to water surface; the default rule warns at 30 cm.",
            ),
            Panel(
                "timeseries",
                "Gas, highest per compound",
                (
                    Query(
                        _series("manhole", 'max("h2s")', "compound"),
                        alias="H₂S ppm $tag_compound",
                    ),
                    Query(
                        _series("manhole", 'max("ch4")', "compound"),
                        alias="CH₄ %LEL $tag_compound",
                    ),
                ),
            ),
            alerts_table("manhole", "Manhole alerts", width=12),
        ),
    )


def throw_camera() -> Dashboard:
    """Throw cameras: throws by building and floor, camera heartbeats."""
    throw = "\"event\" = 'throw'"
    throws = (
        'SELECT "floor_estimate", "floor_low", "floor_high", "confidence", "object_size", '
        '"building", "facade", "device_id", "snapshot_url" '
        f'FROM "throw_camera" {where(PLACE, throw)} ORDER BY time DESC LIMIT 100'
    )
    floors = (
        f'SELECT "floor_estimate" FROM "throw_camera" {where(PLACE, throw)} GROUP BY "building"'
    )
    heartbeats = _series(
        "throw_camera", 'count("event")', "building", condition="\"event\" = 'heartbeat'", fill="0"
    )
    return _kind_dashboard(
        "throw_camera",
        "SCC · Throw cameras 高空抛物",
        "Objects thrown from height by building and floor, camera health.",
        (
            Panel(
                "timeseries",
                "Throw events by building",
                (
                    Query(
                        _series(
                            "throw_camera",
                            'count("floor_estimate")',
                            "building",
                            condition=throw,
                            fill="0",
                        ),
                        alias="$tag_building",
                    ),
                ),
                draw="bars",
            ),
            Panel(
                "timeseries",
                "Estimated floor of each throw, by building",
                (Query(floors, alias="$tag_building"),),
                draw="points",
                decimals=0,
            ),
            Panel(
                "table",
                "Throws by building and floor (newest first)",
                (Query(throws, table=True),),
                width=24,
            ),
            Panel(
                "timeseries",
                "Camera heartbeats by building",
                (Query(heartbeats, alias="$tag_building"),),
                draw="bars",
                description="A building whose bars stop has a camera down.",
            ),
            alerts_table("throw_camera", "Throw camera alerts", width=12),
        ),
    )
