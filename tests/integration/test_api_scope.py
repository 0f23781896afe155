"""Scope: a token of compound C1 asks for things under compound C2 on every route.

Each answer must be the 404 that a thing that does not exist gets (same detail text), so a
token learns nothing about other compounds; list routes return only in-scope items. The
token is an admin scoped at C1, so no 403 can hide a missing scope check. The route table
below must cover every operation in the OpenAPI document: a new route fails this test
until its scope behaviour is listed here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_api_common import ApiEnv, make_env
from tests.integration.test_api_devices import FakeProvisioner, Reader

C2_DEVICE = "smoke-B6-1-102"
C1_DEVICE = "smoke-B1-1-101"
STAFF = "{staff}"  # replaced by the id of a staff entry at C2
GONE = "{gone}"  # replaced by an id no staff entry has

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
]
# Not about any place in the hierarchy (catalogue, identity, health, gateway-wide metrics).
UNSCOPED = {
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/auth/whoami"),
    ("get", "/device-types"),
    ("get", "/device-types/{kind}"),
}
LISTS = {("get", "/devices"), ("get", "/nodes")}


@pytest.fixture
def api(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[ApiEnv]:
    """Everything configured, so no 503 can stand in for a missing scope check."""
    yield from make_env(
        tmp_path_factory, tmp_path, provisioner=FakeProvisioner(), influx_reader=Reader()
    )


def _template(path: str) -> str:
    """``/nodes/C2/staff/5`` → ``/nodes/{code}/staff/{staff_id}`` (the OpenAPI form)."""
    parts = path.split("?", maxsplit=1)[0].strip("/").split("/")
    if len(parts) > 1 and parts[1] != "import":
        parts[1] = {"devices": "{device_id}", "nodes": "{code}"}[parts[0]]
    if len(parts) > 3:
        parts[3] = "{staff_id}"
    return "/" + "/".join(parts)


def test_the_table_covers_every_route(api: ApiEnv) -> None:
    documented = {
        (method, path) for path, item in api.app.openapi()["paths"].items() for method in item
    }
    covered = {(m, _template(p)) for m, p, _, _ in SCOPED + BODY_REFERENCES} | UNSCOPED | LISTS
    assert documented <= covered, f"routes without a scope check here: {documented - covered}"


def _staff_ids(api: ApiEnv) -> dict[str, str]:
    c2 = api.client.get("/nodes/C2/staff", headers=api.auth()).json()
    return {STAFF: str(c2[0]["id"]), GONE: "987654"}


def _shape(detail: str) -> str:
    """The detail with names and numbers blanked out."""
    return re.sub(r"'[^']*'|\d+", "_", detail)


def _fill(path: str, ids: dict[str, str]) -> str:
    for key, value in ids.items():
        path = path.replace(key, value)
    return path


@pytest.mark.parametrize(("method", "path", "body", "missing"), SCOPED)
def test_out_of_scope_is_a_404_like_a_missing_thing(
    api: ApiEnv, method: str, path: str, body: Any, missing: str
) -> None:
    ids = _staff_ids(api)
    headers = api.auth("admin", "C1")
    answer = api.client.request(method, _fill(path, ids), headers=headers, json=body)
    absent = api.client.request(method, _fill(missing, ids), headers=headers, json=body)
    assert answer.status_code == 404, answer.text
    assert absent.status_code == 404, absent.text
    assert _shape(answer.json()["detail"]) == _shape(absent.json()["detail"])
    assert api.client.get(f"/devices/{C2_DEVICE}", headers=api.auth()).json()["location"] == "102"


@pytest.mark.parametrize(("method", "path", "body", "unknown"), BODY_REFERENCES)
def test_naming_an_out_of_scope_node_is_like_naming_an_unknown_one(
    api: ApiEnv, method: str, path: str, body: Any, unknown: Any
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


def test_lists_hold_only_in_scope_items(api: ApiEnv) -> None:
    headers = api.auth("read_only", "C1")
    page = api.client.get("/devices?limit=1000", headers=headers).json()
    assert page["total"] == 500
    assert all("C1" in item["path"] for item in page["items"])
    tree = api.client.get("/nodes", headers=headers).json()
    assert tree["code"] == "C1"
    staff_c1 = api.client.get("/nodes/C1/staff", headers=headers).json()
    assert all(person["node"] == "C1" for person in staff_c1)


def test_unscoped_routes_answer_a_compound_token(api: ApiEnv) -> None:
    headers = api.auth("admin", "C1")
    statuses = {
        path: api.client.get(path.replace("{kind}", "smoke"), headers=headers).status_code
        for _, path in sorted(UNSCOPED)
    }
    assert statuses == {
        "/auth/whoami": 200,
        "/device-types": 200,
        "/device-types/{kind}": 200,
        "/health": 200,
        "/health/ready": 200,
        "/metrics": 403,  # gateway-wide figures need a root token
    }
