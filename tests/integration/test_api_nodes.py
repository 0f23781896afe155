"""Hierarchy nodes and staff routes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_api_common import ApiEnv, env

__all__ = ["env"]


def _codes(tree: dict[str, Any]) -> list[str]:
    return [tree["code"], *(code for child in tree["children"] for code in _codes(child))]


def test_tree_of_a_root_token_is_the_whole_community(env: ApiEnv) -> None:
    tree = env.client.get("/nodes", headers=env.auth("read_only")).json()
    assert tree["code"] == "ST1" and tree["level"] == "street"
    codes = _codes(tree)
    assert len(codes) == 68 and {"C1", "C4", "B20-2"} <= set(codes)


def test_tree_of_a_compound_token_is_its_compound(env: ApiEnv) -> None:
    tree = env.client.get("/nodes", headers=env.auth("manager", "C1")).json()
    assert tree["code"] == "C1"
    assert [child["code"] for child in tree["children"]] == ["B1", "B2", "B3", "B4", "B5"]
    assert "C2" not in _codes(tree) and len(_codes(tree)) == 16


def test_node_detail(env: ApiEnv) -> None:
    body = env.client.get("/nodes/B1", headers=env.auth()).json()
    assert [n["code"] for n in body["path"]] == ["ST1", "SQ1", "G1", "C1"]
    assert [n["code"] for n in body["children"]] == ["B1-1", "B1-2"]
    assert body["level"] == "building" and body["attributes"]["floors"] == 16


def test_unknown_node_is_404(env: ApiEnv) -> None:
    response = env.client.get("/nodes/ZZ", headers=env.auth())
    assert response.status_code == 404
    assert response.json() == {"detail": "node 'ZZ' not found"}


def test_staff_list(env: ApiEnv) -> None:
    staff = env.client.get("/nodes/G1/staff", headers=env.auth()).json()
    assert [person["role"] for person in staff] == ["grid_head", "grid_member", "grid_member"]
    assert all(person["node"] == "G1" for person in staff)


def test_staff_create_update_delete(env: ApiEnv) -> None:
    headers = env.auth("manager", "C1")
    new = {"name": "王芳", "role": "property_manager", "email": "wf@example.org"}
    created = env.client.post("/nodes/B2/staff", headers=headers, json=new)
    assert created.status_code == 201, created.text
    staff_id = created.json()["id"]
    assert created.json()["node"] == "B2" and created.json()["phone"] is None
    patched = env.client.patch(
        f"/nodes/B2/staff/{staff_id}", headers=headers, json={"phone": "+86 10 5555 0000"}
    )
    assert patched.json()["phone"] == "+86 10 5555 0000" and patched.json()["name"] == "王芳"
    cleared = env.client.patch(f"/nodes/B2/staff/{staff_id}", headers=headers, json={"email": None})
    assert cleared.json()["email"] is None
    wrong_node = env.client.delete(f"/nodes/B3/staff/{staff_id}", headers=headers)
    assert wrong_node.status_code == 404
    assert env.client.delete(f"/nodes/B2/staff/{staff_id}", headers=headers).status_code == 204
    names = [p["name"] for p in env.client.get("/nodes/B2/staff", headers=headers).json()]
    assert "王芳" not in names
    again = env.client.delete(f"/nodes/B2/staff/{staff_id}", headers=headers)
    assert again.status_code == 404
    assert again.json() == {"detail": f"staff entry {staff_id} not found at node 'B2'"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "x", "role": "Boss Man"}, "body.role"),
        ({"name": "", "role": "grid_member"}, "body.name"),
        ({"name": "x", "role": "grid_member", "email": "nope"}, "body.email"),
        ({"role": "grid_member"}, "body.name: Field required"),
        ({"name": "x", "role": "grid_member", "age": 3}, "body.age"),
    ],
)
def test_staff_create_refusals(env: ApiEnv, body: dict[str, Any], fragment: str) -> None:
    response = env.client.post("/nodes/C1/staff", headers=env.auth(), json=body)
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    ("role", "status"), [("manager", 201), ("integrator", 403), ("read_only", 403)]
)
def test_staff_write_needs_the_permission(env: ApiEnv, role: str, status: int) -> None:
    body = {"name": "x", "role": "property_manager"}
    response = env.client.post("/nodes/C1/staff", headers=env.auth(role, "C1"), json=body)
    assert response.status_code == status
