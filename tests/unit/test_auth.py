"""Tokens (format, hashing, authentication), scope computation and the role table."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.api.auth import (
    PERMISSIONS,
    RESOURCES,
    ROLES,
    ForbiddenError,
    NodeIndex,
    NodeRow,
    NotAuthenticatedError,
    NotInScopeError,
    Principal,
    authenticate,
    hash_secret,
    issue_token,
    parse_token,
    revoke_token,
)
from gateway.api.models import ApiToken, create_tables
from gateway.registry.models import Node
from gateway.runtime.schema import make_engine

#   ST ─┬─ A ─┬─ A1 ── A1x
#       │     └─ A2
#       └─ B ─── B1
TREE = [
    NodeRow(1, "ST", "street", "st", None),
    NodeRow(2, "A", "compound", "a", 1),
    NodeRow(3, "B", "compound", "b", 1),
    NodeRow(4, "A1", "building", "a1", 2),
    NodeRow(5, "A2", "building", "a2", 2),
    NodeRow(6, "B1", "building", "b1", 3),
    NodeRow(7, "A1x", "unit", "a1x", 4),
]


def _index(rows: list[NodeRow] = TREE) -> NodeIndex:
    children: dict[int, list[int]] = {}
    for row in rows:
        if row.parent_id is not None:
            children.setdefault(row.parent_id, []).append(row.id)
    return NodeIndex(
        {r.id: r for r in rows},
        {k: tuple(v) for k, v in children.items()},
        {r.code: r.id for r in rows},
    )


@pytest.mark.parametrize(
    ("code", "subtree"),
    [
        ("ST", {"ST", "A", "B", "A1", "A2", "B1", "A1x"}),
        ("A", {"A", "A1", "A2", "A1x"}),
        ("B", {"B", "B1"}),
        ("A1x", {"A1x"}),
    ],
)
def test_subtree(code: str, subtree: set[str]) -> None:
    index = _index()
    ids = index.subtree(index.by_code[code])
    assert {index.nodes[i].code for i in ids} == subtree


def test_subtree_survives_a_cycle() -> None:
    rows = [NodeRow(1, "X", "grid", "x", 2), NodeRow(2, "Y", "grid", "y", 1)]
    index = _index(rows)
    assert index.subtree(1) == {1, 2}
    assert len(index.path(1)) <= 3


def test_path_from_the_root() -> None:
    index = _index()
    assert [n.code for n in index.path(7)] == ["ST", "A", "A1", "A1x"]
    assert [n.code for n in index.walk(2)] == ["A", "A1", "A1x", "A2"]


def _principal(role: str, code: str) -> Principal:
    index = _index()
    node_id = index.by_code[code]
    return Principal("abcd1234", "t", role, node_id, index.subtree(node_id), index)  # type: ignore[arg-type]


def test_principal_scope() -> None:
    principal = _principal("manager", "A")
    assert principal.sees(7) and not principal.sees(6) and not principal.sees(1)
    assert not principal.sees(None)
    assert principal.node_in_scope("A2").code == "A2"
    for code in ("B1", "ST", "nope"):
        with pytest.raises(NotInScopeError, match=f"node '{code}' not found"):
            principal.node_in_scope(code)
    assert not principal.is_global and _principal("read_only", "ST").is_global


# Rows: role; columns: may it write devices, staff, alerts, rules, metrics?
ROLE_TABLE = [
    ("admin", True, True, True, True, True),
    ("integrator", True, False, False, True, False),
    ("manager", False, True, True, False, False),
    ("grid_member", False, False, True, False, False),
    ("read_only", False, False, False, False, False),
]


@pytest.mark.parametrize(("role", "devices", "staff", "alerts", "rules", "metrics"), ROLE_TABLE)
def test_role_table(
    role: str, devices: bool, staff: bool, alerts: bool, rules: bool, metrics: bool
) -> None:
    principal = _principal(role, "ST")
    writes = {
        r: principal.can(r, "write") for r in ("devices", "staff", "alerts", "rules", "metrics")
    }
    assert writes == {
        "devices": devices,
        "staff": staff,
        "alerts": alerts,
        "rules": rules,
        "metrics": metrics,
    }
    assert all(principal.can(resource, "read") for resource in RESOURCES)


def test_every_role_has_an_entry_and_forbidden_names_the_action() -> None:
    assert set(PERMISSIONS) == set(ROLES)
    with pytest.raises(ForbiddenError, match="role 'read_only' may not write work orders"):
        _principal("read_only", "ST").require("work_orders", "write")


@pytest.mark.parametrize(
    ("token", "parsed"),
    [
        ("scc_0123abcd_" + "s" * 43, ("0123abcd", "s" * 43)),
        ("scc_0123abcd_" + "a_b-" * 11, ("0123abcd", "a_b-" * 11)),
        ("scc_0123ABCD_" + "s" * 43, None),
        ("scc_0123abc_" + "s" * 43, None),
        ("xyz_0123abcd_" + "s" * 43, None),
        ("scc_0123abcd_short", None),
        ("", None),
        ("scc__", None),
    ],
)
def test_parse_token(token: str, parsed: tuple[str, str] | None) -> None:
    assert parse_token(token) == parsed


def test_hash_is_sha256_hex() -> None:
    assert hash_secret("abc") == hashlib.sha256(b"abc").hexdigest()


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = make_engine("sqlite://")
    create_tables(engine)
    with Session(engine) as session, session.begin():
        for row in TREE:
            session.add(
                Node(
                    id=row.id,
                    code=row.code,
                    level=row.level,
                    name=row.name,
                    parent_id=row.parent_id,
                    attributes={},
                )
            )
    yield engine
    engine.dispose()


def test_issue_stores_only_a_hash_and_authenticates(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        issued = issue_token(session, "manager", "A", "ops")
    assert issued.token.startswith(f"scc_{issued.prefix}_") and issued.token not in repr(issued)
    with Session(engine) as session:
        row = session.scalars(select(ApiToken)).one()
        assert issued.token.split("_", 2)[2] not in (row.secret_sha256, row.prefix, row.name)
        principal = authenticate(session, issued.token)
    assert (principal.role, principal.scope_code, principal.token_prefix) == (
        "manager",
        "A",
        issued.prefix,
    )
    assert {principal.index.nodes[i].code for i in principal.node_ids} == {"A", "A1", "A2", "A1x"}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t[:4] + "ffffffff" + t[12:],
        lambda _t: None,
        lambda _t: "garbage",
    ],
)
def test_wrong_tokens_are_refused(engine: Engine, mangle: object) -> None:
    with Session(engine) as session, session.begin():
        issued = issue_token(session, "admin", "ST", "ops")
    with Session(engine) as session, pytest.raises(NotAuthenticatedError):
        authenticate(session, mangle(issued.token))  # type: ignore[operator]


def test_revoked_token_is_refused(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        issued = issue_token(session, "admin", "ST", "ops")
    with Session(engine) as session, session.begin():
        assert revoke_token(session, issued.prefix)
        assert not revoke_token(session, "00000000")
    with Session(engine) as session, pytest.raises(NotAuthenticatedError, match="revoked"):
        authenticate(session, issued.token)


@pytest.mark.parametrize(
    ("role", "node", "message"),
    [("boss", "ST", "role 'boss' unknown"), ("admin", "ZZ", "node 'ZZ'")],
)
def test_issue_refuses_unknown_role_or_node(
    engine: Engine, role: str, node: str, message: str
) -> None:
    with Session(engine) as session, pytest.raises(ValueError, match=message):
        issue_token(session, role, node, "x")
