"""The device-id namespace: a strict pattern, and the gateway's own broker names reserved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.core.config import Settings
from gateway.provisioning.dynsec import (
    DEVICE_MARK,
    device_acls,
    device_client_is_ours,
    device_role,
    device_role_is_ours,
)
from gateway.registry.device_ids import ReservedNames, device_id_problem, reserved_for
from gateway.registry.store import Registry, RegistryError
from gateway.runtime.schema import make_engine

COMMUNITY = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"

VALID = ["smoke-B1-1-101", "a", "A:B.C_D-E", "x" * 128, "scc1", "sccgateway", "my-scc-gateway"]

#: (id, a fragment of the refusal) — the gateway's names in any case and their neighbours,
#: MQTT's special characters, and Unicode look-alikes of reserved names.
REFUSED = [
    ("scc-gateway", "reserved"),
    ("scc-dynsec-admin", "reserved"),
    ("scc-gateway-gw1", "reserved"),
    ("SCC-GATEWAY", "reserved"),
    ("Scc-Dynsec-Admin", "reserved"),
    ("scc_gateway", "reserved"),
    ("scc.gateway", "reserved"),
    ("scc:gateway", "reserved"),
    ("scc", "reserved"),
    ("scc-fleet-1-0", "reserved"),
    ("$SYS", "'$'"),
    ("$CONTROL", "'$'"),
    ("a+b", "'+'"),
    ("a#", "'#'"),
    ("a/b", "'/'"),
    ("a\x00b", "U+0000"),
    ("smoke-1\n", "U+000A"),  # a trailing newline passed the old ``$`` anchor
    (" smoke", "' '"),
    ("ѕсс-gateway", "CYRILLIC"),  # Cyrillic dze, es, es
    ("ｓｃｃ-gateway", "FULLWIDTH"),
    ("scc‐gateway", "HYPHEN"),  # U+2010
    ("smoké", "LATIN SMALL LETTER E WITH ACUTE"),
    ("", "empty"),
    ("-smoke", "start with a letter or digit"),
    ("_smoke", "start with a letter or digit"),
    ("x" * 129, "129 characters"),
]


@pytest.mark.parametrize("device_id", VALID)
def test_valid_ids(device_id: str) -> None:
    assert device_id_problem(device_id) is None


@pytest.mark.parametrize(("device_id", "fragment"), REFUSED)
def test_refused_ids_say_why(device_id: str, fragment: str) -> None:
    problem = device_id_problem(device_id)
    assert problem is not None and fragment in problem, problem


CONFIGURED = Settings(
    mqtt_username="edge-login",
    mqtt_admin_username="ops-admin",
    mqtt_client_id="edge-1",
)


@pytest.mark.parametrize(
    ("device_id", "refused"),
    [
        ("edge-login", True),
        ("EDGE-LOGIN", True),
        ("ops-admin", True),
        ("edge-1", True),
        ("edge-1-0", True),  # worker mode: <client id>-<K>
        ("edge-1-rules-0", True),
        ("edge-10", False),
        ("edge-login-2", False),
        ("smoke-1", False),
    ],
)
def test_configured_broker_names_are_reserved(device_id: str, refused: bool) -> None:
    problem = device_id_problem(device_id, reserved_for(CONFIGURED))
    assert (problem is not None) is refused, problem
    if refused:
        assert problem is not None and "broker login or client id of this gateway" in problem


def test_the_default_client_id_is_reserved(tmp_path: Path) -> None:
    settings = Settings(name="north", state_dir=tmp_path)
    reserved = reserved_for(settings)
    assert settings.client_id.startswith("scc-gateway-north-")
    assert reserved.clash(settings.client_id) is not None
    assert reserved.clash(settings.client_id + "-rules-0") is not None
    # the id of an earlier version, and anything else of the stem, by the scc- prefix
    assert device_id_problem("scc-gateway-north", reserved) is not None


def test_registry_csv_load_refuses_reserved_ids_with_line_numbers(tmp_path: Path) -> None:
    registry = Registry(make_engine(f"sqlite:///{tmp_path / 'g.db'}"), reserved_for(CONFIGURED))
    registry.load_hierarchy(yaml.safe_load((COMMUNITY / "hierarchy.yaml").read_text()))
    csv = tmp_path / "devices.csv"
    header = "device_id,kind,model,codec,node,location,params,installed_at\n"
    csv.write_text(
        header + "s-1,smoke,A,json,B1-1,,,\nscc-gateway,smoke,A,json,B1-1,,,\n"
        "edge-login,smoke,A,json,B1-1,,,\nSCC-Dynsec-Admin,smoke,A,json,B1-1,,,\n"
    )
    with pytest.raises(RegistryError) as caught:
        registry.load_devices_csv(csv)
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "devices.csv line 3",
        "devices.csv line 4",
        "devices.csv line 5",
    ]
    assert all("reserved" in p for p in problems)
    assert registry.device_infos() == {}


def test_reserved_names_combine() -> None:
    both = ReservedNames.of(["a-login"]) | ReservedNames.of([], ["cid"])
    assert both.clash("A-LOGIN") and both.clash("cid-3") and not both.clash("cid3")


@pytest.mark.parametrize(
    ("client", "ours"),
    [
        ({"username": "d1", "textdescription": DEVICE_MARK, "roles": []}, True),
        # what the gateway created before the mark: exactly that text name and own role
        ({"textname": "scc device d1", "roles": [{"rolename": "device-d1"}]}, True),
        ({"username": "d1", "textname": "scc device d1", "roles": [{"rolename": "admin"}]}, False),
        ({"username": "d1", "textname": "ops bridge", "roles": [{"rolename": "device-d1"}]}, False),
        ({"username": "d1", "textdescription": "hand made", "textname": "scc device d1"}, False),
        ({"username": "d1", "roles": []}, False),
    ],
)  # fmt: skip
def test_only_clients_the_gateway_made_are_its_own(client: dict[str, object], ours: bool) -> None:
    assert device_client_is_ours("d1", client) is ours


def test_only_roles_the_gateway_made_are_its_own() -> None:
    assert device_role_is_ours("d1", {"rolename": device_role("d1"), "acls": device_acls("d1")})
    assert device_role_is_ours("d1", {"rolename": "device-d1", "textdescription": DEVICE_MARK})
    wider = [*device_acls("d1"), {"acltype": "subscribePattern", "topic": "#", "allow": True}]
    assert not device_role_is_ours("d1", {"rolename": "device-d1", "acls": wider})
    assert not device_role_is_ours("d1", {"rolename": "device-d1", "textdescription": "ops"})
