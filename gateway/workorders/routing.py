"""Who owns a problem: the lowest hierarchy node with a team for it, and who is told.

"Small matters stay in the grid, big matters stay in the street" (小事不出网格，大事不出街道):
a work order goes to the LOWEST node on the problem's path (street → … → unit) whose staff
hold a role eligible for the order's category; when an SLA is breached it escalates to the
next ANCESTOR of its current owner that has staff with any handling role. Building and unit
heads are volunteers: they are copied on notifications below the owner, never owners.

The decision itself (``plan_route``) is a pure function of the path and the staff, so it is
table-tested without a database; ``Router`` only reads the registry tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.registry.models import LEVELS, Device, Node, Staff

GRID_TEAM: tuple[str, ...] = ("grid_head", "grid_member")
PROPERTY: tuple[str, ...] = ("property_manager",)
HANDLING_ROLES: tuple[str, ...] = (
    "street_officer",
    "community_secretary",
    "grid_head",
    "grid_member",
    "property_manager",
)
VOLUNTEER_ROLES: tuple[str, ...] = ("building_head", "unit_head")

# Which roles own a category. Safety matters go to the grid team (网格吹哨: the grid calls
# in the departments); upkeep goes to the property company. A category whose roles are
# nowhere on the path, or that is not listed, falls back to any handling role.
CATEGORY_ROLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "fire": GRID_TEAM,
        "safety": GRID_TEAM,
        "public_safety": GRID_TEAM,
        "urban_management": GRID_TEAM,
        "sanitation": PROPERTY,
        "maintenance": PROPERTY,
        "facility": PROPERTY,
        "utilities": PROPERTY,
        "manual": PROPERTY,
    }
)


#: The level each staff role belongs to. Roles that own work orders (``HANDLING_ROLES``)
#: capture the routing of the subtree they are attached to, so who may attach them is
#: bounded by :func:`grant_problem`.
ROLE_LEVELS: Mapping[str, str] = MappingProxyType(
    {
        "street_officer": "street",
        "community_secretary": "community",
        "grid_head": "grid",
        "grid_member": "grid",
        "property_manager": "compound",
        "building_head": "building",
        "unit_head": "unit",
    }
)
STAFF_ROLES: tuple[str, ...] = tuple(ROLE_LEVELS)


def _depth(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else len(LEVELS)


def grant_problem(role: str, node_level: str, granter_level: str) -> tuple[str, str] | None:
    """Whether a token scoped at a ``granter_level`` node may attach (change, remove) a
    staff entry with ``role`` at a ``node_level`` node inside its scope.

    The rule: a role sits at its own level or below (a ``grid_head`` on a grid, or on a
    compound, building or unit of that grid, never on a community); and a token grants
    only roles of its own level or below. A role below its level takes that level's work
    orders for the subtree it is attached to, so only those entitled at that level may
    place it: a compound manager may add property managers and building or unit heads in
    its compound, not a grid head at one of its buildings (which would take fire orders
    away from the grid team). Returns ``("placement" | "entitlement", message)`` or None.
    Roles not in :data:`ROLE_LEVELS` (older free-form entries) route nothing: None.
    """
    home = ROLE_LEVELS.get(role)
    if home is None:
        return None
    if _depth(node_level) < _depth(home):
        return "placement", f"{role!r} belongs at the {home} level or below, not on a {node_level}"
    if _depth(granter_level) > _depth(home):
        owns = sorted(c for c, roles in CATEGORY_ROLES.items() if role in roles)
        what = f"it takes {', '.join(owns)} work orders" if owns else "it is a"
        where = f"from the {home} level" if owns else f"{home}-level role"
        return "entitlement", (
            f"a token scoped at the {granter_level} level may not grant {role!r}: {what} "
            f"{where}; only a token scoped at a {home} node or above may attach, change or "
            "remove one"
        )
    return None


@dataclass(frozen=True, slots=True)
class PathNode:
    """One node on a hierarchy path."""

    node_id: int
    level: str
    code: str


@dataclass(frozen=True, slots=True)
class StaffMember:
    """A staff row, detached from the database."""

    staff_id: int
    node_id: int
    name: str
    role: str
    email: str | None = None
    phone: str | None = None

    def as_recipient(self, node_code: str, *, cc: bool) -> dict[str, object]:
        """The recipient entry of a notification event."""
        return {
            "staff_id": self.staff_id,
            "name": self.name,
            "role": self.role,
            "email": self.email,
            "phone": self.phone,
            "node": node_code,
            "cc": cc,
        }


@dataclass(frozen=True, slots=True)
class Route:
    """The owner of a problem, the people to tell, and where it escalates next."""

    owner: PathNode | None
    owners: tuple[StaffMember, ...]
    cc: tuple[StaffMember, ...]
    escalation: PathNode | None
    codes: Mapping[int, str]  # node id → code, for recipient entries

    def recipients(self) -> list[dict[str, object]]:
        """Owners first, then the volunteers copied in."""
        return [m.as_recipient(self.codes.get(m.node_id, ""), cc=False) for m in self.owners] + [
            m.as_recipient(self.codes.get(m.node_id, ""), cc=True) for m in self.cc
        ]


def eligible_roles(category: str) -> tuple[str, ...]:
    """The roles that may own ``category`` (any handling role when unknown)."""
    return CATEGORY_ROLES.get(category, HANDLING_ROLES)


def path_string(path: Sequence[PathNode]) -> str:
    """``/ST1/SQ1/G1/C1/`` — a path as a string that ``LIKE '%/C1/%'`` can scope on."""
    return "/" + "".join(f"{node.code}/" for node in path)


def _has_role(members: Iterable[StaffMember], roles: Sequence[str]) -> bool:
    return any(member.role in roles for member in members)


def _lowest_index(
    path: Sequence[PathNode], staff: Mapping[int, Sequence[StaffMember]], roles: Sequence[str]
) -> int | None:
    for index in range(len(path) - 1, -1, -1):
        if _has_role(staff.get(path[index].node_id, ()), roles):
            return index
    return None


def _owner_index(
    path: Sequence[PathNode], staff: Mapping[int, Sequence[StaffMember]], category: str
) -> int | None:
    found = _lowest_index(path, staff, eligible_roles(category))
    return found if found is not None else _lowest_index(path, staff, HANDLING_ROLES)


def plan_route(
    path: Sequence[PathNode],
    staff: Mapping[int, Sequence[StaffMember]],
    category: str,
    owner_id: int | None = None,
) -> Route:
    """Route a problem at the bottom of ``path`` (street first).

    With ``owner_id`` None the owner is chosen (lowest eligible node); otherwise the owner is
    kept (an order that has already escalated) and only recipients and the next escalation
    target are worked out.
    """
    codes = {node.node_id: node.code for node in path}
    ids = [node.node_id for node in path]
    index = _owner_index(path, staff, category) if owner_id is None else None
    if owner_id is not None and owner_id in ids:
        index = ids.index(owner_id)
    if index is None:
        return Route(None, (), (), None, codes)
    owner = path[index]
    at_owner = staff.get(owner.node_id, ())
    owners = tuple(m for m in at_owner if m.role in eligible_roles(category)) or tuple(
        m for m in at_owner if m.role in HANDLING_ROLES
    )
    cc = tuple(
        member
        for node in path[index + 1 :]
        for member in staff.get(node.node_id, ())
        if member.role in VOLUNTEER_ROLES
    )
    above = _lowest_index(path[:index], staff, HANDLING_ROLES)
    return Route(owner, owners, cc, None if above is None else path[above], codes)


class Router:
    """Reads hierarchy paths and staff from the registry tables and plans routes."""

    def __init__(self, cache_s: float = 30.0) -> None:
        self.cache_s = cache_s
        self._cache: dict[tuple[int | None, str, int | None], tuple[float, Route]] = {}
        self._paths: dict[int, tuple[float, tuple[PathNode, ...]]] = {}

    def forget(self) -> None:
        """Drop cached routes and paths (after staff or hierarchy changes)."""
        self._cache.clear()
        self._paths.clear()

    def device_node(self, session: Session, device_id: str) -> int | None:
        """The node a registered device hangs at (None for unknown devices)."""
        return session.scalar(select(Device.node_id).where(Device.device_id == device_id))

    def node_by_code(self, session: Session, code: str) -> PathNode | None:
        """A node by its code."""
        node = session.scalar(select(Node).where(Node.code == code))
        return None if node is None else PathNode(node.id, node.level, node.code)

    def path(self, session: Session, node_id: int | None) -> tuple[PathNode, ...]:
        """The path from the street down to ``node_id`` (empty when unknown).

        Cached for ``cache_s`` seconds like routes: a new alert needs its device's path, and
        reading it node by node was a quarter of the alert-and-work-order transaction."""
        if node_id is None:
            return ()
        now = time.monotonic()
        cached = self._paths.get(node_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        path = self._read_path(session, node_id)
        if path:  # an unknown node may be created any moment: not cached
            if len(self._paths) > 10_000:
                self._paths.clear()
            self._paths[node_id] = (now + self.cache_s, path)
        return path

    def _read_path(self, session: Session, node_id: int) -> tuple[PathNode, ...]:
        nodes: list[PathNode] = []
        current: int | None = node_id
        while current is not None and len(nodes) <= len(LEVELS):
            node = session.get(Node, current)
            if node is None:
                break
            nodes.append(PathNode(node.id, node.level, node.code))
            current = node.parent_id
        return tuple(reversed(nodes))

    def staff_on(self, session: Session, node_ids: Iterable[int]) -> dict[int, list[StaffMember]]:
        """Staff per node for the nodes named."""
        out: dict[int, list[StaffMember]] = {}
        query = select(Staff).where(Staff.node_id.in_(list(node_ids))).order_by(Staff.id)
        for row in session.scalars(query):
            member = StaffMember(row.id, row.node_id, row.name, row.role, row.email, row.phone)
            out.setdefault(row.node_id, []).append(member)
        return out

    def route(
        self,
        session: Session,
        origin_node_id: int | None,
        category: str,
        owner_id: int | None = None,
    ) -> Route:
        """Plan the route of a problem at ``origin_node_id`` (see ``plan_route``).

        Routes are cached for ``cache_s`` seconds: repeated readings of a firing alert must
        not query the hierarchy and staff every time. Staff changes show within that time.
        """
        key = (origin_node_id, category, owner_id)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        path = self.path(session, origin_node_id)
        staff = self.staff_on(session, [node.node_id for node in path])
        route = plan_route(path, staff, category, owner_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self.cache_s, route)
        return route
