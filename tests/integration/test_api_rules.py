"""Rule routes: listing, site rules written through the API (validated, checked, reloaded),
enable/disable overrides, removal, and dry-runs over readings from a fake InfluxDB reader."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.routes.rules import point_ns
from gateway.api.schemas_rules import duration_text
from tests.integration.test_api_alerts import OpsEnv, make_ops_env, ops
from tests.integration.test_api_common import ApiEnv, env, json_values

__all__ = ["env", "ops"]

SMOKE_HIGH = {
    "title": "烟雾浓度高 / Smoke level high",
    "device_type": "smoke",
    "severity": "major",
    "when": {"field": "smoke", "op": "ge", "value": 0.12},
    "clear": {"field": "smoke", "op": "lt", "value": 0.08},
    "work_order": {"category": "fire", "sla": {"ack": "5m", "resolve": "1h"}},
}


def site_file(ops: OpsEnv, rule_id: str) -> Any:
    """The parsed site file of ``rule_id``."""
    return yaml.safe_load((ops.rules_dir / f"{rule_id}.yaml").read_text(encoding="utf-8"))


# --- reading -------------------------------------------------------------------------------------


def test_rules_are_listed_with_source_and_definition(ops: OpsEnv) -> None:
    rules = ops.client.get("/rules", headers=ops.auth("read_only", "B3-2")).json()
    ids = [rule["id"] for rule in rules]
    assert ids == sorted(ids)
    assert {"smoke.fire_alarm", "bin.overflow", "manhole.offline"} <= set(ids)
    fire = next(rule for rule in rules if rule["id"] == "smoke.fire_alarm")
    assert fire["origin"] == "default" and fire["source"] == "devices/smoke/rules.yaml"
    assert (fire["kind"], fire["trigger"], fire["enabled"]) == ("smoke", "when", True)
    assert fire["has_default"] is True and fire["work_order"] == "fire"
    assert fire["definition"]["work_order"]["sla"] == {"ack": "5m", "resolve": "1h"}
    offline = next(rule for rule in rules if rule["id"] == "smoke.offline")
    assert offline["definition"]["absent"] == "2x heartbeat" and offline["trigger"] == "absent"


def test_rule_filters(ops: OpsEnv) -> None:
    smoke = ops.client.get("/rules?kind=smoke", headers=ops.auth()).json()
    assert smoke and all(rule["kind"] == "smoke" for rule in smoke)
    assert ops.client.get("/rules?enabled=false", headers=ops.auth()).json() == []
    bad = ops.client.get("/rules?kind=lamp", headers=ops.auth())
    assert bad.status_code == 422 and "query.kind: unknown kind 'lamp'" in bad.json()["detail"]


def test_unknown_rule_is_404(ops: OpsEnv) -> None:
    response = ops.client.get("/rules/smoke.nothing", headers=ops.auth())
    assert response.status_code == 404
    assert response.json() == {"detail": "rule 'smoke.nothing' not found"}


@pytest.mark.parametrize("rule_id", ["smoke.fire_alarm", "bin.overflow", "smoke.offline"])
def test_every_definition_can_be_put_back(ops: OpsEnv, rule_id: str) -> None:
    definition = ops.client.get(f"/rules/{rule_id}", headers=ops.auth()).json()["definition"]
    response = ops.client.put(f"/rules/{rule_id}", headers=ops.auth(), json=definition)
    assert response.status_code == 200, response.text
    assert response.json()["definition"] == definition
    assert response.json()["origin"] == "site"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.5, "0.5s"), (90.0, "90s"), (300.0, "5m"), (5400.0, "90m"), (86400.0, "1d")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


# --- writing -------------------------------------------------------------------------------------


def test_put_creates_a_site_rule_that_the_gateway_loads(ops: OpsEnv) -> None:
    response = ops.client.put(
        "/rules/site.smoke_high", headers=ops.auth("integrator"), json=SMOKE_HIGH
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["id"], body["origin"], body["source"]) == (
        "site.smoke_high",
        "site",
        "site.smoke_high.yaml",
    )
    assert body["has_default"] is False
    assert site_file(ops, "site.smoke_high") == {"rules": [{"id": "site.smoke_high", **SMOKE_HIGH}]}
    assert ops.reloads == [True]
    assert ops.stage.ruleset.get("site.smoke_high") is not None  # reloaded: running now
    assert ops.alerts.rules["site.smoke_high"].category == "fire"
    listed = ops.client.get("/rules/site.smoke_high", headers=ops.auth("read_only", "C1"))
    assert listed.json()["title"] == SMOKE_HIGH["title"]
    again = ops.client.put("/rules/site.smoke_high", headers=ops.auth(), json=SMOKE_HIGH)
    assert again.status_code == 200
    assert not list(ops.rules_dir.glob(".*"))  # no temporary file left behind


def test_put_replaces_a_default_and_delete_brings_it_back(ops: OpsEnv) -> None:
    fire = ops.client.get("/rules/smoke.fire_alarm", headers=ops.auth()).json()["definition"]
    changed = {**fire, "severity": "major", "id": "smoke.fire_alarm"}
    response = ops.client.put("/rules/smoke.fire_alarm", headers=ops.auth(), json=changed)
    assert response.status_code == 200
    assert (response.json()["origin"], response.json()["has_default"]) == ("site", True)
    assert ops.stage.ruleset.get("smoke.fire_alarm").severity == "major"  # type: ignore[union-attr]
    assert ops.client.delete("/rules/smoke.fire_alarm", headers=ops.auth()).status_code == 204
    assert not (ops.rules_dir / "smoke.fire_alarm.yaml").exists()
    back = ops.client.get("/rules/smoke.fire_alarm", headers=ops.auth()).json()
    assert (back["origin"], back["severity"]) == ("default", "critical")
    assert len(ops.reloads) == 2


def test_deleting_a_site_only_rule_removes_it(ops: OpsEnv) -> None:
    ops.client.put("/rules/site.smoke_high", headers=ops.auth(), json=SMOKE_HIGH)
    assert ops.client.delete("/rules/site.smoke_high", headers=ops.auth()).status_code == 204
    assert ops.client.get("/rules/site.smoke_high", headers=ops.auth()).status_code == 404


@pytest.mark.parametrize(
    ("path", "change", "fragment", "loc"),
    [
        ("site.x", {"when": {"field": "smoke", "op": "ge", "value": "hot"}},
         "body.when.value: 'hot' is not a number for field smoke", ["body", "when", "value"]),
        ("site.x", {"when": {"field": "smokey", "op": "ge", "value": 1}},
         "body.when.field: 'smokey' is not a field of this device type", ["body", "when", "field"]),
        ("site.x", {"when": {"any": [{"field": "smoke", "op": "ge", "value": 1},
                                     {"field": "smoke", "op": "zz", "value": 1}]}},
         "body.when.any[1].op: Input should be", ["body", "when", "any", 1, "op"]),
        ("site.x", {"severity": "apocalyptic"}, "body.severity: Input should be",
         ["body", "severity"]),
        ("site.x", {"for": 5}, "body.for: 5 is not a duration", ["body", "for"]),
        ("site.x", {"device_type": "lamp"}, "body.device_type: 'lamp' is not a device type",
         ["body", "device_type"]),
        ("site.x", {"when": None}, "body: needs exactly one trigger", ["body"]),
        ("site.x", {"colour": "red"}, "body.colour: unknown key", ["body", "colour"]),
        ("site.x", {"work_order": {"category": "fire", "sla": {"ack": "5 minutes"}}},
         "body.work_order.sla.ack: '5 minutes' is not a duration",
         ["body", "work_order", "sla", "ack"]),
    ],
)  # fmt: skip
def test_put_with_a_bad_part_is_422_naming_it(
    ops: OpsEnv, path: str, change: dict[str, Any], fragment: str, loc: list[Any]
) -> None:
    body = {key: value for key, value in (SMOKE_HIGH | change).items() if value is not None}
    response = ops.client.put(f"/rules/{path}", headers=ops.auth(), json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    assert loc in [error["loc"] for error in response.json()["errors"]]
    assert list(ops.rules_dir.iterdir()) == [] and ops.reloads == []


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/rules/site.x", SMOKE_HIGH | {"id": "site.y"}, "body.id: 'site.y' differs"),
        ("/rules/dry-run", SMOKE_HIGH, "path.rule_id: 'dry-run' is reserved"),
        ("/rules/bad%20id", SMOKE_HIGH, "path.rule_id"),
        ("/rules/.hidden", SMOKE_HIGH, "path.rule_id"),
        ("/rules/site.x", [SMOKE_HIGH], "body: Input should be a valid dictionary"),
    ],
)
def test_put_refuses_bad_ids_and_bodies(ops: OpsEnv, path: str, body: Any, fragment: str) -> None:
    response = ops.client.put(path, headers=ops.auth(), json=body)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


def test_a_rule_held_by_a_hand_written_site_file_is_changed_there(ops: OpsEnv) -> None:
    custom = {"id": "custom.smoke", **SMOKE_HIGH}
    (ops.rules_dir / "custom.yaml").write_text(yaml.safe_dump({"rules": [custom]}), "utf-8")
    ops.stage.reload()
    clash = ops.client.put("/rules/custom.smoke", headers=ops.auth(), json=SMOKE_HIGH)
    assert clash.status_code == 409
    assert (
        "custom.yaml: rule custom.smoke: id also used in custom.smoke.yaml"
        in clash.json()["detail"]
    )
    for action in ("disable", "enable"):
        response = ops.client.post(f"/rules/custom.smoke/{action}", headers=ops.auth())
        assert response.status_code == 409
        assert "defined in site file custom.yaml; change it there" in response.json()["detail"]
    removal = ops.client.delete("/rules/custom.smoke", headers=ops.auth())
    assert removal.status_code == 409
    assert sorted(p.name for p in ops.rules_dir.iterdir()) == ["custom.yaml"]


def test_a_foreign_file_named_like_the_rule_is_not_overwritten(ops: OpsEnv) -> None:
    two = [{"id": "site.x", **SMOKE_HIGH}, {"id": "site.y", **SMOKE_HIGH}]
    (ops.rules_dir / "site.x.yaml").write_text(yaml.safe_dump({"rules": two}), "utf-8")
    response = ops.client.put("/rules/site.x", headers=ops.auth(), json=SMOKE_HIGH)
    assert response.status_code == 409
    assert "site.x.yaml is not one entry for rule site.x" in response.json()["detail"]


# --- enable / disable ----------------------------------------------------------------------------


def test_disable_and_enable_a_default_with_an_override_file(ops: OpsEnv) -> None:
    off = ops.client.post("/rules/bin.nearly_full/disable", headers=ops.auth("integrator"))
    assert off.status_code == 200, off.text
    assert (off.json()["enabled"], off.json()["origin"]) == (False, "site")
    assert site_file(ops, "bin.nearly_full") == {
        "rules": [{"id": "bin.nearly_full", "enabled": False}]
    }
    assert ops.stage.ruleset.get("bin.nearly_full").enabled is False  # type: ignore[union-attr]
    assert [r["id"] for r in ops.client.get("/rules?enabled=false", headers=ops.auth()).json()] == [
        "bin.nearly_full"
    ]
    on = ops.client.post("/rules/bin.nearly_full/enable", headers=ops.auth())
    assert on.json()["enabled"] is True
    assert site_file(ops, "bin.nearly_full")["rules"] == [
        {"id": "bin.nearly_full", "enabled": True}
    ]
    ops.client.post("/rules/bin.nearly_full/disable", headers=ops.auth())
    assert ops.client.delete("/rules/bin.nearly_full", headers=ops.auth()).status_code == 204
    assert not (ops.rules_dir / "bin.nearly_full.yaml").exists()
    back = ops.client.get("/rules/bin.nearly_full", headers=ops.auth()).json()
    assert (back["origin"], back["enabled"]) == ("default", True)


def test_disable_a_site_rule_keeps_its_definition(ops: OpsEnv) -> None:
    ops.client.put("/rules/site.smoke_high", headers=ops.auth(), json=SMOKE_HIGH)
    ops.client.post("/rules/site.smoke_high/disable", headers=ops.auth())
    assert site_file(ops, "site.smoke_high") == {
        "rules": [{"id": "site.smoke_high", **SMOKE_HIGH, "enabled": False}]
    }


@pytest.mark.parametrize(
    ("method", "path", "detail"),
    [
        ("post", "/rules/smoke.nothing/enable", "rule 'smoke.nothing' not found"),
        ("post", "/rules/smoke.nothing/disable", "rule 'smoke.nothing' not found"),
        ("delete", "/rules/smoke.nothing", "rule 'smoke.nothing' not found"),
        ("delete", "/rules/smoke.fire_alarm", "rule 'smoke.fire_alarm' has no site override"),
    ],
)
def test_unknown_rules_and_missing_overrides_are_404(
    ops: OpsEnv, method: str, path: str, detail: str
) -> None:
    response = ops.client.request(method, path, headers=ops.auth())
    assert response.status_code == 404
    assert response.json()["detail"].startswith(detail)


# --- who may change rules ------------------------------------------------------------------------

WRITES = [
    ("put", "/rules/site.smoke_high", SMOKE_HIGH),
    ("post", "/rules/smoke.fire_alarm/disable", None),
    ("post", "/rules/smoke.fire_alarm/enable", None),
    ("delete", "/rules/smoke.fire_alarm", None),
]


@pytest.mark.parametrize(
    ("role", "node", "fragment"),
    [
        ("manager", "ST1", "role 'manager' may not write rules"),
        ("grid_member", "ST1", "role 'grid_member' may not write rules"),
        ("read_only", "ST1", "role 'read_only' may not write rules"),
        ("admin", "C1", "needs a token scoped at the street root"),
        ("integrator", "G1", "needs a token scoped at the street root"),
    ],
)
def test_only_root_admins_and_integrators_change_rules(
    ops: OpsEnv, role: str, node: str, fragment: str
) -> None:
    for method, path, body in WRITES:
        response = ops.client.request(method, path, headers=ops.auth(role, node), json=body)
        assert response.status_code == 403, (method, path)
        assert fragment in response.json()["detail"]
    assert list(ops.rules_dir.iterdir()) == []


def test_rule_routes_without_the_rule_stage_or_a_site_directory(env: ApiEnv) -> None:
    listing = env.client.get("/rules", headers=env.auth())
    assert listing.status_code == 503
    assert listing.json() == {"detail": "rules are not available: this API runs without them"}
    put = env.client.put("/rules/site.x", headers=env.auth(), json=SMOKE_HIGH)
    assert put.status_code == 503
    assert "without a site rules directory" in put.json()["detail"]


def test_a_failing_reload_callback_does_not_fail_the_change(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    def fail(_ops: OpsEnv) -> None:
        raise RuntimeError("loop gone")

    for api in make_ops_env(tmp_path_factory, tmp_path, on_rules_changed=fail):
        response = api.client.put("/rules/site.x", headers=api.auth(), json=SMOKE_HIGH)
        assert response.status_code == 201
        assert (api.rules_dir / "site.x.yaml").exists()


# --- dry-run -------------------------------------------------------------------------------------


class Readings:
    """A fake InfluxDB reader: smoke readings per device as (minutes ago, level); or failing."""

    def __init__(self, series: Mapping[str, Sequence[tuple[float, float]]], fail: bool = False):
        self.series = series
        self.fail = fail
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, device_id: str, kind: str, minutes: int) -> Sequence[Mapping[str, Any]]:
        self.calls.append((device_id, kind, minutes))
        if self.fail:
            raise OSError("connection refused")
        now = datetime.now(UTC)
        return [
            {"time": (now - timedelta(minutes=ago)).isoformat(), "smoke": level, "model": "m"}
            for ago, level in self.series.get(device_id, ())
        ]


SERIES = {
    "smoke-B3-2-101": [(50, 0.01), (40, 0.2), (35, 0.25), (30, 0.02)],
    "smoke-B3-2-102": [(50, 0.01), (20, 0.02)],
    "smoke-B3-2-103": [(5, 0.3)],
}


@pytest.fixture
def reader() -> Readings:
    return Readings(SERIES)


@pytest.fixture
def dry(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, reader: Readings
) -> Iterator[OpsEnv]:
    """The operations API with a fake reader."""
    yield from make_ops_env(tmp_path_factory, tmp_path, influx_reader=reader)


def test_dry_run_reports_what_the_rule_would_have_done_per_device(
    dry: OpsEnv, reader: Readings
) -> None:
    body = {"rule": SMOKE_HIGH, "minutes": 60, "node": "B3-2"}
    response = dry.client.post("/rules/dry-run", headers=dry.auth("read_only", "C1"), json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["rule_id"], result["kind"], result["minutes"]) == ("dry-run", "smoke", 60)
    assert result["devices_evaluated"] == len(reader.calls) > 3  # every smoke device in B3-2
    assert {call[1:] for call in reader.calls} == {("smoke", 60)}
    assert result["readings"] == 7
    by_device = {d["device_id"]: d for d in result["devices"]}
    assert list(by_device) == ["smoke-B3-2-101", "smoke-B3-2-103"]
    first = by_device["smoke-B3-2-101"]
    assert first["readings"] == 4
    assert [(t["state"], t["repeat"]) for t in first["transitions"]] == [
        ("firing", False),
        ("firing", True),
        ("resolved", False),
    ]
    assert first["transitions"][0]["values"] == {"smoke": 0.2}
    assert [t["state"] for t in by_device["smoke-B3-2-103"]["transitions"]] == ["firing"]
    assert dry.client.get("/alerts", headers=dry.auth()).json()["total"] == 0  # nothing stored


def test_dry_run_holds_for_and_fires_absence(dry: OpsEnv) -> None:
    held: dict[str, Any] = {"rule": SMOKE_HIGH | {"for": "3m"}, "device_ids": ["smoke-B3-2-101"]}
    result = dry.client.post("/rules/dry-run", headers=dry.auth(), json=held).json()
    steps = [(t["state"], t["repeat"]) for t in result["devices"][0]["transitions"]]
    assert steps == [  # 0.2 at -40 min pends; by the next reading it has held 5 minutes
        ("pending", False),
        ("firing", False),
        ("firing", True),
        ("resolved", False),
    ]
    silent = {"title": "t", "device_type": "smoke", "severity": "warning", "absent": "15m"}
    body: dict[str, Any] = {"rule": silent, "minutes": 30}
    body["device_ids"] = ["smoke-B3-2-102", "smoke-B3-2-103"]
    result = dry.client.post("/rules/dry-run", headers=dry.auth(), json=body).json()
    states = {d["device_id"]: [t["state"] for t in d["transitions"]] for d in result["devices"]}
    assert states == {
        "smoke-B3-2-102": ["firing"],  # silent for the last 20 minutes
        "smoke-B3-2-103": ["firing", "resolved"],  # silent from the window's start until -5
    }


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"rule": SMOKE_HIGH | {"severity": "x"}}, 422, "body.rule.severity: Input should be"),
        ({"rule": SMOKE_HIGH, "minutes": 0}, 422, "body.minutes"),
        ({"rule": SMOKE_HIGH, "minutes": 5000}, 422, "body.minutes"),
        ({"rule": SMOKE_HIGH}, 422, "1800 smoke devices match; a dry-run reads at most 500"),
        ({"rule": SMOKE_HIGH, "device_ids": ["bin-C1-01"]}, 422, "'bin-C1-01' is not a smoke"),
        ({"rule": SMOKE_HIGH, "device_ids": []}, 422, "body.device_ids"),
        ({"rule": SMOKE_HIGH, "device_ids": ["nope"]}, 404, "device 'nope' not found"),
        ({"rule": SMOKE_HIGH, "node": "NOPE"}, 404, "node 'NOPE' not found"),
        ({"rule": "smoke > 1"}, 422, "body.rule"),
    ],
)
def test_dry_run_refusals(dry: OpsEnv, body: dict[str, Any], status: int, fragment: str) -> None:
    response = dry.client.post("/rules/dry-run", headers=dry.auth(), json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


def test_dry_run_without_a_reader_is_503(ops: OpsEnv) -> None:
    body = {"rule": SMOKE_HIGH, "device_ids": ["smoke-B3-2-101"]}
    response = ops.client.post("/rules/dry-run", headers=ops.auth(), json=body)
    assert response.status_code == 503
    assert "without an InfluxDB reader" in response.json()["detail"]


def test_dry_run_with_a_failing_reader_is_503(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    body = {"rule": SMOKE_HIGH, "device_ids": ["smoke-B3-2-101"]}
    reader = Readings({}, fail=True)
    for api in make_ops_env(tmp_path_factory, tmp_path, influx_reader=reader):
        response = api.client.post("/rules/dry-run", headers=api.auth(), json=body)
        assert response.status_code == 503
        assert response.json() == {"detail": "InfluxDB query failed: connection refused"}


NEW_YEAR_NS = 1_735_689_600 * 10**9  # 2025-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-01T00:00:00Z", NEW_YEAR_NS),
        ("2025-01-01T08:00:00.000000001+08:00", NEW_YEAR_NS),  # InfluxDB's ns digits: µs kept
        ("2025-01-01T00:00:00", NEW_YEAR_NS),  # no zone: UTC, as InfluxDB answers
        (datetime(2025, 1, 1, tzinfo=UTC), NEW_YEAR_NS),
        (NEW_YEAR_NS // 10**9, NEW_YEAR_NS),
        (NEW_YEAR_NS // 10**6, NEW_YEAR_NS),
        (NEW_YEAR_NS // 10**3, NEW_YEAR_NS),
        (NEW_YEAR_NS, NEW_YEAR_NS),
        (float(NEW_YEAR_NS // 10**9), NEW_YEAR_NS),
        (None, None),
        ("yesterday", None),
        (True, None),
        (float("nan"), None),
        ("9999-12-31T00:00:00Z", None),  # beyond the engine's int64 nanoseconds
        ([2025], None),
    ],
)
def test_point_times(value: object, expected: int | None) -> None:
    assert point_ns(value) == expected


# --- no 5xx on any body ------------------------------------------------------------------------

RULE_KEYS = ("id", "title", "device_type", "severity", "when", "absent", "rate", "clear", "for",
             "count", "work_order", "enabled")  # fmt: skip
rule_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={key: json_values for key in RULE_KEYS}),
    st.fixed_dictionaries(
        {k: st.just(v) for k, v in SMOKE_HIGH.items() if k not in {"when", "clear", "work_order"}},
        optional={key: json_values for key in ("when", "clear", "for", "work_order")},
    ),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(["/rules/site.fuzz", "/rules/dry-run"]),
    body=rule_bodies,
    segment=st.text(min_size=1, max_size=60),
)
def test_random_rule_bodies_never_give_5xx(
    dry: OpsEnv, route: str, body: Any, segment: str
) -> None:
    if route == "/rules/dry-run":
        payload: Any = {"rule": body, "device_ids": ["smoke-B3-2-101"]}
        response = dry.client.post(route, headers=dry.auth(), json=payload)
    else:
        response = dry.client.put(route, headers=dry.auth(), json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["detail"], str)
    quoted = urllib.parse.quote(segment, safe="")
    for method, path in (("get", f"/rules/{quoted}"), ("post", f"/rules/{quoted}/disable")):
        assert dry.client.request(method, path, headers=dry.auth()).status_code < 500
