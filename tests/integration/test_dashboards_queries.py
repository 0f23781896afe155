"""Every query of every dashboard, run against a real InfluxDB fed by a simulated community.

A gateway (in a thread) ingests ~90 s of a community's traffic, compressed: the fleet
planner's messages with a fire, a bin overflow, a manhole cover opened and two throws, plus
a share of bad payloads, published through a real Mosquitto. The fleet snapshots are
written as the gateway will write them. Then each panel, annotation and variable query is
run the way Grafana runs it: ``$timeFilter`` and ``$__interval`` expanded, the template
variables set once to All and once to the first real value their own queries return.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.config import Settings
from gateway.registry.store import Registry
from gateway.runtime.fleetstats import fleet_lines
from gateway.runtime.schema import make_engine
from gateway.runtime.service import Gateway
from gateway.services.base import ManagedProcess
from gateway.storage.influx import V1Target, V1Writer
from grafana.build import DASHBOARDS
from simulators.community import load_devices
from simulators.fleet import Incident, plan

from .gwtools import publish_all, running, wait_for

pytestmark = pytest.mark.integration

COMMUNITY = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"
SIMULATED_S = 90.0
INTERVAL = "2s"  # what Grafana would put for $__interval on a narrow time range
TIME_FILTER = "time > now() - 1h"  # the simulated timestamps are "now"-based
# Compound C1 (buildings B1-B5) has every incident; C2 (B6-B10) only normal traffic.
INCIDENTS = (
    Incident("fire", "smoke-B1-1-101", 20),
    Incident("overflow", "bin-C1-02", 30),
    Incident("opened", "mh-C1-02", 40),
    Incident("throw", "cam-B1-east", 50),
    Incident("throw", "cam-B1-west", 60),
)
INCIDENT_RULES = ("smoke.fire_alarm", "bin.overflow", "manhole.opened", "throw_camera.throw")
SUBSET = re.compile(
    r"^(smoke-B1-1-\d+|smoke-B6-1-\d+|cam-B1-(east|west)|cam-B6-east"
    r"|bin-C1-0[1-5]|bin-C2-0[1-3]|mh-C1-0[1-4]|mh-C2-0[12])$"
)


def subset_csv(path: Path) -> list[str]:
    """Write the chosen devices of the demo community to ``path``; return their ids."""
    lines = (COMMUNITY / "devices.csv").read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines[1:] if SUBSET.match(line.split(",", 1)[0])]
    path.write_text("\n".join([lines[0], *kept]) + "\n", encoding="utf-8")
    return [line.split(",", 1)[0] for line in kept]


def query(url: str, database: str, influxql: str) -> list[dict[str, Any]]:
    """The series of one InfluxQL statement (AssertionError on an InfluxDB error)."""
    params = urllib.parse.urlencode({"db": database, "q": influxql, "epoch": "ms"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as response:
        result = json.load(response)["results"][0]
    if "error" in result:
        raise AssertionError(f"{influxql}\n→ {result['error']}")
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def expand(influxql: str, values: Mapping[str, str]) -> str:
    """Grafana's substitutions: time range, interval and template variables (as regex)."""
    text = influxql.replace("$timeFilter", TIME_FILTER).replace("$__interval", INTERVAL)
    for name in sorted(values, key=len, reverse=True):
        text = text.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return text


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def shape_problem(kind: str, series: list[dict[str, Any]]) -> str | None:
    """Why the result does not fit the panel (None when it does)."""
    rows = [row for s in series for row in s.get("values", [])]
    if not rows:
        return "no rows"
    if kind in ("timeseries", "stat"):
        if any(s["columns"][0] != "time" for s in series):
            return "a series without a time column"
        if not any(is_number(v) for row in rows for v in row[1:]):
            return "no numeric value"
    return None


def variable_values(url: str, database: str, influxql: str) -> list[str]:
    """The values a SHOW TAG VALUES variable query offers, sorted as Grafana does."""
    found = {row[1] for s in query(url, database, influxql) for row in s["values"]}
    return sorted(found)


def choose(
    url: str, database: str, dashboard: dict[str, Any], mode: str
) -> tuple[dict[str, str], list[str]]:
    """Variable values for ``mode`` all (``.*``) or first (each query's first value)."""
    values: dict[str, str] = {}
    problems = []
    for variable in dashboard["templating"]["list"]:
        offered = variable_values(url, database, expand(variable["query"], values))
        if not offered:
            problems.append(f"variable {variable['name']} ({mode}): no values")
            values[variable["name"]] = ".*"
            continue
        values[variable["name"]] = ".*" if mode == "all" else re.escape(offered[0])
    return values, problems


def dashboard_problems(url: str, database: str, name: str, mode: str) -> list[str]:
    """Every query of one dashboard that fails or returns data the panel cannot show."""
    dashboard = DASHBOARDS[name]().to_json()
    values, problems = choose(url, database, dashboard, mode)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            series = query(url, database, expand(target["query"], values))
            why = shape_problem(panel["type"], series)
            if why:
                problems.append(f"{name} ({mode}) {panel['title']!r} {target['refId']}: {why}")
    for annotation in dashboard["annotations"]["list"]:
        series = query(url, database, expand(annotation["target"]["query"], values))
        columns = set(series[0]["columns"]) if series else set()
        wanted = {annotation["textColumn"], annotation["titleColumn"], "time"}
        if not series or not wanted <= columns:
            problems.append(f"{name} ({mode}) annotation {annotation['name']!r}: {columns}")
    return problems


def has_alert(gateway: Gateway, rule_id: str) -> Callable[[], bool]:
    return lambda: bool(gateway.rules.alerts.search(rule_id=rule_id))


@pytest.fixture
def community(
    tmp_path: Path, mosquitto: ManagedProcess, influxdb: ManagedProcess, influx_db: str
) -> Iterator[Gateway]:
    """A gateway that has ingested the simulated community and written fleet snapshots."""
    registry = Registry(make_engine(f"sqlite:///{tmp_path / 'gateway.db'}"))
    registry.load_hierarchy(yaml.safe_load((COMMUNITY / "hierarchy.yaml").read_text()))
    ids = set(subset_csv(tmp_path / "devices.csv"))
    registry.load_devices_csv(tmp_path / "devices.csv")
    settings = Settings(
        name=f"dash-{uuid.uuid4().hex[:8]}", state_dir=tmp_path, mqtt_port=mosquitto.port,
        influx_url=influxdb.url, influx_database=influx_db, stats_interval_s=0.5,
        linger_ms=5, rules_tick_s=0.2, sla_check_s=0.5,
    )  # fmt: skip
    rows = [row for row in load_devices(COMMUNITY / "devices.csv") if row.device_id in ids]
    start = time.time() - SIMULATED_S - 5
    planned = plan(rows, 7, start, start + SIMULATED_S, 10.0, INCIDENTS, bad_rate=0.05)
    gateway = Gateway(settings)
    with running(gateway):
        publish_all(mosquitto.port, [(f"scc/v1/{d}/{k}", p) for _, d, k, p in planned])
        for rule in INCIDENT_RULES:  # a throw alert fires and resolves with the next frame
            wait_for(has_alert(gateway, rule), 20, f"{rule} alert")
        writer = V1Writer(V1Target(url=influxdb.url, database=influx_db))
        try:
            for age_s in (4, 2, 0):  # three snapshots, as every stats interval would write
                lines = fleet_lines(gateway.engine, time.time_ns() - age_s * 1_000_000_000)
                writer.write("\n".join(lines).encode())
        finally:
            writer.close()
        wait_for(gateway.drainer.drained, 20, "spool drained")
        yield gateway


def test_every_panel_query_returns_data_of_its_shape(
    community: Gateway, influxdb: ManagedProcess, influx_db: str
) -> None:
    problems: list[str] = []

    def all_fine() -> bool:
        # Rates need two stats points per bucket: poll until the gateway has written them.
        problems[:] = [
            problem
            for name in DASHBOARDS
            for mode in ("all", "first")
            for problem in dashboard_problems(influxdb.url, influx_db, name, mode)
        ]
        return not problems

    deadline = time.monotonic() + 30
    while not all_fine() and time.monotonic() < deadline:
        time.sleep(1)
    assert problems == []
    # "first" really selected the compound with the incidents, and the snapshots count them.
    values, _ = choose(influxdb.url, influx_db, DASHBOARDS["fleet"]().to_json(), "first")
    assert (values["street"], values["community"], values["compound"]) == ("ST1", "SQ1", "C1")
    firing = query(
        influxdb.url,
        influx_db,
        'SELECT sum("v") FROM (SELECT last("firing") AS "v" FROM "alert_stats" '
        f"WHERE {TIME_FILTER} GROUP BY *)",
    )
    assert firing[0]["values"][0][1] == len(community.rules.alerts.search(state="firing")) >= 3
