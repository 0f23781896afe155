"""Scope: a token of compound C1 asks for things under compound C2 on every route.

Each answer must be the 404 that a thing that does not exist gets (same detail text), so a
token learns nothing about other compounds; list routes and the event stream return only
in-scope items. The token is an admin scoped at C1, so no 403 can hide a missing scope
check; the one 403 it gets is for changing rules, which are gateway-wide (a root token's
business). The route table below must cover every operation in the OpenAPI document: a new
route fails this test until its scope behaviour is listed here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_api_alerts import SMOKE_C2, OpsEnv, make_ops_env
from tests.integration.test_api_devices import FakeProvisioner, Reader
from tests.integration.test_api_events import read_frames
from tests.integration.test_api_rules import SMOKE_HIGH

C2_DEVICE = "smoke-B6-1-102"
C1_DEVICE = "smoke-B1-1-101"
STAFF = "{staff}"  # replaced by the id of a staff entry at C2
GONE = "{gone}"  # replaced by an id no staff entry, alert or work order has
ALERT = "{alert}"  # the alert of a fire at C2
ORDER = "{order}"  # the work order of that fire (owned by G1, which is outside C1 too)
REPORT = {"title": "x", "node": "B6"}

# (method, path, json body, the same request for something that does not exist)
SCOPED: list[tuple[str, str, Any, str]] = [
    ("get", f"/devices/{C2_DEVICE}", None, "/devices/no-such-device"),
    ("patch", f"/devices/{C2_DEVICE}", {"location": "x"}, "/devices/no-such-device"),
    ("delete", f"/devices/{C2_DEVICE}", None, "/devices/no-such-device"),
    ("post", f"/devices/{C2_DEVICE}/move", {"node": "B1"}, "/devices/no-such-device/move"),
    ("get", f"/devices/{C2_DEVICE}/dead-letters", None, "/devices/no-such-device/dead-letters"),
    ("get", f"/devices/{C2_DEVICE}/readings", None, "/devices/no-such-device/readings"),
    ("get", "/nodes/C2", None, "/nodes/NOPE"),
    ("get", "/nodes/G1", None, "/nodes/NOPE"),  # an ancestor is outside the scope too
    ("get", "/nodes/B6-1", None, "/nodes/NOPE"),
    ("get", "/nodes/C2/staff", None, "/nodes/NOPE/staff"),
    ("post", "/nodes/C2/staff", {"name": "x", "role": "grid_member"}, "/nodes/NOPE/staff"),
    ("patch", f"/nodes/C2/staff/{STAFF}", {"name": "x"}, f"/nodes/NOPE/staff/{STAFF}"),
    ("patch", f"/nodes/C1/staff/{STAFF}", {"name": "x"}, f"/nodes/C1/staff/{GONE}"),
    ("delete", f"/nodes/C2/staff/{STAFF}", None, f"/nodes/NOPE/staff/{STAFF}"),
    ("delete", f"/nodes/C1/staff/{STAFF}", None, f"/nodes/C1/staff/{GONE}"),
    ("get", f"/alerts/{ALERT}", None, f"/alerts/{GONE}"),
    ("post", f"/alerts/{ALERT}/ack", None, f"/alerts/{GONE}/ack"),
    ("get", f"/work-orders/{ORDER}", None, f"/work-orders/{GONE}"),
    (
        "post",
        f"/work-orders/{ORDER}/transitions",
        {"action": "reopen"},
        f"/work-orders/{GONE}/transitions",
    ),
    ("post", f"/work-orders/{ORDER}/comments", {"note": "x"}, f"/work-orders/{GONE}/comments"),
    ("post", f"/work-orders/{ORDER}/rating", {"score": 5}, f"/work-orders/{GONE}/rating"),
]
# Requests whose *body* names a C2 node: answered like an unknown node.
BODY_REFERENCES: list[tuple[str, str, Any, Any]] = [
    (
        "post",
        "/devices",
        {"device_id": "n1", "kind": "smoke", "node": "B6"},
        {"device_id": "n1", "kind": "smoke", "node": "NOPE"},
    ),
    ("post", f"/devices/{C1_DEVICE}/move", {"node": "C2"}, {"node": "NOPE"}),
    (
        "post",
        "/devices/import",
        [{"device_id": "n1", "kind": "smoke", "node": "B6"}],
        [{"device_id": "n1", "kind": "smoke", "node": "NOPE"}],
    ),
    ("get", "/devices?node=C2", None, "/devices?node=NOPE"),
    ("post", "/work-orders", REPORT, REPORT | {"node": "NOPE"}),
    ("get", "/alerts?node=C2", None, "/alerts?node=NOPE"),
    ("get", "/work-orders?node=C2", None, "/work-orders?node=NOPE"),
    (
        "post",
        "/rules/dry-run",
        {"rule": SMOKE_HIGH, "node": "C2"},
        {"rule": SMOKE_HIGH, "node": "NOPE"},
    ),
]
# Requests whose body names another C2 thing: the same answer as for one that does not exist.
C1_ORDER = "{c1order}"  # replaced by the id of a work order at C1
BODY_THINGS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        f"/work-orders/{C1_ORDER}/transitions",
        {"action": "dispatch", "assignee": STAFF},
        {"action": "dispatch", "assignee": GONE},
    ),
    (
        "/rules/dry-run",
        {"rule": SMOKE_HIGH, "device_ids": [C2_DEVICE]},
        {"rule": SMOKE_HIGH, "device_ids": ["smoke-nowhere"]},
    ),
]
# Rule definitions are gateway-wide: any token reads them, only a root token changes them.
GLOBAL_WRITES: list[tuple[str, str, Any]] = [
    ("put", "/rules/site.x", SMOKE_HIGH),
    ("post", "/rules/smoke.fire_alarm/enable", None),
    ("post", "/rules/smoke.fire_alarm/disable", None),
    ("delete", "/rules/smoke.fire_alarm", None),
]
# Not about any place in the hierarchy (catalogue, identity, health, gateway-wide metrics).
UNSCOPED = {
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/auth/whoami"),
    ("get", "/device-types"),
    ("get", "/device-types/{kind}"),
    ("get", "/rules"),
    ("get", "/rules/{rule_id}"),
}
LISTS = {("get", "/devices"), ("get", "/nodes"), ("get", "/alerts"), ("get", "/work-orders")}
STREAMS = {("get", "/events/stream")}


@pytest.fixture
def api(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[OpsEnv]:
    """Everything configured, so no 503 can stand in for a missing scope check; a fire at
    C2 has an alert and a work order."""
    for ops in make_ops_env(
        tmp_path_factory, tmp_path, provisioner=FakeProvisioner(), influx_reader=Reader()
    ):
        ops.smoke(SMOKE_C2)
        yield ops


_IDS = {
    "devices": "{device_id}",
    "nodes": "{code}",
    "alerts": "{alert_id}",
    "work-orders": "{order_id}",
    "rules": "{rule_id}",
}


def _template(path: str) -> str:
    """``/nodes/C2/staff/5`` → ``/nodes/{code}/staff/{staff_id}`` (the OpenAPI form)."""
    parts = path.split("?", maxsplit=1)[0].strip("/").split("/")
    if len(parts) > 1 and parts[1] not in {"import", "dry-run", "stream"}:
        parts[1] = _IDS[parts[0]]
    if len(parts) > 3:
        parts[3] = "{staff_id}"
    return "/" + "/".join(parts)


def test_the_table_covers_every_route(api: OpsEnv) -> None:
    documented = {
        (method, path) for path, item in api.api.app.openapi()["paths"].items() for method in item
    }
    listed = SCOPED + BODY_REFERENCES
    covered = {(m, _template(p)) for m, p, _, _ in listed} | UNSCOPED | LISTS | STREAMS
    covered |= {(m, _template(p)) for m, p, _ in GLOBAL_WRITES}
    covered |= {("post", _template(p)) for p, _, _ in BODY_THINGS}
    assert documented <= covered, f"routes without a scope check here: {documented - covered}"


def _staff_ids(api: OpsEnv) -> dict[str, str]:
    c2 = api.client.get("/nodes/C2/staff", headers=api.auth()).json()
    [alert] = api.client.get("/alerts", headers=api.auth()).json()["items"]
    [order] = api.client.get("/work-orders", headers=api.auth()).json()["items"]
    return {
        STAFF: str(c2[0]["id"]),
        GONE: "987654",
        ALERT: str(alert["id"]),
        ORDER: str(order["id"]),
    }


def _shape(detail: str) -> str:
    """The detail with names and numbers blanked out."""
    return re.sub(r"'[^']*'|\d+", "_", detail)


def _fill(path: str, ids: dict[str, str]) -> str:
    for key, value in ids.items():
        path = path.replace(key, value)
    return path


@pytest.mark.parametrize(("method", "path", "body", "missing"), SCOPED)
def test_out_of_scope_is_a_404_like_a_missing_thing(
    api: OpsEnv, method: str, path: str, body: Any, missing: str
) -> None:
    ids = _staff_ids(api)
    headers = api.auth("admin", "C1")
    answer = api.client.request(method, _fill(path, ids), headers=headers, json=body)
    absent = api.client.request(method, _fill(missing, ids), headers=headers, json=body)
    assert answer.status_code == 404, answer.text
    assert absent.status_code == 404, absent.text
    assert _shape(answer.json()["detail"]) == _shape(absent.json()["detail"])
    assert api.client.get(f"/devices/{C2_DEVICE}", headers=api.auth()).json()["location"] == "102"
    alert = api.client.get(_fill(f"/alerts/{ALERT}", ids), headers=api.auth()).json()
    order = api.client.get(_fill(f"/work-orders/{ORDER}", ids), headers=api.auth()).json()
    assert alert["acked_by"] is None and order["acked_at"] is None
    assert (order["state"], order["rating"], len(order["history"])) == ("open", None, 1)


@pytest.mark.parametrize(("method", "path", "body", "unknown"), BODY_REFERENCES)
def test_naming_an_out_of_scope_node_is_like_naming_an_unknown_one(
    api: OpsEnv, method: str, path: str, body: Any, unknown: Any
) -> None:
    headers = api.auth("admin", "C1")
    if method == "get":
        answer = api.client.get(path, headers=headers)
        absent = api.client.get(unknown, headers=headers)
    else:
        answer = api.client.request(method, path, headers=headers, json=body)
        absent = api.client.request(method, path, headers=headers, json=unknown)
    assert answer.status_code in {404, 422}
    assert answer.status_code == absent.status_code
    assert answer.text.replace("B6", "X").replace("C2", "X") == absent.text.replace("NOPE", "X")


@pytest.mark.parametrize(("path", "body", "unknown"), BODY_THINGS)
def test_naming_an_out_of_scope_thing_is_like_naming_an_unknown_one(
    api: OpsEnv, path: str, body: dict[str, Any], unknown: dict[str, Any]
) -> None:
    ids = _staff_ids(api)
    report = api.client.post("/work-orders", headers=api.auth(), json={"title": "x", "node": "B1"})
    ids[C1_ORDER] = str(report.json()["id"])  # an order the C1 token sees

    def filled(value: Any) -> Any:
        return int(ids[value]) if isinstance(value, str) and value in {STAFF, GONE} else value

    headers = api.auth("admin", "C1")
    answer = api.client.post(_fill(path, ids), headers=headers, json=_map(body, filled))
    absent = api.client.post(_fill(path, ids), headers=headers, json=_map(unknown, filled))
    assert answer.status_code == absent.status_code == 404, answer.text
    assert _shape(answer.json()["detail"]) == _shape(absent.json()["detail"])


def _map(body: dict[str, Any], change: Any) -> dict[str, Any]:
    return {key: change(value) for key, value in body.items()}


@pytest.mark.parametrize(("method", "path", "body"), GLOBAL_WRITES)
def test_changing_rules_needs_a_root_token(api: OpsEnv, method: str, path: str, body: Any) -> None:
    answer = api.client.request(method, path, headers=api.auth("admin", "C1"), json=body)
    assert answer.status_code == 403
    assert "needs a token scoped at the street root" in answer.json()["detail"]
    assert list(api.rules_dir.iterdir()) == []


def test_the_event_stream_holds_only_in_scope_events(api: OpsEnv) -> None:
    with api.client.stream("GET", "/events/stream", headers=api.auth("admin", "C1")) as response:
        api.hub.publish({"type": "test.c2", "path": "/ST1/SQ1/G1/C2/B6/"})
        api.hub.publish({"type": "test.c1", "path": "/ST1/SQ1/G1/C1/B1/"})
        assert [frame["event"] for frame in read_frames(response)] == ["test.c1"]


def test_lists_hold_only_in_scope_items(api: OpsEnv) -> None:
    headers = api.auth("read_only", "C1")
    assert api.client.get("/alerts", headers=headers).json()["total"] == 0
    assert api.client.get("/work-orders", headers=headers).json()["total"] == 0
    assert api.client.get("/alerts", headers=api.auth("read_only", "C2")).json()["total"] == 1
    page = api.client.get("/devices?limit=1000", headers=headers).json()
    assert page["total"] == 500
    assert all("C1" in item["path"] for item in page["items"])
    tree = api.client.get("/nodes", headers=headers).json()
    assert tree["code"] == "C1"
    staff_c1 = api.client.get("/nodes/C1/staff", headers=headers).json()
    assert all(person["node"] == "C1" for person in staff_c1)


def test_unscoped_routes_answer_a_compound_token(api: OpsEnv) -> None:
    headers = api.auth("admin", "C1")
    statuses = {
        path: api.client.get(
            path.replace("{kind}", "smoke").replace("{rule_id}", "smoke.fire_alarm"),
            headers=headers,
        ).status_code
        for _, path in sorted(UNSCOPED)
    }
    assert statuses == {
        "/auth/whoami": 200,
        "/device-types": 200,
        "/device-types/{kind}": 200,
        "/health": 200,
        "/health/ready": 200,
        "/metrics": 403,  # gateway-wide figures need a root token
        "/rules": 200,
        "/rules/{rule_id}": 200,
    }
