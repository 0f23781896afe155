"""Work-order routes: listing and filters, detail with occurrences and audit trail, manual
reports, the lifecycle with sensor-verified closing, comments, ratings, escalation scope."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_api_alerts import SMOKE_C1, SMOKE_C2, OpsEnv, ops
from tests.integration.test_api_common import ApiEnv, env, json_values

__all__ = ["env", "ops"]

REPORT = {
    "title": "电梯异响 / Lift makes noise",
    "description": "building 1, lift A",
    "node": "B1-1",
    "category": "facility",
    "severity": "major",
    "photo_url": "https://photos.example/lift.jpg",
}


def sensor_order(ops: OpsEnv, device: str = SMOKE_C1) -> int:
    """A fire on ``device``: its alert opens a work order for the grid team; returns its id."""
    ops.smoke(device)
    orders = ops.client.get("/work-orders", headers=ops.auth(), params={"device_id": device})
    [order] = orders.json()["items"]
    return int(order["id"])


def move(ops: OpsEnv, order_id: int, role: str = "admin", **body: Any) -> Any:
    """POST a transition as ``role`` at the root; returns the response."""
    return ops.client.post(
        f"/work-orders/{order_id}/transitions", headers=ops.auth(role), json=body
    )


# --- reading -------------------------------------------------------------------------------------


def test_sensor_order_detail_has_occurrences_and_audit_trail(ops: OpsEnv) -> None:
    order_id = sensor_order(ops)
    ops.clock.advance(30)
    ops.smoke(SMOKE_C1, level=0.4)  # a repeat appends an occurrence
    body = ops.client.get(f"/work-orders/{order_id}", headers=ops.auth("manager", "C1")).json()
    assert (body["state"], body["source"], body["category"]) == ("open", "sensor", "fire")
    assert (body["node"], body["origin"]) == ("G1", "B3-2")
    assert body["path"] == ["ST1", "SQ1", "G1", "C1", "B3", "B3-2"]
    assert body["device_id"] == SMOKE_C1 and body["rule_id"] == "smoke.fire_alarm"
    assert body["sensor_state"] == "fault" and body["overdue"] is False
    assert body["ack_due"] == "2025-01-01T08:05:00Z"
    assert body["occurrence_count"] == 2
    assert [o["values"]["smoke"] for o in body["occurrences"]] == [0.3, 0.4]
    [opened] = body["history"]
    assert (opened["actor"], opened["action"], opened["to_state"]) == ("sensor", "open", "open")


def test_unknown_order_is_404(ops: OpsEnv) -> None:
    response = ops.client.get("/work-orders/31337", headers=ops.auth())
    assert response.status_code == 404
    assert response.json() == {"detail": "work order 31337 not found"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["manual", SMOKE_C2, SMOKE_C1]),
        ({"state": "open"}, ["manual", SMOKE_C2]),
        ({"state": "dispatched"}, [SMOKE_C1]),
        ({"category": "fire"}, [SMOKE_C2, SMOKE_C1]),
        ({"category": "facility"}, ["manual"]),
        ({"device_id": SMOKE_C2}, [SMOKE_C2]),
        ({"node": "C1"}, ["manual", SMOKE_C1]),
        ({"node": "B6"}, [SMOKE_C2]),
        ({"node": "G1"}, ["manual", SMOKE_C2, SMOKE_C1]),
        ({"limit": "2", "offset": "1"}, [SMOKE_C2, SMOKE_C1]),
    ],
)
def test_order_filters(ops: OpsEnv, query: dict[str, str], expected: list[str]) -> None:
    first = sensor_order(ops, SMOKE_C1)
    move(ops, first, assignee=ops.staff_id("G1", "grid_member"), action="dispatch")
    sensor_order(ops, SMOKE_C2)
    assert ops.client.post("/work-orders", headers=ops.auth(), json=REPORT).status_code == 201
    page = ops.client.get("/work-orders", headers=ops.auth(), params=query).json()
    assert [item["device_id"] or "manual" for item in page["items"]] == expected
    assert page["total"] == (3 if "limit" in query else len(expected))


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ("state=broken", 422, "query.state"),
        ("category=Fire!", 422, "query.category"),
        ("overdue=perhaps", 422, "query.overdue"),
        ("limit=5000", 422, "query.limit"),
        ("node=NOPE", 404, "node 'NOPE' not found"),
    ],
)
def test_bad_order_filters(ops: OpsEnv, query: str, status: int, fragment: str) -> None:
    response = ops.client.get(f"/work-orders?{query}", headers=ops.auth())
    assert response.status_code == status
    assert fragment in response.json()["detail"]


def test_an_escalated_order_stays_visible_to_its_origin_and_shows_to_its_new_owner(
    ops: OpsEnv,
) -> None:
    order_id = sensor_order(ops)
    ops.clock.advance(301)  # nobody acknowledged within 5 minutes
    overdue = ops.client.get("/work-orders?overdue=true", headers=ops.auth()).json()
    assert [item["id"] for item in overdue["items"]] == [order_id]
    assert overdue["items"][0]["overdue"] is True
    ops.orders.check_sla()
    body = ops.client.get(f"/work-orders/{order_id}", headers=ops.auth()).json()
    assert (body["node"], body["escalation_level"], body["overdue"]) == ("SQ1", 1, False)
    assert body["history"][-1]["action"] == "escalate"
    assert ops.client.get("/work-orders?overdue=true", headers=ops.auth()).json()["total"] == 0
    assert ops.client.get("/work-orders?overdue=false", headers=ops.auth()).json()["total"] == 1
    for scope in ("G1", "C1", "B3-2", "SQ1"):
        response = ops.client.get(f"/work-orders/{order_id}", headers=ops.auth("read_only", scope))
        assert response.status_code == 200, scope
        listed = ops.client.get("/work-orders", headers=ops.auth("read_only", scope)).json()
        assert [item["id"] for item in listed["items"]] == [order_id], scope
    for scope in ("C2", "G2", "B3-1"):
        response = ops.client.get(f"/work-orders/{order_id}", headers=ops.auth("read_only", scope))
        assert response.status_code == 404, scope
        assert ops.client.get("/work-orders", headers=ops.auth("read_only", scope)).json() == {
            "items": [],
            "total": 0,
            "limit": 100,
            "offset": 0,
        }


# --- manual reports ------------------------------------------------------------------------------


def test_manual_report_is_routed_and_audited(ops: OpsEnv) -> None:
    response = ops.client.post("/work-orders", headers=ops.auth("manager", "C1"), json=REPORT)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["source"], body["state"], body["category"]) == ("manual", "open", "facility")
    assert (body["node"], body["origin"]) == ("C1", "B1-1")  # the property company of C1
    assert body["reporter"] == "test manager" and body["severity"] == "major"
    assert body["sensor_state"] is None and body["occurrences"] == []
    [opened] = body["history"]
    assert opened["photo_url"] == REPORT["photo_url"] and opened["note"] == REPORT["description"]


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        ({"title": ""}, 422, "body.title"),
        ({"title": "x" * 257}, 422, "body.title"),
        ({"category": "Lifts"}, 422, "body.category"),
        ({"severity": "urgent"}, 422, "body.severity"),
        ({"photo_url": "file:///etc/passwd"}, 422, "body.photo_url"),
        ({"node": "NOPE"}, 404, "node 'NOPE' not found"),
        ({"colour": "red"}, 422, "body.colour: Extra inputs are not permitted"),
    ],
)
def test_manual_report_refusals(
    ops: OpsEnv, change: dict[str, Any], status: int, fragment: str
) -> None:
    response = ops.client.post("/work-orders", headers=ops.auth(), json=REPORT | change)
    assert response.status_code == status
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize("role", ["read_only", "integrator"])
def test_writing_orders_needs_the_permission(ops: OpsEnv, role: str) -> None:
    order_id = sensor_order(ops)
    requests = [
        ("/work-orders", REPORT),
        (f"/work-orders/{order_id}/transitions", {"action": "start"}),
        (f"/work-orders/{order_id}/comments", {"note": "x"}),
        (f"/work-orders/{order_id}/rating", {"score": 3}),
    ]
    for path, body in requests:
        response = ops.client.post(path, headers=ops.auth(role), json=body)
        assert response.status_code == 403, path
        assert response.json() == {"detail": f"role {role!r} may not write work orders"}


# --- the lifecycle -------------------------------------------------------------------------------


def test_sensor_verified_closing_refuses_then_closes_when_the_smoke_clears(ops: OpsEnv) -> None:
    order_id = sensor_order(ops)
    member = ops.staff_id("G1", "grid_member")
    assert move(ops, order_id, "grid_member", action="dispatch", assignee=member).status_code == 200
    assert move(ops, order_id, action="start", note="on site").json()["state"] == "in_progress"
    refused = move(ops, order_id, action="resolve", note="looks fine")
    assert refused.status_code == 409
    assert "still reports the fault" in refused.json()["detail"]
    assert "override_reason" in refused.json()["detail"]
    ops.clock.advance(120)
    ops.smoke(SMOKE_C1, "resolved", level=0.01)
    body = ops.client.get(f"/work-orders/{order_id}", headers=ops.auth()).json()
    assert body["sensor_state"] == "ok" and body["sensor_normal_since"] == "2025-01-01T08:02:00Z"
    assert "sensor reports normal since" in body["history"][-1]["note"]
    resolved = move(ops, order_id, action="resolve", photo_url="https://p.example/ok.jpg")
    assert resolved.json()["state"] == "resolved"
    closed = move(ops, order_id, action="close").json()
    assert closed["state"] == "closed" and closed["closed_at"] == "2025-01-01T08:02:00Z"
    actions = [(e["action"], e["actor"]) for e in closed["history"]]
    assert actions == [
        ("open", "sensor"),
        ("dispatch", "test grid_member"),
        ("start", "test admin"),
        ("sensor_ok", "sensor"),
        ("resolve", "test admin"),
        ("close", "test admin"),
    ]
    assert closed["assignee"] == member


def test_resolve_with_an_override_reason_is_audited(ops: OpsEnv) -> None:
    order_id = sensor_order(ops)
    move(ops, order_id, action="dispatch", assignee=ops.staff_id("G1", "grid_member"))
    move(ops, order_id, action="start")
    reason = "detector fouled by cooking steam"
    response = move(ops, order_id, action="resolve", override_reason=reason)
    assert response.status_code == 200
    assert response.json()["state"] == "resolved"
    assert response.json()["history"][-1]["override_reason"] == reason


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"action": "start"}, 409, "it is open; dispatch it first"),
        ({"action": "close"}, 409, "it is open; dispatch it first"),
        ({"action": "reopen"}, 409, "it is already open"),
        ({"action": "dispatch"}, 422, "body.assignee: dispatch needs the staff entry id"),
        ({"action": "dispatch", "assignee": 987654}, 404, "staff entry 987654 not found"),
        ({"action": "explode"}, 422, "body.action"),
        ({"action": "resolve", "override_reason": ""}, 422, "body.override_reason"),
        ({}, 422, "body.action: Field required"),
    ],
)
def test_refused_transitions(ops: OpsEnv, body: dict[str, Any], status: int, fragment: str) -> None:
    order_id = sensor_order(ops)
    response = move(ops, order_id, **body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    assert ops.client.get(f"/work-orders/{order_id}", headers=ops.auth()).json()["state"] == "open"


def test_dispatch_to_staff_outside_the_scope_is_like_unknown_staff(ops: OpsEnv) -> None:
    order_id = sensor_order(ops)
    grid_member = ops.staff_id("G1", "grid_member")  # above C1: outside a C1 token's scope
    response = ops.client.post(
        f"/work-orders/{order_id}/transitions",
        headers=ops.auth("manager", "C1"),
        json={"action": "dispatch", "assignee": grid_member},
    )
    assert response.status_code == 404
    assert response.json() == {"detail": f"staff entry {grid_member} not found"}


def test_comments_and_ratings(ops: OpsEnv) -> None:
    created = ops.client.post("/work-orders", headers=ops.auth("manager", "C1"), json=REPORT)
    order_id = created.json()["id"]
    comment = {"note": "parts ordered", "photo_url": "https://p.example/part.jpg"}
    response = ops.client.post(
        f"/work-orders/{order_id}/comments", headers=ops.auth("manager", "C1"), json=comment
    )
    assert response.status_code == 201
    last = response.json()["history"][-1]
    assert (last["action"], last["note"], last["actor"]) == (
        "comment",
        "parts ordered",
        "test manager",
    )
    early = ops.client.post(
        f"/work-orders/{order_id}/rating", headers=ops.auth(), json={"score": 4}
    )
    assert early.status_code == 409 and "not closed" in early.json()["detail"]
    manager = ops.staff_id("C1", "property_manager")
    for action in ("dispatch", "start", "resolve", "close"):
        assert move(ops, order_id, action=action, assignee=manager).status_code == 200, action
    rating = {"score": 5, "comment": "quick and tidy"}
    rated = ops.client.post(f"/work-orders/{order_id}/rating", headers=ops.auth(), json=rating)
    assert rated.status_code == 200
    assert (rated.json()["rating"], rated.json()["rating_comment"]) == (5, "quick and tidy")
    assert rated.json()["rated_by"] == "test admin"


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("comments", {"note": ""}, "body.note"),
        ("comments", {}, "body.note: Field required"),
        ("rating", {"score": 0}, "body.score"),
        ("rating", {"score": 6}, "body.score"),
        ("rating", {"score": "five"}, "body.score"),
        ("rating", {"score": 3, "comment": "x" * 2001}, "body.comment"),
    ],
)
def test_bad_comments_and_ratings(
    ops: OpsEnv, path: str, body: dict[str, Any], fragment: str
) -> None:
    order_id = sensor_order(ops)
    response = ops.client.post(f"/work-orders/{order_id}/{path}", headers=ops.auth(), json=body)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


def test_order_routes_are_503_without_the_work_order_service(env: ApiEnv) -> None:
    for method, path in (("get", "/work-orders"), ("get", "/work-orders/1")):
        response = env.client.request(method, path, headers=env.auth())
        assert response.status_code == 503
        assert "work orders are not available" in response.json()["detail"]


# --- no 5xx on any body ------------------------------------------------------------------------

ORDER_KEYS = ("title", "description", "node", "category", "severity", "photo_url", "action",
              "note", "assignee", "override_reason", "score", "comment")  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(["", "/{id}/transitions", "/{id}/comments", "/{id}/rating"]),
    body=st.one_of(
        json_values, st.fixed_dictionaries({}, optional={k: json_values for k in ORDER_KEYS})
    ),
    segment=st.text(min_size=1, max_size=60),
)
def test_random_order_bodies_never_give_5xx(
    ops: OpsEnv, route: str, body: Any, segment: str
) -> None:
    if not ops.client.get("/work-orders", headers=ops.auth()).json()["items"]:
        sensor_order(ops)
    path = "/work-orders" + route.replace("{id}", "1")
    response = ops.client.post(path, headers=ops.auth(), json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["detail"], str)
    quoted = urllib.parse.quote(segment, safe="")
    for path in (f"/work-orders/{quoted}", f"/alerts/{quoted}", f"/alerts/{quoted}/ack"):
        method = "post" if path.endswith("/ack") else "get"
        assert ops.client.request(method, path, headers=ops.auth()).status_code < 500
