"""Device ids and broker logins in separate namespaces, on a real dynamic-security broker.

Registering a device must never replace, delete or disable a login the gateway did not
make for that device: not its own login, not the plugin admin's, not a login someone made
by hand. Every device login is bound to its device id as client id, so no device can
connect as the gateway's client id. Each test compares the broker's whole client list
before and after, and checks the logins concerned still connect.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.provisioning.dynsec import (
    DynsecProvisioner,
    LoginConflictError,
    ReservedLoginError,
    device_acls,
)
from gateway.registry.models import Device, Node
from gateway.registry.store import Registry
from gateway.services.base import LOOPBACK
from tests.integration.test_dynsec import Peer, Setup, _admin, connect, gateway_sub, setup

__all__ = ["gateway_sub", "setup"]  # fixtures

pytestmark = pytest.mark.integration

GATEWAY_CLIENT_ID = "scc-gateway-gw1"  # the default client id: Settings(name="gw1")

#: Ids an integrator scoped to one compound might try, each refused with a 422.
RESERVED = [
    "scc-gateway",
    "scc-dynsec-admin",
    GATEWAY_CLIENT_ID,
    "SCC-GATEWAY",
    "Scc-Dynsec-Admin",
    "scc_gateway",
    "scc",
    "ѕсс-gateway",  # Cyrillic look-alike
    "ｓｃｃ-gateway",  # fullwidth
    "scc‐gateway",  # U+2010 hyphen
    "scc-gateway\n",
    "$CONTROL",
    "a/b",
    "a+b",
    "a#",
]


def clients(setup: Setup) -> list[dict[str, Any]]:
    """Every client on the broker, with its text fields, client id and roles."""
    answer = setup.provisioner.client.call(
        [{"command": "listClients", "verbose": True, "count": -1, "offset": 0}]
    )[0]
    assert "error" not in answer, answer
    found: list[dict[str, Any]] = answer["data"]["clients"]
    return sorted(found, key=lambda c: str(c["username"]))


def usernames(setup: Setup) -> list[str]:
    return [str(c["username"]) for c in clients(setup)]


def register(setup: Setup, device_id: str, node: str = "B1-1") -> Any:
    body = {"device_id": device_id, "kind": "smoke", "node": node}
    headers = setup.api.auth("integrator", "C1")
    return setup.api.client.post("/devices", headers=headers, json=body)


def foreign_login(setup: Setup, username: str) -> str:
    """A login made by hand on the broker (not by the gateway); returns its password."""
    password = secrets.token_urlsafe(12)
    answer = setup.provisioner.client.call(
        [{"command": "createClient", "username": username, "password": password}]
    )[0]
    assert "error" not in answer, answer
    return password


def assert_logs_in(setup: Setup, username: str, password: str) -> None:
    peer = connect(setup.broker.port, username, password)
    try:
        assert not peer.connack.is_failure, (username, peer.connack)
    finally:
        peer.close()


def gateway_still_works(setup: Setup) -> None:
    assert_logs_in(setup, "scc-gateway", setup.gateway_password)
    admin = DynsecProvisioner.connect(LOOPBACK, setup.broker.port, *_admin(setup.broker))
    try:
        assert admin.client.call([{"command": "getDefaultACLAccess"}])[0].get("error") is None
    finally:
        admin.close()


@pytest.mark.parametrize("device_id", RESERVED)
def test_reserved_or_invalid_ids_are_refused_and_the_broker_untouched(
    setup: Setup, device_id: str
) -> None:
    before = clients(setup)
    response = register(setup, device_id)
    assert response.status_code == 422, response.text
    assert "device_id" in response.json()["detail"]
    assert clients(setup) == before
    gateway_still_works(setup)
    # provisioning still works afterwards
    assert register(setup, "smoke-ok-1").status_code == 201


@pytest.mark.parametrize("device_id", ["scc-gateway", "SCC-Dynsec-Admin", "ѕсс-gateway"])
def test_reserved_ids_are_refused_in_bulk_imports_too(setup: Setup, device_id: str) -> None:
    before = clients(setup)
    csv = f"device_id,kind,node\nimp-ok-1,smoke,B1-1\n{device_id},smoke,B1-1\n"
    headers = {**setup.api.auth("integrator", "C1"), "Content-Type": "text/csv"}
    response = setup.api.client.post("/devices/import", headers=headers, content=csv.encode())
    assert response.status_code == 422, response.text
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(2, "device_id")]
    assert clients(setup) == before


@pytest.mark.parametrize("device_id", ["scc-gateway", "scc-dynsec-admin", "SCC-GATEWAY-gw1"])
def test_update_move_and_decommission_never_reach_a_reserved_login(
    setup: Setup, device_id: str
) -> None:
    before = clients(setup)
    headers = setup.api.auth()
    patched = setup.api.client.patch(f"/devices/{device_id}", headers=headers, json={})
    moved = setup.api.client.post(
        f"/devices/{device_id}/move", headers=headers, json={"node": "B1"}
    )
    assert (patched.status_code, moved.status_code) == (422, 422)
    assert "reserved" in patched.json()["detail"]
    assert setup.api.client.delete(f"/devices/{device_id}", headers=headers).status_code == 404
    assert clients(setup) == before
    gateway_still_works(setup)


def test_a_row_left_with_a_reserved_id_is_decommissioned_without_touching_the_login(
    setup: Setup,
) -> None:
    """A registry from before ids were checked may hold ``scc-gateway`` as a device."""
    with Session(setup.api.engine) as session, session.begin():
        node_id = session.scalar(select(Node.id).where(Node.code == "B1-1"))
        assert node_id is not None
        session.add(
            Device(
                device_id="scc-gateway",
                kind="smoke",
                model="x",
                codec="json",
                node_id=node_id,
                location="",
                params={},
                status="active",
            )
        )
    before = clients(setup)
    response = setup.api.client.delete("/devices/scc-gateway", headers=setup.api.auth())
    assert response.status_code == 200 and response.json()["status"] == "decommissioned"
    assert clients(setup) == before
    gateway_still_works(setup)


@pytest.mark.parametrize("username", ["ops-bridge", "grafana", "Smoke-Hand-1"])
def test_a_login_made_by_hand_is_never_replaced(setup: Setup, username: str) -> None:
    password = foreign_login(setup, username)
    before = clients(setup)
    response = register(setup, username)
    assert response.status_code == 409, response.text
    assert "was not created by this gateway" in response.json()["detail"]
    assert clients(setup) == before
    assert_logs_in(setup, username, password)
    missing = setup.api.client.get(f"/devices/{username}", headers=setup.api.auth())
    assert missing.status_code == 404  # nothing half-registered
    assert register(setup, "smoke-ok-2").status_code == 201


def test_a_role_made_by_hand_is_never_replaced(setup: Setup) -> None:
    acls = [{"acltype": "subscribePattern", "topic": "#", "priority": 0, "allow": True}]
    made = setup.provisioner.client.call(
        [{"command": "createRole", "rolename": "device-cam-9", "acls": acls}]
    )[0]
    assert "error" not in made
    response = register(setup, "cam-9")
    assert response.status_code == 409 and "device-cam-9" in response.json()["detail"]
    role = setup.provisioner.client.call([{"command": "getRole", "rolename": "device-cam-9"}])
    assert role[0]["data"]["role"]["acls"] == acls
    assert "cam-9" not in usernames(setup)


def test_decommission_refuses_to_delete_a_login_it_did_not_make(
    setup: Setup, tmp_path: Any
) -> None:
    password = foreign_login(setup, "legacy-cam")
    Registry(setup.api.engine).load_devices_csv(_csv(tmp_path, "legacy-cam"))
    response = setup.api.client.delete("/devices/legacy-cam", headers=setup.api.auth())
    assert response.status_code == 409, response.text
    assert "legacy-cam" in usernames(setup)
    assert_logs_in(setup, "legacy-cam", password)
    still = setup.api.client.get("/devices/legacy-cam", headers=setup.api.auth()).json()
    assert still["status"] == "active"


def test_a_login_made_before_ownership_marks_is_still_revoked(setup: Setup, tmp_path: Any) -> None:
    """What earlier versions created (no mark, the text name and role they used) is ours."""
    password = secrets.token_urlsafe(12)
    answers = setup.provisioner.client.call(
        [
            {"command": "createRole", "rolename": "device-old-1", "acls": device_acls("old-1")},
            {
                "command": "createClient",
                "username": "old-1",
                "password": password,
                "textname": "scc device old-1",
                "roles": [{"rolename": "device-old-1", "priority": 0}],
            },
        ]
    )
    assert all("error" not in a for a in answers)
    Registry(setup.api.engine).load_devices_csv(_csv(tmp_path, "old-1"))
    response = setup.api.client.delete("/devices/old-1", headers=setup.api.auth())
    assert response.status_code == 200, response.text
    assert "old-1" not in usernames(setup)


def test_revoking_one_device_touches_only_its_own_login(setup: Setup) -> None:
    first = register(setup, "smoke-rv-1").json()["credentials"]
    second = register(setup, "smoke-rv-2").json()["credentials"]
    before = set(usernames(setup))
    assert (
        setup.api.client.delete("/devices/smoke-rv-1", headers=setup.api.auth()).status_code == 200
    )
    assert set(usernames(setup)) == before - {"smoke-rv-1"}
    peer = connect(setup.broker.port, second["username"], second["password"], second["client_id"])
    try:
        assert not peer.connack.is_failure
    finally:
        peer.close()
    assert first["client_id"] == "smoke-rv-1"
    gateway_still_works(setup)


def test_a_device_login_connects_only_with_its_own_client_id(
    setup: Setup, gateway_sub: Peer
) -> None:
    creds = register(setup, "smoke-cid-1").json()["credentials"]
    assert creds["client_id"] == "smoke-cid-1"
    for client_id in [GATEWAY_CLIENT_ID, "scc-gateway", "smoke-cid-2", "SMOKE-CID-1"]:
        thief = connect(setup.broker.port, creds["username"], creds["password"], client_id)
        try:
            assert thief.connack.is_failure, client_id
        finally:
            thief.close()
    own = connect(setup.broker.port, creds["username"], creds["password"], creds["client_id"])
    try:
        assert not own.connack.is_failure
    finally:
        own.close()


def test_the_gateway_session_survives_a_device_using_its_client_id(setup: Setup) -> None:
    setup.provisioner.ensure_gateway_role("scc-gateway", setup.gateway_password, GATEWAY_CLIENT_ID)
    gateway = connect(setup.broker.port, "scc-gateway", setup.gateway_password, GATEWAY_CLIENT_ID)
    try:
        assert not gateway.connack.is_failure
        assert gateway.subscribe("scc/v1/+/+") < 128
        creds = register(setup, "smoke-thief").json()["credentials"]
        thief = connect(setup.broker.port, creds["username"], creds["password"], GATEWAY_CLIENT_ID)
        thief.close()
        assert thief.connack.is_failure
        assert not gateway.disconnected.wait(1.0), "the device took the gateway's session"
        device = connect(
            setup.broker.port, creds["username"], creds["password"], creds["client_id"]
        )
        try:
            assert device.publish("scc/v1/smoke-thief/telemetry", b'{"battery": 80}') == 0
        finally:
            device.close()
        assert gateway.wait_message("scc/v1/smoke-thief/telemetry") == b'{"battery": 80}'
        # the gateway's own login is bound too: its password with another client id is refused
        other = connect(setup.broker.port, "scc-gateway", setup.gateway_password, "elsewhere")
        other.close()
        assert other.connack.is_failure
    finally:
        gateway.close()


def test_the_gateway_login_is_not_made_over_someone_elses(setup: Setup) -> None:
    password = foreign_login(setup, "edge-bridge")
    with pytest.raises(LoginConflictError, match="is not the gateway's"):
        setup.provisioner.ensure_gateway_role("edge-bridge", "x")
    assert_logs_in(setup, "edge-bridge", password)
    with pytest.raises(ReservedLoginError, match="admin login"):
        setup.provisioner.ensure_gateway_role("scc-dynsec-admin", "x")
    gateway_still_works(setup)


def _csv(tmp_path: Any, device_id: str) -> Any:
    """A devices.csv registering ``device_id`` without provisioning (the CLI path)."""
    path = tmp_path / f"{device_id}.csv"
    path.write_text(
        "device_id,kind,model,codec,node,location,params,installed_at\n"
        f"{device_id},smoke,x,json,B1-1,,,\n"
    )
    return path


def test_a_gateway_login_under_any_name_is_never_taken_by_a_device(setup: Setup) -> None:
    """Even where the API does not know the gateway's login name (another process runs the
    gateway), the broker's own record says the login is the gateway's, not a device's."""
    password = secrets.token_urlsafe(12)
    setup.provisioner.ensure_gateway_role("edge-gw", password, "edge-gw-1")
    before = clients(setup)
    response = register(setup, "edge-gw")
    assert response.status_code == 409, response.text
    assert clients(setup) == before
    gateway = connect(setup.broker.port, "edge-gw", password, "edge-gw-1")
    try:
        assert not gateway.connack.is_failure
    finally:
        gateway.close()


def test_logins_made_before_the_binding_are_bound_by_the_upgrade_step(setup: Setup) -> None:
    """Device logins of earlier versions have no client id: any id (the gateway's too) got
    in. ``bind_device_logins`` binds ours, and only ours."""
    password = secrets.token_urlsafe(12)
    answers = setup.provisioner.client.call(
        [
            {"command": "createRole", "rolename": "device-old-2", "acls": device_acls("old-2")},
            {
                "command": "createClient",
                "username": "old-2",
                "password": password,
                "textname": "scc device old-2",
                "roles": [{"rolename": "device-old-2", "priority": 0}],
            },
        ]
    )
    assert all("error" not in a for a in answers)
    hand_made = foreign_login(setup, "ops-bridge-2")
    before = connect(setup.broker.port, "old-2", password, GATEWAY_CLIENT_ID)
    before.close()
    assert not before.connack.is_failure  # the hole: an unbound login takes any client id
    assert setup.provisioner.bind_device_logins(page=2) == ["old-2"]
    thief = connect(setup.broker.port, "old-2", password, GATEWAY_CLIENT_ID)
    thief.close()
    assert thief.connack.is_failure
    own = connect(setup.broker.port, "old-2", password, "old-2")
    own.close()
    assert not own.connack.is_failure
    assert_logs_in(setup, "ops-bridge-2", hand_made)  # not ours: untouched, still unbound
    assert setup.provisioner.bind_device_logins() == []
