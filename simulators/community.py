"""The demo community: a deterministic generator and loaders for its fixture files.

``generate_community(seed)`` builds one street with one community, two grids, four
compounds, twenty buildings and forty units, staffed with fake people, and exactly 2,000
devices (1,800 smoke detectors, 40 throw cameras, 100 bins, 60 manholes). The rendered
files are committed under ``fixtures/demo_community``; a unit test regenerates them and
compares byte for byte, so the generator is the single source of truth.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("street", "community", "grid", "compound", "building", "unit")
ROLES: tuple[str, ...] = (
    *("street_officer", "community_secretary", "grid_head", "grid_member"),
    *("property_manager", "building_head", "unit_head"),
)
CSV_HEADER: tuple[str, ...] = tuple(
    ["device_id", "kind", "model", "codec", "node", "location", "params", "installed_at"]
)
SMOKE_PER_UNIT = 45  # 40 units x 45 = 1,800 smoke detectors
ROOMS_PER_FLOOR = 3
BINS_PER_COMPOUND = 25
MANHOLES_PER_COMPOUND = 15

_COMPOUND_NAMES = ("阳光小区", "翠湖小区", "和平小区", "明德小区")
_GRID_NAMES = ("第一网格", "第二网格")
_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚华建国红英文"
_BIN_SPOTS = ("东侧", "西侧", "南侧", "北侧", "入口")


class CommunityError(ValueError):
    """A fixture file is malformed; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Staff:
    """A responsible person attached to a hierarchy node."""

    name: str
    role: str
    email: str
    phone: str


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the 街道 → 社区 → 网格 → 小区 → 楼栋 → 单元 tree."""

    code: str
    level: str
    name: str
    floors: int | None = None
    staff: tuple[Staff, ...] = ()
    children: tuple[Node, ...] = ()

    def walk(self) -> Iterator[Node]:
        """This node and all its descendants, depth first, in file order."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One row of ``devices.csv`` with its ``params`` parsed into a dict."""

    device_id: str
    kind: str
    model: str
    codec: str
    node: str
    location: str
    params: Mapping[str, str] = field(hash=False)
    installed_at: date


def parse_params(text: str) -> dict[str, str]:
    """Parse ``key=value;key=value`` (empty text → no params)."""
    params: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"param {item!r} is not key=value")
        params[key.strip()] = value.strip()
    return params


def format_params(params: Mapping[str, str]) -> str:
    """The inverse of ``parse_params``; keys keep their insertion order."""
    return ";".join(f"{key}={value}" for key, value in params.items())


def parse_location(text: str) -> tuple[str, str]:
    """Split a location shorthand ``B3-2-1001`` into node ``B3-2`` and location ``1001``."""
    node, sep, location = text.rpartition("-")
    if not sep or not node or not location:
        raise ValueError(f"{text!r} is not <node>-<location>, e.g. B3-2-1001")
    return node, location


def load_devices(path: Path) -> list[DeviceRow]:
    """Read ``devices.csv``; CommunityError names the line of the first bad row."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != CSV_HEADER:
            raise CommunityError(f"{path}: header must be {','.join(CSV_HEADER)}")
        rows: list[DeviceRow] = []
        for line, record in enumerate(reader, start=2):
            try:
                rows.append(_row_from_record(record))
            except (ValueError, TypeError) as err:
                raise CommunityError(f"{path}:{line}: {err}") from err
    return rows


def _row_from_record(record: Mapping[str, str]) -> DeviceRow:
    for key in ("device_id", "kind", "codec", "node"):
        if not record[key]:
            raise ValueError(f"{key} is empty")
    return DeviceRow(
        device_id=record["device_id"],
        kind=record["kind"],
        model=record["model"],
        codec=record["codec"],
        node=record["node"],
        location=record["location"],
        params=parse_params(record["params"]),
        installed_at=date.fromisoformat(record["installed_at"]),
    )


def load_hierarchy(path: Path) -> Node:
    """Read ``hierarchy.yaml`` (one root node mapping) into a tree of frozen Nodes."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    seen: set[str] = set()
    try:
        return _node_from_doc(doc, seen)
    except (ValueError, TypeError, KeyError) as err:
        raise CommunityError(f"{path}: {err}") from err


def _node_from_doc(doc: Any, seen: set[str]) -> Node:
    if not isinstance(doc, dict):
        raise TypeError(f"a node must be a mapping, got {type(doc).__name__}")
    code, level = str(doc["code"]), str(doc["level"])
    if level not in LEVELS:
        raise ValueError(f"node {code}: level {level!r} is not one of {', '.join(LEVELS)}")
    if code in seen:
        raise ValueError(f"node code {code} appears twice")
    seen.add(code)
    staff = tuple(_staff_from_doc(code, item) for item in doc.get("staff") or ())
    children = tuple(_node_from_doc(child, seen) for child in doc.get("children") or ())
    floors = doc.get("floors")
    return Node(code, level, str(doc["name"]), int(floors) if floors else None, staff, children)


def _staff_from_doc(code: str, item: Any) -> Staff:
    if not isinstance(item, dict):
        raise TypeError(f"node {code}: staff entries must be mappings")
    staff = Staff(str(item["name"]), str(item["role"]), str(item["email"]), str(item["phone"]))
    if staff.role not in ROLES:
        raise ValueError(f"node {code}: role {staff.role!r} is not one of {', '.join(ROLES)}")
    return staff


def parent_map(root: Node) -> dict[str, str]:
    """Child code → parent code for every node below ``root``."""
    return {child.code: node.code for node in root.walk() for child in node.children}


# --- generator -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneratedCommunity:
    """What the generator produces: the tree (as YAML-ready dicts) and the device rows."""

    hierarchy: dict[str, Any]
    devices: list[DeviceRow]

    def hierarchy_text(self) -> str:
        """``hierarchy.yaml`` exactly as committed."""
        body = yaml.safe_dump(
            self.hierarchy, allow_unicode=True, sort_keys=False, width=1000, indent=2
        )
        return _HEADER + body

    def devices_text(self) -> str:
        """``devices.csv`` exactly as committed."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for row in self.devices:
            params, installed = format_params(row.params), row.installed_at.isoformat()
            writer.writerow([*_identity(row), params, installed])
        return out.getvalue()


def _identity(row: DeviceRow) -> tuple[str, ...]:
    return (row.device_id, row.kind, row.model, row.codec, row.node, row.location)


_HEADER = (
    "# Demo community, generated by `python -m simulators generate-community --seed 1`.\n"
    "# Do not edit by hand: regenerate (a unit test compares this file with the generator).\n"
)


class _Gen:
    """Stateful helper holding the random stream while the tree is built."""

    def __init__(self, seed: int) -> None:
        # Reproducible fake data, not cryptography.
        self.rng = random.Random(f"community:{seed}")
        self.devices: list[DeviceRow] = []
        self.base_day = date(2024, 3, 1)

    def person(self, role: str, code: str, index: int) -> dict[str, str]:
        given = "".join(self.rng.choice(_GIVEN) for _ in range(self.rng.randint(1, 2)))
        slug = role.replace("_", "-")
        return {
            "name": self.rng.choice(_SURNAMES) + given,
            "role": role,
            "email": f"{slug}.{code.lower()}.{index}@example.org",
            "phone": f"+86 10 5555 {self.rng.randrange(10_000):04d}",
        }

    def team(self, code: str, *roles: str) -> list[dict[str, str]]:
        return [self.person(role, code, i) for i, role in enumerate(roles, start=1)]

    def day(self, spread: int) -> date:
        return self.base_day + timedelta(days=self.rng.randrange(spread))

    def add(self, *fields: str, params: Mapping[str, str], installed: date) -> None:
        device_id, kind, model, codec, node, location = fields
        self.devices.append(
            DeviceRow(device_id, kind, model, codec, node, location, dict(params), installed)
        )


def generate_community(seed: int = 1) -> GeneratedCommunity:
    """Build the demo community for ``seed`` (the committed fixture uses seed 1)."""
    gen = _Gen(seed)
    grids = [_grid(gen, g) for g in range(1, len(_GRID_NAMES) + 1)]
    community = _node("SQ1", "community", "花园社区", gen.team("SQ1", "community_secretary"))
    community["children"] = grids
    street = _node("ST1", "street", "望京街道", gen.team("ST1", "street_officer", "street_officer"))
    street["children"] = [community]
    # Devices are listed by kind (all smoke first), a stable order the fleet relies on.
    order = ("smoke", "throw_camera", "bin", "manhole")
    gen.devices.sort(key=lambda row: order.index(row.kind))
    logger.debug("generated %d devices for seed %d", len(gen.devices), seed)
    return GeneratedCommunity(street, gen.devices)


def _node(
    code: str, level: str, name: str, staff: list[dict[str, str]], floors: int = 0
) -> dict[str, Any]:
    node: dict[str, Any] = {"code": code, "level": level, "name": name}
    if floors:
        node["floors"] = floors
    if staff:
        node["staff"] = staff
    return node


def _grid(gen: _Gen, g: int) -> dict[str, Any]:
    code = f"G{g}"
    node = _node(
        code, "grid", _GRID_NAMES[g - 1], gen.team(code, "grid_head", *["grid_member"] * 2)
    )
    node["children"] = [_compound(gen, c) for c in (2 * g - 1, 2 * g)]
    return node


def _compound(gen: _Gen, c: int) -> dict[str, Any]:
    code = f"C{c}"
    staff = gen.team(code, "property_manager", "property_manager")
    node = _node(code, "compound", _COMPOUND_NAMES[c - 1], staff)
    first = 5 * (c - 1) + 1
    node["children"] = [_building(gen, b) for b in range(first, first + 5)]
    _bins(gen, c, range(first, first + 5))
    _manholes(gen, c)
    return node


def _building(gen: _Gen, b: int) -> dict[str, Any]:
    code = f"B{b}"
    floors = gen.rng.randint(15, 18)
    staff = gen.team(code, "building_head") if gen.rng.random() < 0.6 else []
    node = _node(code, "building", f"{b}号楼", staff, floors)
    node["children"] = [_unit(gen, code, u, floors) for u in (1, 2)]
    installed = gen.day(60)
    for facade in ("east", "west"):
        params = {"floors": str(floors), "facade": facade}
        gen.add(
            f"cam-{code}-{facade}",
            "throw_camera",
            "HK-TC-200",
            "json",
            code,
            facade,
            params=params,
            installed=installed,
        )
    return node


def _unit(gen: _Gen, building: str, u: int, floors: int) -> dict[str, Any]:
    code = f"{building}-{u}"
    staff = gen.team(code, "unit_head") if gen.rng.random() < 0.25 else []
    node = _node(code, "unit", f"{u}单元", staff)
    rooms = [f"{f}{r:02d}" for f in range(1, floors + 1) for r in range(1, ROOMS_PER_FLOOR + 1)]
    # Taller buildings have more households than detectors: some flats are vacant.
    vacant = set(gen.rng.sample(rooms, len(rooms) - SMOKE_PER_UNIT))
    installed = gen.day(60)
    for room in rooms:
        if room not in vacant:
            gen.add(
                f"smoke-{code}-{room}",
                "smoke",
                "JTY-GD-H388",
                "json",
                code,
                room,
                params={"floor": room[:-2]},
                installed=installed,
            )
    return node


def _bins(gen: _Gen, c: int, buildings: range) -> None:
    compound = f"C{c}"
    installed = gen.day(90)
    spots = [f"{b}号楼{spot}" for b in buildings for spot in _BIN_SPOTS]
    for n, location in enumerate(spots[:BINS_PER_COMPOUND], start=1):
        # Alternating over the whole community: 50 of each model, not 13 + 12 per compound.
        model, codec = ("EM310-UDL", "em310-udl") if (c + n) % 2 == 0 else ("SB-200", "json")
        params = {"depth_mm": str(gen.rng.choice((1000, 1100, 1200)))}
        gen.add(
            f"bin-{compound}-{n:02d}",
            "bin",
            model,
            codec,
            compound,
            location,
            params=params,
            installed=installed,
        )


def _manholes(gen: _Gen, c: int) -> None:
    compound = f"C{c}"
    installed = gen.day(90)
    for n in range(1, MANHOLES_PER_COMPOUND + 1):
        model, codec = ("EM310-TILT", "em310-tilt") if (c + n) % 2 == 0 else ("MC-100", "json")
        params = {"depth_cm": str(gen.rng.randrange(150, 301, 10))}
        gen.add(
            f"mh-{compound}-{n:02d}",
            "manhole",
            model,
            codec,
            compound,
            f"道路{n:02d}号井",
            params=params,
            installed=installed,
        )


def write_community(out: Path, seed: int = 1) -> GeneratedCommunity:
    """Generate and write ``hierarchy.yaml`` and ``devices.csv`` into ``out``."""
    generated = generate_community(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hierarchy.yaml").write_text(generated.hierarchy_text(), encoding="utf-8")
    (out / "devices.csv").write_text(generated.devices_text(), encoding="utf-8")
    logger.info("wrote %d devices to %s", len(generated.devices), out)
    return generated
