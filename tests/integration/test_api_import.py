"""Bulk import: CSV and JSON bodies, all or nothing, per-row errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.provisioning.dynsec import DynsecError
from tests.integration.test_api_common import ApiEnv, env, make_env
from tests.integration.test_api_devices import FakeProvisioner

__all__ = ["env"]

HEADER = "device_id,kind,model,codec,node,location,params,installed_at\n"
CSV = {"content-type": "text/csv"}
GOOD_CSV = (
    HEADER
    + "imp-1,smoke,JTY,json,B1-1,1101,floor=11,2025-01-01\n"
    + "imp-2,bin,EM310-UDL,em310-udl,C1,east,depth_mm=1200,\n"
    + "imp-3,manhole,,,C1,,,\n"
)


def _post(
    api: ApiEnv, body: str | bytes, headers: dict[str, str], role: str = "admin", node: str = "ST1"
) -> Any:
    content = body.encode() if isinstance(body, str) else body
    return api.client.post(
        "/devices/import", headers={**api.auth(role, node), **headers}, content=content
    )


def _total(api: ApiEnv) -> int:
    return int(api.client.get("/devices", headers=api.auth()).json()["total"])


def test_csv_import(env: ApiEnv) -> None:
    response = _post(env, "\ufeff" + GOOD_CSV, CSV)  # with the BOM Excel writes
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["imported"] == 3
    devices = {item["device"]["device_id"]: item["device"] for item in body["items"]}
    assert devices["imp-2"]["params"] == {"depth_mm": "1200"}
    assert devices["imp-3"]["model"] == "generic" and devices["imp-3"]["codec"] == "json"
    assert _total(env) == 2003


def test_json_import(env: ApiEnv) -> None:
    rows = [
        {"device_id": "imp-j1", "kind": "smoke", "node": "B2"},
        {"device_id": "imp-j2", "kind": "smoke", "node": "B2", "params": {"floor": "3"}},
    ]
    response = env.client.post("/devices/import", headers=env.auth(), json=rows)
    assert response.status_code == 201
    assert [i["device"]["device_id"] for i in response.json()["items"]] == ["imp-j1", "imp-j2"]


def test_import_with_errors_imports_nothing_and_lists_every_problem(env: ApiEnv) -> None:
    body = (
        HEADER
        + "imp-1,smoke,,,B1-1,,,\n"
        + "imp-2,lamp,,,B1-1,,,\n"  # unknown kind
        + "imp-1,smoke,,,B1-1,,,\n"  # repeated id
        + "smoke-B1-1-101,smoke,,,B1-1,,,\n"  # already registered
        + "imp-5,smoke,,,NOPE,,floor,\n"  # unknown node, bad params
        + "imp-6,bin,,em310-tilt,C1,,,\n"  # codec of another kind
        + ",smoke,,,C1,,,\n"  # no id
    )
    response = _post(env, body, CSV)
    assert response.status_code == 422
    result = response.json()
    assert result["detail"] == "6 problems in 6 rows; nothing was imported"
    assert [(e["row"], e["field"]) for e in result["errors"]] == [
        (2, "kind"),
        (3, "device_id"),
        (4, "device_id"),
        (5, "params"),
        (6, "codec"),
        (7, "device_id"),
    ]
    assert result["errors"][1]["message"] == "repeats the device_id of row 1"
    assert _total(env) == 2000


def test_import_refuses_out_of_scope_nodes_like_unknown_ones(env: ApiEnv) -> None:
    body = HEADER + "imp-1,smoke,,,B6,,,\n"  # B6 is in C2
    response = _post(env, body, CSV, role="integrator", node="C1")
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"row": 1, "field": "node", "message": "node 'B6' not found"}
    ]


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        (GOOD_CSV, {"content-type": "text/plain"}, 415, "send text/csv or application/json"),
        (GOOD_CSV, {}, 415, "content type"),
        ("", CSV, 422, "body is empty"),
        (HEADER, CSV, 422, "no devices"),
        ("device_id,kind\nx,smoke\n", CSV, 422, "missing columns: node"),
        (HEADER.strip() + ",colour\n", CSV, 422, "unknown columns: colour"),
        (b"device_id,kind,node\n\xff,smoke,C1\n", CSV, 422, "not UTF-8"),
        ("device_id,kind,node\nx,smoke,C1,extra\n", CSV, 422, "problems"),
        ("{", {"content-type": "application/json"}, 422, "not valid JSON"),
        ('{"device_id": "x"}', {"content-type": "application/json"}, 422, "JSON array"),
        ("[1]", {"content-type": "application/json"}, 422, "problems"),
        ("[]", {"content-type": "application/json"}, 422, "no devices"),
        ('device_id,kind,node\n"x,smoke', CSV, 422, None),
    ],
)
def test_import_refusals(
    env: ApiEnv, body: str | bytes, headers: dict[str, str], status: int, fragment: str | None
) -> None:
    response = _post(env, body, headers)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    if fragment:
        assert fragment in detail


def test_import_too_many_rows_is_413(env: ApiEnv) -> None:
    rows = "".join(f"x{i},smoke,,,C1,,,\n" for i in range(10_001))
    response = _post(env, HEADER + rows, CSV)
    assert response.status_code == 413
    assert "10000" in response.json()["detail"]


def test_import_needs_devices_write(env: ApiEnv) -> None:
    assert _post(env, GOOD_CSV, CSV, role="grid_member").status_code == 403


@pytest.fixture
def flaky(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> Iterator[tuple[ApiEnv, FakeProvisioner]]:
    provisioner = FakeProvisioner()
    for api in make_env(tmp_path_factory, tmp_path, provisioner=provisioner):
        yield api, provisioner


def test_import_provisions_every_device(flaky: tuple[ApiEnv, FakeProvisioner]) -> None:
    api, provisioner = flaky
    body = _post(api, GOOD_CSV, CSV).json()
    assert provisioner.created == ["imp-1", "imp-2", "imp-3"]
    assert [i["credentials"]["username"] for i in body["items"]] == ["imp-1", "imp-2", "imp-3"]


def test_import_revokes_what_it_made_when_the_broker_fails(
    flaky: tuple[ApiEnv, FakeProvisioner],
) -> None:
    api, provisioner = flaky
    original = provisioner.create

    def fail_on_third(device_id: str) -> Any:
        if device_id == "imp-3":
            raise DynsecError("broker went away")
        return original(device_id)

    provisioner.create = fail_on_third  # type: ignore[method-assign]
    response = _post(api, GOOD_CSV, CSV)
    assert response.status_code == 503
    assert provisioner.created == ["imp-1", "imp-2"]
    assert provisioner.revoked == ["imp-1", "imp-2"]
    assert _total(api) == 2000
