"""Routing: the lowest node with a team for the category owns; escalation goes one level up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gateway.workorders.models  # noqa: F401  (registers the alert tables before make_engine)
from gateway.registry.models import LEVELS
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine
from gateway.workorders.routing import (
    CATEGORY_ROLES,
    HANDLING_ROLES,
    ROLE_LEVELS,
    VOLUNTEER_ROLES,
    PathNode,
    Router,
    StaffMember,
    eligible_roles,
    grant_problem,
    path_string,
    plan_route,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"

PATH = (
    PathNode(1, "street", "ST"),
    PathNode(2, "community", "SQ"),
    PathNode(3, "grid", "G"),
    PathNode(4, "compound", "C"),
    PathNode(5, "building", "B"),
    PathNode(6, "unit", "U"),
)
CODE_ID = {node.code: node.node_id for node in PATH}
FULL = {
    "ST": ("street_officer",),
    "SQ": ("community_secretary",),
    "G": ("grid_head", "grid_member"),
    "C": ("property_manager",),
    "B": ("building_head",),
    "U": ("unit_head",),
}


def staff_of(layout: dict[str, tuple[str, ...]]) -> dict[int, list[StaffMember]]:
    """Staff per node id from ``{code: roles}``."""
    out: dict[int, list[StaffMember]] = {}
    next_id = 100
    for code, roles in layout.items():
        for role in roles:
            next_id += 1
            member = StaffMember(next_id, CODE_ID[code], f"{role}@{code}", role)
            out.setdefault(CODE_ID[code], []).append(member)
    return out


def without(*codes: str) -> dict[str, tuple[str, ...]]:
    return {code: roles for code, roles in FULL.items() if code not in codes}


@pytest.mark.parametrize(
    ("category", "layout", "depth", "owner", "escalation"),
    [
        ("fire", FULL, 6, "G", "SQ"),
        ("safety", FULL, 6, "G", "SQ"),
        ("public_safety", FULL, 6, "G", "SQ"),
        ("sanitation", FULL, 6, "C", "G"),
        ("maintenance", FULL, 6, "C", "G"),
        ("facility", FULL, 6, "C", "G"),
        ("manual", FULL, 6, "C", "G"),
        ("something_new", FULL, 6, "C", "G"),  # unknown: lowest node with any handling role
        ("fire", without("G"), 6, "C", "SQ"),  # no grid team: any handling role, lowest first
        ("sanitation", without("C"), 6, "G", "SQ"),  # no property company: the grid takes it
        ("sanitation", without("C", "G"), 6, "SQ", "ST"),
        ("fire", FULL, 3, "G", "SQ"),  # device hanging at the grid itself
        ("sanitation", FULL, 3, "G", "SQ"),  # nothing below the grid on the path
        ("fire", FULL, 1, "ST", None),  # at the street: nowhere to escalate
        ("fire", without("SQ"), 6, "G", "ST"),  # empty community: skip to the street
        ("fire", {"B": ("building_head",), "U": ("unit_head",)}, 6, None, None),  # volunteers only
    ],
)
def test_owner_and_escalation(
    category: str,
    layout: dict[str, tuple[str, ...]],
    depth: int,
    owner: str | None,
    escalation: str | None,
) -> None:
    route = plan_route(PATH[:depth], staff_of(layout), category)
    assert (route.owner.code if route.owner else None) == owner
    assert (route.escalation.code if route.escalation else None) == escalation


@pytest.mark.parametrize(
    ("category", "owner_roles"),
    [
        ("fire", {"grid_head", "grid_member"}),
        ("sanitation", {"property_manager"}),
    ],
)
def test_owners_are_the_eligible_staff_and_volunteers_below_are_copied(
    category: str, owner_roles: set[str]
) -> None:
    route = plan_route(PATH, staff_of(FULL), category)
    assert {m.role for m in route.owners} == owner_roles
    assert {m.role for m in route.cc} == {"building_head", "unit_head"}
    recipients = route.recipients()
    assert [r["cc"] for r in recipients] == [False] * len(route.owners) + [True, True]
    assert all(r["node"] in CODE_ID for r in recipients)


def test_volunteers_above_the_owner_are_not_copied() -> None:
    layout = {**FULL, "B": ("building_head", "property_manager")}
    route = plan_route(PATH, staff_of(layout), "sanitation")
    assert route.owner == PATH[4]
    assert [m.role for m in route.owners] == ["property_manager"]
    assert [m.role for m in route.cc] == ["unit_head"]


@pytest.mark.parametrize(
    ("owner", "escalation", "owner_roles"),
    [("SQ", "ST", {"community_secretary"}), ("ST", None, {"street_officer"})],
)
def test_an_escalated_owner_is_kept_and_any_handling_role_answers(
    owner: str, escalation: str | None, owner_roles: set[str]
) -> None:
    route = plan_route(PATH, staff_of(FULL), "fire", owner_id=CODE_ID[owner])
    assert route.owner is not None and route.owner.code == owner
    assert (route.escalation.code if route.escalation else None) == escalation
    assert {m.role for m in route.owners} == owner_roles


def test_role_table_is_consistent() -> None:
    assert not set(HANDLING_ROLES) & set(VOLUNTEER_ROLES)
    for roles in CATEGORY_ROLES.values():
        assert set(roles) <= set(HANDLING_ROLES)
    assert eligible_roles("no_such_category") == HANDLING_ROLES


def test_path_string() -> None:
    assert path_string(PATH[:3]) == "/ST/SQ/G/"
    assert path_string(()) == "/"


# -- against the demo community in the registry tables -----------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    db = tmp_path_factory.mktemp("routing") / "registry.db"
    engine = make_engine(f"sqlite:///{db}")
    Registry(engine).load_community(FIXTURE)
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    ("device_id", "category", "owner", "owner_count", "cc_names", "escalation"),
    [
        ("smoke-B3-2-1001", "fire", "G1", 3, [], "SQ1"),
        ("smoke-B3-2-1001", "maintenance", "C1", 2, [], "G1"),
        ("smoke-B3-2-1001", "brand_new", "C1", 2, [], "G1"),
    ],
)
def test_router_on_the_demo_community(
    engine: Engine,
    device_id: str,
    category: str,
    owner: str,
    owner_count: int,
    cc_names: list[str],
    escalation: str,
) -> None:
    router = Router()
    with Session(engine) as session:
        node_id = router.device_node(session, device_id)
        route = router.route(session, node_id, category)
        assert [n.code for n in router.path(session, node_id)] == [
            "ST1",
            "SQ1",
            "G1",
            "C1",
            "B3",
            "B3-2",
        ]
    assert route.owner is not None and route.owner.code == owner
    assert len(route.owners) == owner_count
    assert [m.name for m in route.cc] == cc_names
    assert route.escalation is not None and route.escalation.code == escalation


@pytest.mark.parametrize(
    ("node_code", "category", "owner", "cc_roles"),
    [
        ("B5-1", "sanitation", "C1", ["unit_head"]),  # unit head of B5-1 copied in
        ("B1-1", "fire", "G1", ["building_head"]),  # building head of B1 copied in
        ("B11-1", "fire", "G2", ["building_head", "unit_head"]),
        ("SQ1", "fire", "SQ1", []),  # a report at the community itself
    ],
)
def test_router_by_node_code(
    engine: Engine, node_code: str, category: str, owner: str, cc_roles: list[str]
) -> None:
    router = Router()
    with Session(engine) as session:
        node = router.node_by_code(session, node_code)
        assert node is not None
        route = router.route(session, node.node_id, category)
    assert route.owner is not None and route.owner.code == owner
    assert [m.role for m in route.cc] == cc_roles


def test_unknown_device_and_node(engine: Engine) -> None:
    router = Router()
    with Session(engine) as session:
        assert router.device_node(session, "no-such-device") is None
        assert router.node_by_code(session, "NOPE") is None
        assert router.path(session, None) == ()
        route = router.route(session, None, "fire")
    assert route.owner is None and route.recipients() == []


def test_every_routed_role_has_a_level() -> None:
    assert set(HANDLING_ROLES) | set(VOLUNTEER_ROLES) == set(ROLE_LEVELS)
    assert all(level in LEVELS for level in ROLE_LEVELS.values())


@pytest.mark.parametrize("role", sorted(ROLE_LEVELS))
@pytest.mark.parametrize("granter", LEVELS)
@pytest.mark.parametrize("node", LEVELS)
def test_grant_rule(role: str, granter: str, node: str) -> None:
    """Own level or below for the role; the token's level at or above the role's."""
    home = LEVELS.index(ROLE_LEVELS[role])
    problem = grant_problem(role, node, granter)
    if LEVELS.index(node) < home:
        assert problem is not None and problem[0] == "placement"
    elif LEVELS.index(granter) > home:
        assert problem is not None and problem[0] == "entitlement"
    else:
        assert problem is None
