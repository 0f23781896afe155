"""Routes of device types and devices, against a private copy of the demo community."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from devices import KINDS
from gateway.api.context import DeviceStatus
from gateway.provisioning.dynsec import Credentials, DynsecError, device_topics
from gateway.storage.deadletter import DeadLetter
from tests.integration.test_api_common import ApiEnv, env, make_env

__all__ = ["env"]  # the fixture, imported for the tests below

NEW = {"device_id": "smoke-new-1", "kind": "smoke", "node": "B1-1", "location": "1101"}


@dataclass
class FakeProvisioner:
    """Records calls; fails on demand."""

    fail: bool = False
    created: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    def create(self, device_id: str) -> Credentials:
        if self.fail:
            raise DynsecError("broker down")
        self.created.append(device_id)
        publish, command = device_topics(device_id)
        return Credentials(device_id, f"pw-{device_id}", publish, command)

    def revoke(self, device_id: str) -> None:
        if self.fail:
            raise DynsecError("broker down")
        self.revoked.append(device_id)

    def ensure_gateway_role(self, username: str, password: str) -> None:
        """Not used by the API."""


@pytest.fixture
def provisioner() -> FakeProvisioner:
    return FakeProvisioner()


@pytest.fixture
def penv(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, provisioner: FakeProvisioner
) -> Iterator[ApiEnv]:
    """The API with a (fake) broker provisioner."""
    yield from make_env(tmp_path_factory, tmp_path, provisioner=provisioner)


# --- device types ----------------------------------------------------------------------------


def test_device_types_list_every_kind_with_schema_fields_and_rules(env: ApiEnv) -> None:
    body = env.client.get("/device-types", headers=env.auth("read_only", "B1-1")).json()
    assert [item["name"] for item in body] == list(KINDS)
    smoke = body[0]
    assert smoke["heartbeat_s"] == 43_200 and smoke["codecs"] == ["json"]
    battery = next(f for f in smoke["fields"] if f["key"] == "battery")
    assert battery["unit"] == "%" and battery["minimum"] == 0 and battery["maximum"] == 100
    assert "battery" in smoke["json_schema"]["properties"]
    assert {rule["id"] for rule in smoke["default_rules"]} >= {"smoke.fire_alarm"}


def test_device_type_one_and_unknown(env: ApiEnv) -> None:
    bin_type = env.client.get("/device-types/bin", headers=env.auth()).json()
    assert set(bin_type["codecs"]) == {"json", "em310-udl"}
    missing = env.client.get("/device-types/lamp", headers=env.auth())
    assert missing.status_code == 404
    assert "lamp" in missing.json()["detail"]


# --- list ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "total"),
    [("", 2000), ("?kind=bin", 100), ("?kind=manhole&node=C1", 15), ("?status=decommissioned", 0)],
)
def test_list_filters(env: ApiEnv, query: str, total: int) -> None:
    body = env.client.get(f"/devices{query}", headers=env.auth()).json()
    assert body["total"] == total


def test_list_pages_in_id_order(env: ApiEnv) -> None:
    first = env.client.get("/devices?limit=3", headers=env.auth()).json()
    second = env.client.get("/devices?limit=3&offset=2", headers=env.auth()).json()
    ids = [d["device_id"] for d in first["items"]]
    assert ids == sorted(ids) and len(ids) == 3
    assert second["items"][0]["device_id"] == ids[2]
    assert (first["limit"], first["offset"], second["offset"]) == (3, 0, 2)


def test_list_unknown_node_is_404(env: ApiEnv) -> None:
    response = env.client.get("/devices?node=NOPE", headers=env.auth())
    assert response.status_code == 404
    assert response.json() == {"detail": "node 'NOPE' not found"}


# --- register --------------------------------------------------------------------------------


def test_register_without_provisioner(env: ApiEnv) -> None:
    body = {**NEW, "params": "floor=11", "installed_at": "2025-03-01"}
    response = env.client.post("/devices", headers=env.auth("integrator", "C1"), json=body)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["credentials"] is None
    device = result["device"]
    assert device["path"] == ["ST1", "SQ1", "G1", "C1", "B1", "B1-1"]
    assert (device["params"], device["installed_at"], device["status"]) == (
        {"floor": "11"},
        "2025-03-01",
        "active",
    )
    again = env.client.get("/devices/smoke-new-1", headers=env.auth())
    assert again.json()["location"] == "1101"


def test_register_returns_credentials_once(penv: ApiEnv, provisioner: FakeProvisioner) -> None:
    result = penv.client.post("/devices", headers=penv.auth(), json=NEW).json()
    assert result["credentials"] == {
        "username": "smoke-new-1",
        "password": "pw-smoke-new-1",
        "client_id": "smoke-new-1",
        "publish_topics": [f"scc/v1/smoke-new-1/{k}" for k in ("telemetry", "event", "status")],
        "command_topic": "scc/v1/smoke-new-1/command",
    }
    assert provisioner.created == ["smoke-new-1"]
    assert "pw-" not in penv.client.get("/devices/smoke-new-1", headers=penv.auth()).text


def test_register_rolls_back_when_the_broker_fails(
    penv: ApiEnv, provisioner: FakeProvisioner
) -> None:
    provisioner.fail = True
    response = penv.client.post("/devices", headers=penv.auth(), json=NEW)
    assert response.status_code == 503
    assert "broker down" in response.json()["detail"]
    assert penv.client.get("/devices/smoke-new-1", headers=penv.auth()).status_code == 404


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        ({"device_id": "smoke-B1-1-101"}, 409, "already registered"),
        ({"node": "NOPE"}, 404, "node 'NOPE' not found"),
        ({"kind": "lamp"}, 422, "body.kind"),
        ({"codec": "em310-udl"}, 422, "body.codec: Value error, not available for smoke"),
        ({"device_id": "has/slash"}, 422, "body.device_id"),
        ({"device_id": "x" * 129}, 422, "body.device_id"),
        ({"params": "floor"}, 422, "body.params"),
        ({"params": {"floor": 3}}, 422, "body.params.floor"),
        ({"installed_at": "yesterday"}, 422, "body.installed_at"),
        ({"colour": "red"}, 422, "body.colour: Extra inputs are not permitted"),
    ],
)
def test_register_refusals(env: ApiEnv, change: dict[str, Any], status: int, fragment: str) -> None:
    response = env.client.post("/devices", headers=env.auth(), json={**NEW, **change})
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(("role", "status"), [("integrator", 201), ("manager", 403)])
def test_register_needs_devices_write(env: ApiEnv, role: str, status: int) -> None:
    response = env.client.post("/devices", headers=env.auth(role), json=NEW)
    assert response.status_code == status


# --- read, update, move, decommission --------------------------------------------------------


def _status(device_id: str) -> DeviceStatus | None:
    if device_id == "smoke-B1-1-101":
        return DeviceStatus(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), True, 87.5)
    if device_id == "smoke-B1-1-102":
        raise RuntimeError("status store hiccup")
    return None


@pytest.fixture
def senv(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[ApiEnv]:
    yield from make_env(tmp_path_factory, tmp_path, status_source=_status)


@pytest.mark.parametrize(
    ("device_id", "expected"),
    [
        ("smoke-B1-1-101", ("2025-01-02T03:04:05Z", True, 87.5)),
        ("smoke-B1-1-102", (None, None, None)),
        ("smoke-B1-1-103", (None, None, None)),
    ],
)
def test_get_device_with_live_status(
    senv: ApiEnv, device_id: str, expected: tuple[Any, ...]
) -> None:
    body = senv.client.get(f"/devices/{device_id}", headers=senv.auth()).json()
    assert (body["last_seen"], body["online"], body["battery"]) == expected
    assert body["kind"] == "smoke" and body["node"] == "B1-1"


def test_patch_changes_only_given_fields(env: ApiEnv) -> None:
    change = {"model": "NB-X2", "params": {"floor": "2"}}
    response = env.client.patch("/devices/smoke-B1-1-101", headers=env.auth(), json=change)
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["params"], body["location"]) == ("NB-X2", {"floor": "2"}, "101")


def test_move_to_another_node(env: ApiEnv) -> None:
    response = env.client.post(
        "/devices/smoke-B1-1-101/move", headers=env.auth(), json={"node": "B6"}
    )
    assert response.status_code == 200
    assert response.json()["path"] == ["ST1", "SQ1", "G1", "C2", "B6"]
    unknown = env.client.post(
        "/devices/smoke-B1-1-101/move", headers=env.auth(), json={"node": "X"}
    )
    assert unknown.status_code == 404


def test_decommission_revokes_and_is_idempotent(penv: ApiEnv, provisioner: FakeProvisioner) -> None:
    first = penv.client.delete("/devices/smoke-B1-1-101", headers=penv.auth())
    assert first.status_code == 200 and first.json()["status"] == "decommissioned"
    assert penv.client.delete("/devices/smoke-B1-1-101", headers=penv.auth()).status_code == 200
    assert provisioner.revoked == ["smoke-B1-1-101", "smoke-B1-1-101"]
    for method, path, body in [
        ("patch", "/devices/smoke-B1-1-101", {"location": "x"}),
        ("post", "/devices/smoke-B1-1-101/move", {"node": "B2"}),
    ]:
        refused = penv.client.request(method, path, headers=penv.auth(), json=body)
        assert refused.status_code == 409
        assert "decommissioned" in refused.json()["detail"]
    listed = penv.client.get("/devices?status=decommissioned", headers=penv.auth()).json()
    assert listed["total"] == 1


def test_decommission_keeps_the_device_when_revoking_fails(
    penv: ApiEnv, provisioner: FakeProvisioner
) -> None:
    provisioner.fail = True
    assert penv.client.delete("/devices/smoke-B1-1-101", headers=penv.auth()).status_code == 503
    device = penv.client.get("/devices/smoke-B1-1-101", headers=penv.auth()).json()
    assert device["status"] == "active"


# --- dead letters, readings ------------------------------------------------------------------


def test_dead_letters_newest_first(env: ApiEnv) -> None:
    with Session(env.engine) as session, session.begin():
        for n, payload in enumerate([b'{"battery": 250}', b"\xff\xfe garbage"]):
            session.add(
                DeadLetter(
                    received_at=datetime(2025, 1, 1, 0, n, tzinfo=UTC),
                    topic="scc/v1/smoke-B1-1-101/telemetry",
                    device_id="smoke-B1-1-101",
                    reason=("out_of_range", "not_utf8")[n],
                    detail="…",
                    payload=payload,
                )
            )
    body = env.client.get("/devices/smoke-B1-1-101/dead-letters", headers=env.auth()).json()
    assert [item["reason"] for item in body] == ["not_utf8", "out_of_range"]
    assert body[0]["payload_text"].startswith("\ufffd") and body[0]["payload_size"] == 10
    other = env.client.get("/devices/smoke-B1-1-102/dead-letters", headers=env.auth()).json()
    assert other == []


def test_readings_without_reader_is_503(env: ApiEnv) -> None:
    response = env.client.get("/devices/smoke-B1-1-101/readings", headers=env.auth())
    assert response.status_code == 503
    assert "without an InfluxDB reader" in response.json()["detail"]


class Reader:
    """A fake InfluxDB reader."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, device_id: str, kind: str, minutes: int) -> Sequence[Mapping[str, Any]]:
        self.calls.append((device_id, kind, minutes))
        if self.fail:
            raise OSError("connection refused")
        return [{"time": "2025-01-01T00:00:00Z", "battery": 80.0}]


@pytest.mark.parametrize("fail", [False, True])
def test_readings_through_the_reader(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, fail: bool
) -> None:
    reader = Reader(fail)
    for api in make_env(tmp_path_factory, tmp_path, influx_reader=reader):
        response = api.client.get("/devices/bin-C1-01/readings?minutes=15", headers=api.auth())
        if fail:
            assert response.status_code == 503
            assert "connection refused" in response.json()["detail"]
        else:
            assert response.json()["points"] == [{"time": "2025-01-01T00:00:00Z", "battery": 80.0}]
    assert reader.calls == [("bin-C1-01", "bin", 15)]
