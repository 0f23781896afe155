"""Device registry: hierarchy, staff and devices, and the lookups the pipeline enriches with.

Loading a community (``hierarchy.yaml`` + ``devices.csv``) is all or nothing: every row is
checked first and the errors are reported with their line numbers.
"""

from __future__ import annotations

import csv
import gc
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from sqlalchemy import Engine, Text, func, insert, select, type_coerce, update
from sqlalchemy.orm import Session

from devices import KINDS, load_kind
from gateway.core.db import utcnow
from gateway.registry.device_ids import NO_CONFIGURED_NAMES, ReservedNames, device_id_problem
from gateway.registry.models import LEVELS, Device, Node, Staff

NODE_CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")  # use with fullmatch
CSV_COLUMNS = ("device_id", "kind", "model", "codec", "node", "location", "params", "installed_at")


class RegistryError(ValueError):
    """Registry input was refused; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:10]) + (" …" if len(problems) > 10 else ""))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the pipeline needs to know about a device to decode and enrich its messages."""

    device_id: str
    kind: str
    model: str
    codec: str
    params: Mapping[str, str]
    path: tuple[tuple[str, str], ...] = field(default=())  # (level, code), street first


def parse_params(text: str) -> dict[str, str]:
    """``key=value;key=value`` → dict; raises ValueError naming the bad part."""
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"params part {part!r} is not key=value")
        params[key.strip()] = value.strip()
    return params


def check_device_fields(
    device_id: str,
    kind: str,
    codec: str,
    params: Mapping[str, str],
    reserved: ReservedNames = NO_CONFIGURED_NAMES,
) -> list[str]:
    """Problems with one device's identity, kind and codec (empty when it is fine)."""
    problems = []
    id_problem = device_id_problem(device_id, reserved)
    if id_problem is not None:
        problems.append(id_problem)
    if kind not in KINDS:
        problems.append(f"kind {kind!r} unknown; known: {', '.join(KINDS)}")
    elif codec not in load_kind(kind).codecs:
        known = ", ".join(load_kind(kind).codecs)
        problems.append(f"codec {codec!r} not available for {kind}; available: {known}")
    return problems


class Registry:
    """Reads and writes the registry tables.

    ``reserved``: the broker names of this deployment (its logins and client id) that no
    device id may take, besides the ``scc-…`` names reserved everywhere.
    """

    def __init__(self, engine: Engine, reserved: ReservedNames = NO_CONFIGURED_NAMES) -> None:
        self.engine = engine
        self.reserved = reserved

    # -- hierarchy ---------------------------------------------------------------------
    def load_hierarchy(self, tree: Mapping[str, Any]) -> int:
        """Upsert a nested node tree (with staff); returns the number of nodes."""
        count = 0
        with Session(self.engine) as session, session.begin():
            existing = {node.code: node for node in session.scalars(select(Node))}
            for parent_code, item in _walk(tree, None):
                level = str(item.get("level", ""))
                if level not in LEVELS:
                    raise RegistryError([f"node {item.get('code')!r}: level {level!r} unknown"])
                code = str(item["code"])
                if not NODE_CODE_RE.fullmatch(code):
                    raise RegistryError(
                        [f"node code {code!r} must be 1-64 of A-Z a-z 0-9 _ . : - (it is a tag)"]
                    )
                node = existing.get(code) or Node(code=code)
                node.level, node.name = level, str(item.get("name", code))
                node.parent_id = existing[parent_code].id if parent_code else None
                node.attributes = {
                    k: v
                    for k, v in item.items()
                    if k not in {"code", "level", "name", "children", "staff"}
                }
                session.add(node)
                session.flush()
                existing[code] = node
                session.query(Staff).filter(Staff.node_id == node.id).delete()
                for person in item.get("staff", []) or []:
                    session.add(
                        Staff(
                            node_id=node.id,
                            name=str(person["name"]),
                            role=str(person["role"]),
                            email=person.get("email"),
                            phone=None if person.get("phone") is None else str(person["phone"]),
                        )
                    )
                count += 1
        return count

    def node_paths(self) -> dict[int, tuple[tuple[str, str], ...]]:
        """Every node's path from the street down, as (level, code) pairs."""
        with Session(self.engine) as session:
            rows = session.execute(select(Node.id, Node.parent_id, Node.level, Node.code)).all()
        by_id = {row.id: row for row in rows}
        paths: dict[int, tuple[tuple[str, str], ...]] = {}

        def path_of(node_id: int, depth: int = 0) -> tuple[tuple[str, str], ...]:
            if node_id in paths:
                return paths[node_id]
            row = by_id[node_id]
            if depth > len(LEVELS) or row.parent_id is None:
                result: tuple[tuple[str, str], ...] = ((row.level, row.code),)
            else:
                result = (*path_of(row.parent_id, depth + 1), (row.level, row.code))
            paths[node_id] = result
            return result

        for node_id in by_id:
            path_of(node_id)
        return paths

    # -- devices -----------------------------------------------------------------------
    def load_devices_csv(self, path: Path) -> int:
        """Import devices from CSV, all or nothing; returns the number of rows."""
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise RegistryError([f"{path}: missing columns {sorted(missing)}"])
            rows = list(reader)
        with Session(self.engine) as session, session.begin():
            nodes = {code: node_id for node_id, code in session.execute(select(Node.id, Node.code))}
            problems: list[str] = []
            seen: set[str] = set()
            devices: list[DeviceRow] = []
            for line, row in enumerate(rows, start=2):
                device, errors = _device_from_row(row, nodes, self.reserved)
                if device is not None and device["device_id"] in seen:
                    errors.append(f"device_id {device['device_id']!r} repeated")
                problems += [f"{path.name} line {line}: {err}" for err in errors]
                if device is not None:
                    seen.add(device["device_id"])
                    devices.append(device)
            if problems:
                raise RegistryError(problems)
            _upsert_devices(session, devices)
        return len(devices)

    def load_community(self, directory: Path) -> tuple[int, int]:
        """Load ``hierarchy.yaml`` and ``devices.csv`` from a fixture folder."""
        tree = yaml.safe_load((directory / "hierarchy.yaml").read_text(encoding="utf-8"))
        nodes = self.load_hierarchy(tree)
        return nodes, self.load_devices_csv(directory / "devices.csv")

    def device_infos(self, device_ids: list[str] | None = None) -> dict[str, DeviceInfo]:
        """Active devices (all, or the ones named) with their hierarchy paths.

        Built for a million devices at start-up: plain rows (no ORM objects), and every
        value devices have in common (kind, model, codec, params, path) is one shared object,
        so a device costs its id and its ``DeviceInfo``. Params are read-only mappings.
        """
        paths = self.node_paths()
        # The JSON column as its text: equal texts are parsed once (most devices have "{}").
        params_text = type_coerce(Device.params, Text)
        columns = (Device.device_id, Device.kind, Device.model, Device.codec, params_text)
        query = select(*columns, Device.node_id).where(Device.status == "active")
        if device_ids is not None:
            query = query.where(Device.device_id.in_(device_ids))
        texts: dict[str, str] = {}
        share = texts.setdefault  # one str object per distinct kind, model and codec
        params_of = _ParamsCache()
        infos: dict[str, DeviceInfo] = {}
        # The cycle collector would walk the growing snapshot again and again (half the time
        # of a 1M load); nothing built here can form a cycle.
        with _gc_paused(), self.engine.connect() as conn:
            for part in conn.execute(query).partitions(10_000):
                for device_id, kind, model, codec, params, node_id in part:
                    infos[device_id] = DeviceInfo(
                        device_id,
                        share(kind, kind),
                        share(model, model),
                        share(codec, codec),
                        params_of(params),
                        paths.get(node_id, ()),
                    )
        return infos

    def counts(self) -> dict[str, int]:
        """Number of nodes per level and devices per kind."""
        with Session(self.engine) as session:
            levels = session.execute(select(Node.level, func.count()).group_by(Node.level)).all()
            kinds = session.execute(select(Device.kind, func.count()).group_by(Device.kind)).all()
        out = {f"nodes.{level}": n for level, n in levels}
        out.update({f"devices.{kind}": n for kind, n in kinds})
        return out


_DEVICES = Device.metadata.tables[Device.__tablename__]
DeviceRow = dict[str, Any]  # column name → value of one ``devices`` row


def _upsert_devices(session: Session, rows: list[DeviceRow]) -> None:
    """Insert new devices and update known ones in bulk (one statement each, any size)."""
    ids = [row["device_id"] for row in rows]
    known: set[str] = set()
    for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
        chunk = ids[start : start + 500]
        known.update(session.scalars(select(Device.device_id).where(Device.device_id.in_(chunk))))
    fresh = [row for row in rows if row["device_id"] not in known]
    changed = [row for row in rows if row["device_id"] in known]
    now = utcnow()
    if fresh:
        for row in fresh:
            row["created_at"] = now
        # Core, not the ORM's bulk insert: same statement, a third of the Python work
        session.connection().execute(insert(_DEVICES), fresh)
    if changed:
        session.execute(update(Device), changed)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a bulk load (as it was before, afterwards)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _ParamsCache:
    """One read-only mapping per distinct params value."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[object, Mapping[str, str]] = {}

    def __call__(self, value: object) -> Mapping[str, str]:
        """``value`` as stored: JSON text (SQLite) or already decoded (PostgreSQL's driver)."""
        key = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        found = self._known.get(key)
        if found is None:
            decoded = json.loads(value) if isinstance(value, str) else value
            items = decoded.items() if isinstance(decoded, dict) else ()
            plain = {str(k): str(v) for k, v in items}
            found = self._known[key] = MappingProxyType(plain)
        return found


def _walk(
    tree: Mapping[str, Any], parent: str | None
) -> Iterator[tuple[str | None, Mapping[str, Any]]]:
    if "code" not in tree:
        raise RegistryError(["hierarchy node without a code"])
    yield parent, tree
    for child in tree.get("children", []) or []:
        yield from _walk(child, str(tree["code"]))


def _device_from_row(
    row: Mapping[str, str], nodes: Mapping[str, int], reserved: ReservedNames
) -> tuple[DeviceRow | None, list[str]]:
    """A CSV row as a ``devices`` table row (plain values: a million ORM objects would take
    most of an import's time), or the problems with it."""
    device_id = (row.get("device_id") or "").strip()
    kind = (row.get("kind") or "").strip()
    codec = (row.get("codec") or "json").strip() or "json"
    try:
        params = parse_params(row.get("params") or "")
    except ValueError as err:
        return None, [str(err)]
    errors = check_device_fields(device_id, kind, codec, params, reserved)
    model = (row.get("model") or "").strip()
    if model.endswith("\\") or "\n" in model:
        errors.append(f"model {model!r} must not end with a backslash or contain a line break")
    node_code = (row.get("node") or "").strip()
    if node_code not in nodes:
        errors.append(f"node {node_code!r} not in the hierarchy")
    if errors:
        return None, errors
    device: DeviceRow = {
        "device_id": device_id,
        "kind": kind,
        "model": model or "generic",
        "codec": codec,
        "node_id": nodes[node_code],
        "location": (row.get("location") or "").strip(),
        "params": params,
        "installed_at": (row.get("installed_at") or "").strip() or None,
        "status": "active",
    }
    return device, []
