"""API tokens, roles and hierarchy scopes.

A token looks like ``scc_<prefix>_<secret>``: the 8-hex-digit prefix is public (it finds
the row and names the token in lists), the secret is 32 random bytes, urlsafe base64.
Only SHA-256 of the secret is stored. A fast hash is enough here because the secret is
random with 256 bits of entropy (nothing to guess from a dictionary), unlike a password.

Every token has a role (what it may do, :data:`PERMISSIONS`) and a scope node (where: that
node and all its descendants). Outside the scope things do not exist for the token (the
API answers 404); a role without the permission gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.api.models import ApiToken
from gateway.registry.models import Node

Role = Literal["admin", "integrator", "manager", "grid_member", "read_only"]
Action = Literal["read", "write"]
ROLES: tuple[Role, ...] = get_args(Role)
RESOURCES: tuple[str, ...] = (
    "device_types",
    "devices",
    "nodes",
    "staff",
    "rules",
    "alerts",
    "work_orders",
    "metrics",
)
TOKEN_SCHEME = "scc"  # noqa: S105 - the token prefix, not a secret

_READ_ALL = frozenset(f"{resource}:read" for resource in RESOURCES)


def _writes(*resources: str) -> frozenset[str]:
    return frozenset(f"{resource}:write" for resource in resources)


#: What each role may do, as ``"<resource>:<action>"``; every role reads everything
#: inside its scope, and writes differ.
PERMISSIONS: Mapping[Role, frozenset[str]] = {
    "admin": _READ_ALL | _writes(*RESOURCES),
    "integrator": _READ_ALL | _writes("devices", "rules"),
    "manager": _READ_ALL | _writes("staff", "alerts", "work_orders"),
    "grid_member": _READ_ALL | _writes("alerts", "work_orders"),
    "read_only": _READ_ALL,
}


class AuthError(Exception):
    """Base of the access errors; the API turns each into its HTTP status."""


class NotAuthenticatedError(AuthError):
    """No token, a malformed token, or an unknown or revoked one (HTTP 401)."""


class ForbiddenError(AuthError):
    """The token's role lacks the permission (HTTP 403)."""


class NotInScopeError(AuthError):
    """The thing is outside the token's scope, or does not exist (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One hierarchy node as the scope logic sees it."""

    id: int
    code: str
    level: str
    name: str
    parent_id: int | None


@dataclass(frozen=True)
class NodeIndex:
    """The whole hierarchy in memory (a community has a few hundred nodes)."""

    nodes: Mapping[int, NodeRow]
    children: Mapping[int, tuple[int, ...]]
    by_code: Mapping[str, int]

    @classmethod
    def load(cls, session: Session) -> NodeIndex:
        """Read every node once."""
        rows = session.execute(select(Node.id, Node.code, Node.level, Node.name, Node.parent_id))
        nodes = {
            row.id: NodeRow(row.id, row.code, row.level, row.name, row.parent_id) for row in rows
        }
        children: dict[int, list[int]] = {}
        for node in sorted(nodes.values(), key=lambda n: n.id):
            if node.parent_id is not None:
                children.setdefault(node.parent_id, []).append(node.id)
        return cls(
            nodes,
            {key: tuple(value) for key, value in children.items()},
            {node.code: node.id for node in nodes.values()},
        )

    def subtree(self, node_id: int) -> frozenset[int]:
        """``node_id`` and all its descendants."""
        found: set[int] = set()
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in found or current not in self.nodes:
                continue
            found.add(current)
            stack.extend(self.children.get(current, ()))
        return frozenset(found)

    def path(self, node_id: int) -> list[NodeRow]:
        """Ancestors from the root down to and including ``node_id``."""
        out: list[NodeRow] = []
        current: int | None = node_id
        while current is not None and current in self.nodes and len(out) <= len(self.nodes):
            out.append(self.nodes[current])
            current = self.nodes[current].parent_id
        return out[::-1]

    def walk(self, node_id: int) -> Iterator[NodeRow]:
        """``node_id`` and its descendants, depth first."""
        yield self.nodes[node_id]
        for child in self.children.get(node_id, ()):
            yield from self.walk(child)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's role and the set of node ids it may see."""

    token_prefix: str
    name: str
    role: Role
    scope_node_id: int
    node_ids: frozenset[int]
    index: NodeIndex = field(repr=False, compare=False)

    @property
    def scope_code(self) -> str:
        """Code of the scope node."""
        return self.index.nodes[self.scope_node_id].code

    @property
    def is_global(self) -> bool:
        """True for a token scoped at a root of the hierarchy (it sees everything)."""
        return self.index.nodes[self.scope_node_id].parent_id is None

    @property
    def permissions(self) -> frozenset[str]:
        """The role's permissions."""
        return PERMISSIONS[self.role]

    def can(self, resource: str, action: Action) -> bool:
        """Whether the role allows ``action`` on ``resource`` (scope aside)."""
        return f"{resource}:{action}" in PERMISSIONS[self.role]

    def require(self, resource: str, action: Action) -> None:
        """Raise :class:`ForbiddenError` unless the role allows it."""
        if not self.can(resource, action):
            raise ForbiddenError(
                f"role {self.role!r} may not {action} {resource.replace('_', ' ')}"
            )

    def sees(self, node_id: int | None) -> bool:
        """Whether ``node_id`` is inside the scope."""
        return node_id is not None and node_id in self.node_ids

    def node_in_scope(self, code: str) -> NodeRow:
        """The node with ``code``; :class:`NotInScopeError` if unknown or outside the scope."""
        node_id = self.index.by_code.get(code)
        if node_id is None or not self.sees(node_id):
            raise NotInScopeError(f"node {code!r} not found")
        return self.index.nodes[node_id]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly created token; ``token`` is shown once and never stored."""

    prefix: str
    role: Role
    node: str
    name: str
    token: str = field(repr=False)


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a token secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed token, else None."""
    scheme, _, rest = token.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != TOKEN_SCHEME or len(prefix) != 8 or len(secret) < 32 or len(secret) > 64:
        return None
    if not all(c in "0123456789abcdef" for c in prefix):
        return None
    return prefix, secret


def issue_token(session: Session, role: str, node_code: str, name: str) -> IssuedToken:
    """Create a token for ``role`` scoped at ``node_code``; the caller commits."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} unknown; roles: {', '.join(ROLES)}")
    node_id = session.scalar(select(Node.id).where(Node.code == node_code))
    if node_id is None:
        raise ValueError(f"node {node_code!r} is not in the hierarchy")
    prefix = secrets.token_hex(4)
    while session.scalar(select(ApiToken.id).where(ApiToken.prefix == prefix)) is not None:
        prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            prefix=prefix, secret_sha256=hash_secret(secret), role=role, node_id=node_id, name=name
        )
    )
    session.flush()
    token = f"{TOKEN_SCHEME}_{prefix}_{secret}"
    return IssuedToken(prefix, role, node_code, name, token)


def authenticate(session: Session, token: str | None) -> Principal:
    """The principal of a presented token; :class:`NotAuthenticatedError` if it is not valid."""
    if not token:
        raise NotAuthenticatedError(
            "an API token is required: send 'Authorization: Bearer <token>'"
        )
    parsed = parse_token(token)
    row = None
    if parsed is not None:
        row = session.scalar(select(ApiToken).where(ApiToken.prefix == parsed[0]))
    # Compare even when nothing matched, so timing does not tell which prefixes exist.
    expected = row.secret_sha256 if row is not None else "0" * 64
    matches = hmac.compare_digest(expected, hash_secret(parsed[1] if parsed else ""))
    if row is None or not matches or row.revoked_at is not None or row.role not in ROLES:
        raise NotAuthenticatedError("the API token is not valid (unknown, malformed or revoked)")
    index = NodeIndex.load(session)
    return Principal(row.prefix, row.name, row.role, row.node_id, index.subtree(row.node_id), index)


def token_problem(session: Session, principal: Principal) -> str | None:
    """Why the token behind ``principal`` no longer grants what it did when it was
    checked (revoked, deleted, another role or scope), or None while it still does.

    Long-lived responses (the event stream) ask this every few seconds."""
    row = session.scalar(select(ApiToken).where(ApiToken.prefix == principal.token_prefix))
    if row is None:
        return "the API token no longer exists"
    if row.revoked_at is not None:
        return "the API token was revoked"
    if row.role != principal.role:
        return f"the API token's role changed from {principal.role} to {row.role}"
    if row.node_id != principal.scope_node_id:
        return "the API token's scope changed"
    return None


def list_tokens(session: Session) -> list[tuple[ApiToken, str]]:
    """Every token with the code of its scope node, oldest first."""
    rows = session.execute(
        select(ApiToken, Node.code).join(Node, Node.id == ApiToken.node_id).order_by(ApiToken.id)
    )
    return [(token, code) for token, code in rows.tuples()]


def revoke_token(session: Session, prefix: str) -> bool:
    """Mark the token revoked; False if there is no such token."""
    row = session.scalar(select(ApiToken).where(ApiToken.prefix == prefix))
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return True
