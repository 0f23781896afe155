"""Grafana dashboards, provisioning and compose file; and the fleet snapshots they chart.

The dashboard JSON is checked three ways: it equals what ``grafana.build`` generates; it
passes structural checks of Grafana's classic dashboard model (ids, grid, datasource
references resolving to the provisioned datasource, template variables defined before use);
and it survives a round trip through Grafana's own model of the dashboard schema,
``grafana-foundation-sdk``, without losing or changing a key the schema knows.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from gateway.alerting.alerts import AlertService, Transition
from gateway.core.clock import ManualClock
from gateway.core.config import Settings
from gateway.registry.store import Registry
from gateway.runtime.fleetstats import fleet_lines
from gateway.runtime.schema import make_engine
from gateway.workorders.models import RuleInfo
from grafana import DATASOURCE_UID
from grafana.build import DASHBOARD_DIR, DASHBOARDS, generate, stale, write
from grafana.model import GRID_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "demo_community"
PROVISIONING = ROOT / "grafana" / "provisioning"
BUILTIN_VARIABLES = {"timeFilter", "__interval"}
VARIABLE_RE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def dashboards() -> dict[str, dict[str, Any]]:
    return {name: factory().to_json() for name, factory in DASHBOARDS.items()}


def provisioned_datasource() -> dict[str, Any]:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "influxdb.yaml").read_text())
    [source] = doc["datasources"]
    return dict(source)


def queries(doc: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, InfluxQL, alias) of every query: panel targets, annotations, variables."""
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["query"], target.get("alias", "")
    for annotation in doc["annotations"]["list"]:
        yield f"annotation {annotation['name']!r}", annotation["target"]["query"], ""
    for variable in doc["templating"]["list"]:
        yield f"variable {variable['name']}", variable["query"], ""


def referenced(text: str) -> set[str]:
    return {a or b for a, b in VARIABLE_RE.findall(text)}


# -- generated == committed ----------------------------------------------------------------
def test_committed_dashboards_equal_the_generated_ones() -> None:
    assert stale() == [], "run: python -m grafana.build"
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted(generate())


def test_check_names_a_stale_or_foreign_file(tmp_path: Path) -> None:
    write(tmp_path)
    assert stale(tmp_path) == []
    (tmp_path / "smoke.json").write_text("{}\n")
    (tmp_path / "old.json").write_text("{}\n")
    assert stale(tmp_path) == [
        "smoke.json: differs from the generated dashboard",
        "old.json: no dashboard generates it",
    ]
    write(tmp_path)
    assert stale(tmp_path) == []


def test_a_device_kind_dashboard_file_is_named_after_the_kind() -> None:
    from devices import KINDS

    assert set(KINDS) <= set(DASHBOARDS)


# -- Grafana's classic dashboard model, structurally ------------------------------------
@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_model_is_well_formed(name: str) -> None:
    doc = dashboards()[name]
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "annotations", "time"):
        assert key in doc, key
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", doc["uid"])
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    ids = [panel["id"] for panel in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert pos["x"] >= 0 and pos["w"] >= 1 and pos["h"] >= 1 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= GRID_COLUMNS, f"{panel['title']} leaves the 24 columns"
        cells = {(pos["x"] + i, pos["y"] + j) for i in range(pos["w"]) for j in range(pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] != "row":
            assert panel["type"] in {"timeseries", "stat", "table"}
            assert panel["targets"], f"{panel['title']} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))
            wanted = "table" if panel["type"] == "table" else "time_series"
            assert {t["resultFormat"] for t in panel["targets"]} == {wanted}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_datasource_reference_is_the_provisioned_one(name: str) -> None:
    source = provisioned_datasource()
    assert (source["uid"], source["type"]) == (DATASOURCE_UID, "influxdb")
    expected = {"type": "influxdb", "uid": source["uid"]}
    doc = dashboards()[name]
    refs = [panel["datasource"] for panel in doc["panels"] if panel["type"] != "row"]
    refs += [t["datasource"] for panel in doc["panels"] for t in panel.get("targets", [])]
    refs += [a["datasource"] for a in doc["annotations"]["list"]]
    refs += [v["datasource"] for v in doc["templating"]["list"]]
    assert refs and all(ref == expected for ref in refs)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_variable_used_is_defined_before_use(name: str) -> None:
    doc = dashboards()[name]
    defined = [v["name"] for v in doc["templating"]["list"]]
    for index, variable in enumerate(doc["templating"]["list"]):
        earlier = set(defined[:index])
        assert referenced(variable["query"]) <= earlier, variable["name"]
    for where, query, alias in queries(doc):
        unknown = referenced(query) - set(defined) - BUILTIN_VARIABLES
        assert not unknown, f"{where} uses undefined {unknown}"
        if not where.startswith("variable"):
            assert "$timeFilter" in query, f"{where} is not bounded by the time range"
        # ``$tag_x`` in an alias names a tag the query groups by.
        for tag in re.findall(r"\$tag_(\w+)", alias):
            assert f'"{tag}"' in query.rsplit("GROUP BY", 1)[-1], f"{where}: $tag_{tag}"
    used = {name for _, query, _ in queries(doc) for name in referenced(query)}
    assert set(defined) <= used, "a variable nothing uses"


# -- Grafana's own model of the schema (grafana-foundation-sdk) --------------------------
# Keys the SDK's generic models cannot know: the InfluxDB plugin's annotation fields (the
# SDK has no InfluxDB types), a variable's editor text and the null id of a new dashboard.
PLUGIN_KEYS = re.compile(
    r"^/id$|^/templating/list\[\d+\]/definition$"
    r"|^/annotations/list\[\d+\]/(target/)?(query|queryType|rawQuery|refId|fromAnnotations"
    r"|textColumn|titleColumn|tagsColumn)$"
)


def lost(ours: Any, theirs: Any, path: str = "") -> Iterator[str]:
    """Paths of our JSON the model dropped or changed (keys it adds are defaults)."""
    if isinstance(ours, dict):
        for key, value in ours.items():
            where = f"{path}/{key}"
            if not isinstance(theirs, dict) or key not in theirs:
                if not PLUGIN_KEYS.match(where):
                    yield f"dropped {where}"
            else:
                yield from lost(value, theirs[key], where)
    elif isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            yield f"changed {path}"
            return
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            yield from lost(a, b, f"{path}[{index}]")
    elif ours != theirs and not (isinstance(ours, int | float) and ours == theirs):
        yield f"changed {path}: {ours!r} → {theirs!r}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_survives_grafanas_schema_model(name: str) -> None:
    models = pytest.importorskip("grafana_foundation_sdk.models.dashboard")
    plugins = pytest.importorskip("grafana_foundation_sdk.cog.plugins")
    encoder = pytest.importorskip("grafana_foundation_sdk.cog.encoder")
    plugins.register_default_plugins()
    doc = dashboards()[name]
    model = models.Dashboard.from_json(json.loads(json.dumps(doc)))
    again = json.loads(json.dumps(model, cls=encoder.JSONEncoder))
    assert list(lost(doc, again)) == []


# -- provisioning and compose --------------------------------------------------------------
def test_dashboard_provider_loads_the_generated_folder_in_compose() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "scc.yaml").read_text())
    [entry] = provider["providers"]
    assert entry["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{entry['options']['path']}:ro" in volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


def test_compose_runs_the_four_services_with_valid_gateway_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mosquitto", "influxdb", "grafana", "gateway"} <= set(services)
    assert services["influxdb"]["image"].startswith("influxdb:1.8")
    assert services["gateway"]["build"] == "."
    assert services["gateway"]["command"] == ["python", "-m", "gateway", "run"]
    env = services["gateway"]["environment"]
    assert {key.removeprefix("SCC_").lower() for key in env} <= set(Settings.model_fields)
    settings = Settings.model_validate(
        {key.removeprefix("SCC_").lower(): value for key, value in env.items()}
    )
    assert settings.influx_url == provisioned_datasource()["url"]
    assert settings.influx_database == provisioned_datasource()["jsonData"]["dbName"]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "gateway", "run"]' in dockerfile


# -- fleet snapshots -------------------------------------------------------------------------
RULES = {
    rule.rule_id: rule
    for rule in (
        RuleInfo("smoke.fire_alarm", "火警 / Fire alarm", "critical", "fire", 300, 3600),
        RuleInfo("smoke.offline", "设备离线 / Offline", "warning", "maintenance", 86400, 259200),
        RuleInfo("bin.nearly_full", "垃圾将满 / Bin nearly full", "warning"),
    )
}


@pytest.fixture(scope="module")
def community_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("community") / "community.db"
    engine = make_engine(f"sqlite:///{db}")
    Registry(engine).load_community(FIXTURE)
    engine.dispose()
    return db


@pytest.fixture
def engine(community_db: Path, tmp_path: Path) -> Iterator[Engine]:
    shutil.copy(community_db, tmp_path / "gateway.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    yield engine
    engine.dispose()


def parse(lines: list[str]) -> dict[tuple[str, frozenset[tuple[str, str]]], dict[str, int]]:
    """measurement + tags → integer fields (our lines carry no escaped characters)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, int]] = {}
    for line in lines:
        series, fields, _ = line.split(" ")
        measurement, *tags = series.split(",")
        key = (measurement, frozenset(_pair(t) for t in tags))
        out[key] = {k: int(v.rstrip("i")) for k, v in (f.split("=") for f in fields.split(","))}
    return out


def _pair(tag: str) -> tuple[str, str]:
    key, _, value = tag.partition("=")
    return key, value


def total(parsed: dict[Any, dict[str, int]], measurement: str, field: str, **tags: str) -> int:
    want = set(tags.items())
    return sum(
        values[field]
        for (name, series_tags), values in parsed.items()
        if name == measurement and want <= series_tags
    )


def ns(clock: ManualClock, after_s: float = 0) -> int:
    return int((clock.now() + timedelta(seconds=after_s)).timestamp() * 1e9)


def test_fleet_counts_devices_by_place_and_kind(engine: Engine) -> None:
    parsed = parse(fleet_lines(engine, 1_700_000_000_000_000_000))
    assert total(parsed, "fleet", "devices") == 2000
    assert total(parsed, "fleet", "devices", kind="smoke") == 1800
    assert total(parsed, "fleet", "devices", kind="bin", compound="C2") == 25
    assert total(parsed, "fleet", "offline") == total(parsed, "fleet", "alerts_firing") == 0
    street_and_community = {("street", "ST1"), ("community", "SQ1")}
    assert all(street_and_community <= tags for (m, tags) in parsed if m == "fleet")
    # Zeros for every community × kind × severity and community × level × category.
    assert total(parsed, "alert_stats", "firing") == 0
    assert len([k for k in parsed if k[0] == "alert_stats"]) == 4 * 4
    assert total(parsed, "workorder_stats", "open") == 0


def test_alerts_and_orders_are_counted_where_they_belong(engine: Engine) -> None:
    clock = ManualClock()
    alerts = AlertService(engine, clock, RULES)

    def fire(rule: str, device: str, kind: str, state: Any = "firing") -> None:
        severity = RULES[rule].severity
        alerts.apply([Transition(rule, device, kind, state, severity, ns(clock), {})])

    fire("smoke.fire_alarm", "smoke-B3-2-1001", "smoke")  # opens a fire order for grid G1
    fire("smoke.offline", "smoke-B3-2-1002", "smoke")  # opens a maintenance order
    fire("bin.nearly_full", "bin-C2-07", "bin")
    [bin_alert] = alerts.search(rule_id="bin.nearly_full")
    alerts.acknowledge(bin_alert.id, "刘娜")
    clock.advance(301)
    escalated = alerts.orders.check_sla()  # nobody acknowledged the fire within 5 minutes
    assert [e["type"] for e in escalated] == ["workorder.escalated"]

    parsed = parse(fleet_lines(engine, ns(clock)))
    assert total(parsed, "fleet", "offline") == 1
    assert total(parsed, "fleet", "offline", compound="C1", kind="smoke") == 1
    assert total(parsed, "fleet", "alerts_firing", kind="smoke") == 2
    assert total(parsed, "fleet", "alerts_firing", kind="bin", compound="C2") == 1
    assert total(parsed, "alert_stats", "firing", severity="critical", kind="smoke") == 1
    assert total(parsed, "alert_stats", "firing", community="SQ1") == 3
    assert total(parsed, "alert_stats", "unacknowledged") == 2  # the bin alert was acked
    assert total(parsed, "alert_stats", "pending") == 0
    assert total(parsed, "workorder_stats", "open") == 2
    # The fire order now belongs to the community (escalated), overdue only later.
    assert total(parsed, "workorder_stats", "escalated", level="community", category="fire") == 1
    assert total(parsed, "workorder_stats", "overdue") == 0
    later = parse(fleet_lines(engine, ns(clock, after_s=2 * 86400)))
    assert total(later, "workorder_stats", "overdue") == 2  # both past their deadlines
    assert total(later, "workorder_stats", "overdue", category="maintenance") == 1


def test_pending_and_unacknowledged_alerts(engine: Engine) -> None:
    clock = ManualClock()
    alerts = AlertService(engine, clock, RULES)
    pending = Transition("bin.nearly_full", "bin-C1-01", "bin", "pending", "warning", ns(clock))
    alerts.apply([pending])
    parsed = parse(fleet_lines(engine, ns(clock)))
    assert total(parsed, "alert_stats", "pending", kind="bin", severity="warning") == 1
    assert total(parsed, "alert_stats", "unacknowledged") == 0  # pending is not yet news
    firing = Transition("bin.nearly_full", "bin-C1-01", "bin", "firing", "warning", ns(clock))
    alerts.apply([firing])
    parsed = parse(fleet_lines(engine, ns(clock)))
    assert total(parsed, "alert_stats", "unacknowledged", kind="bin") == 1
    assert total(parsed, "alert_stats", "pending") == 0
