"""Who may attach which staff role where (issue 14, 12).

A role that owns work orders takes them for the subtree it is attached to, so it is granted
only by a token entitled at the role's level: a compound manager who put a ``grid_head`` on
a building took that building's fire orders away from the grid team. The rule
(:func:`gateway.workorders.routing.grant_problem`): a role sits at its own level or below, and a
token grants roles of its own level or below.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.workorders.routing import ROLE_LEVELS
from tests.integration.test_api_alerts import SMOKE_C1, OpsEnv, ops
from tests.integration.test_api_common import ApiEnv, env

__all__ = ["env", "ops"]

# (token role, token scope, node, staff role, status)
GRANTS = [
    # the report: a compound manager and the grid team's roles, anywhere in its compound
    ("manager", "C1", "B1", "grid_head", 403),
    ("manager", "C1", "B1", "grid_member", 403),
    ("manager", "C1", "B1-1", "grid_member", 403),
    ("manager", "C1", "C1", "grid_head", 403),
    ("manager", "C1", "B3", "community_secretary", 403),
    ("manager", "C1", "B3", "street_officer", 403),
    # what a compound manager may do
    ("manager", "C1", "C1", "property_manager", 201),
    ("manager", "C1", "B1", "property_manager", 201),
    ("manager", "C1", "B1", "building_head", 201),
    ("manager", "C1", "B1-1", "unit_head", 201),
    ("manager", "C1", "C1", "building_head", 422),  # above its own level
    # a building's manager: only the volunteers of its building
    ("manager", "B1", "B1", "building_head", 201),
    ("manager", "B1", "B1-1", "unit_head", 201),
    ("manager", "B1", "B1", "property_manager", 403),
    # a grid's manager owns the grid team, anywhere in the grid
    ("manager", "G1", "G1", "grid_head", 201),
    ("manager", "G1", "B1", "grid_member", 201),
    ("manager", "G1", "G1", "community_secretary", 403),
    # admins follow the same rule: scope decides, not the role name
    ("admin", "C1", "B1", "grid_head", 403),
    ("admin", "ST1", "B1", "grid_head", 201),
    ("admin", "ST1", "SQ1", "grid_head", 422),
    ("admin", "ST1", "ST1", "street_officer", 201),
]


@pytest.mark.parametrize(("role", "scope", "node", "staff_role", "status"), GRANTS)
def test_who_may_attach_which_role(
    env: ApiEnv, role: str, scope: str, node: str, staff_role: str, status: int
) -> None:
    body = {"name": "新人", "role": staff_role, "email": "new@example.org"}
    response = env.client.post(f"/nodes/{node}/staff", headers=env.auth(role, scope), json=body)
    assert response.status_code == status, response.text
    names = [p["name"] for p in env.client.get(f"/nodes/{node}/staff", headers=env.auth()).json()]
    assert ("新人" in names) is (status == 201)
    if status == 403:
        detail = response.json()["detail"]
        assert staff_role in detail and f"{ROLE_LEVELS[staff_role]} node or above" in detail
    if status == 422:
        assert "body.role" in response.json()["detail"]


def test_the_refusal_names_the_orders_the_role_would_take(env: ApiEnv) -> None:
    body = {"name": "x", "role": "grid_head"}
    response = env.client.post("/nodes/B1/staff", headers=env.auth("manager", "C1"), json=body)
    detail = response.json()["detail"]
    assert "fire" in detail and "compound" in detail and "grid" in detail


def test_unknown_roles_are_refused_with_the_list(env: ApiEnv) -> None:
    body = {"name": "x", "role": "grid_boss"}
    response = env.client.post("/nodes/C1/staff", headers=env.auth(), json=body)
    assert response.status_code == 422
    assert "unknown staff role" in response.json()["detail"]
    assert "grid_head" in response.json()["detail"]


def _grid_head_at_b1(env: ApiEnv) -> int:
    """A grid head at B1 put there by a root admin (entitled)."""
    body = {"name": "网格长", "role": "grid_head", "email": "gh@example.org"}
    response = env.client.post("/nodes/B1/staff", headers=env.auth(), json=body)
    assert response.status_code == 201
    staff_id: int = response.json()["id"]
    return staff_id


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("patch", {"email": "attacker@example.org"}),  # would redirect fire notifications
        ("patch", {"phone": "+86 10 0000 0000"}),
        ("patch", {"role": "building_head"}),
        ("delete", None),
    ],
)
def test_a_routing_role_above_the_token_cannot_be_changed_or_removed(
    env: ApiEnv, method: str, body: dict[str, Any] | None
) -> None:
    staff_id = _grid_head_at_b1(env)
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    response = env.client.request(
        method.upper(), f"/nodes/B1/staff/{staff_id}", headers=env.auth("manager", "C1"), **kwargs
    )
    assert response.status_code == 403, response.text
    entry = next(
        p
        for p in env.client.get("/nodes/B1/staff", headers=env.auth()).json()
        if p["id"] == staff_id
    )
    assert entry["email"] == "gh@example.org" and entry["role"] == "grid_head"


def test_a_role_cannot_be_raised_above_the_token(env: ApiEnv) -> None:
    headers = env.auth("manager", "C1")
    made = env.client.post(
        "/nodes/B1/staff", headers=headers, json={"name": "p", "role": "property_manager"}
    )
    assert made.status_code == 201
    staff_id = made.json()["id"]
    raised = env.client.patch(
        f"/nodes/B1/staff/{staff_id}", headers=headers, json={"role": "grid_head"}
    )
    assert raised.status_code == 403
    renamed = env.client.patch(f"/nodes/B1/staff/{staff_id}", headers=headers, json={"name": "q"})
    assert renamed.status_code == 200 and renamed.json()["role"] == "property_manager"


def test_fire_orders_stay_with_the_grid_team_after_the_attempt(ops: OpsEnv) -> None:
    headers = ops.auth("manager", "C1")
    for node in ("B3", "B3-2", "C1"):
        for role in ("grid_head", "grid_member"):
            body = {"name": "x", "role": role}
            assert (
                ops.client.post(f"/nodes/{node}/staff", headers=headers, json=body).status_code
                == 403
            )
    ops.smoke(SMOKE_C1)  # B3-2 → B3 → C1 → G1
    orders = ops.client.get("/work-orders", headers=ops.auth()).json()["items"]
    fire = [o for o in orders if o["device_id"] == SMOKE_C1]
    assert len(fire) == 1 and fire[0]["node"] == "G1", fire
