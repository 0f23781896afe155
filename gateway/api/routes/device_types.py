"""Device types: each kind's fields, codecs, payload JSON Schema and default rules."""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml
from fastapi import APIRouter

from devices import KINDS, load_kind
from gateway.api.auth import NotInScopeError
from gateway.api.deps import PrincipalDep
from gateway.api.schemas import DeviceTypePublic, ErrorBody, FieldPublic

router = APIRouter(
    prefix="/device-types",
    tags=["device types"],
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
)


@cache
def describe(kind: str) -> DeviceTypePublic:
    """The public description of one kind (built once; kinds do not change at run time)."""
    spec = load_kind(kind)
    fields = [
        FieldPublic(
            key=f.key,
            type=f.type,
            unit=f.unit,
            minimum=f.minimum,
            maximum=f.maximum,
            description=f.description,
            choices=list(f.choices),
        )
        for f in spec.fields
    ]
    return DeviceTypePublic(
        name=spec.name,
        title_zh=spec.title_zh,
        title_en=spec.title_en,
        heartbeat_s=spec.heartbeat_s,
        codecs=list(spec.codecs),
        fields=fields,
        json_schema=spec.model.model_json_schema(),
        default_rules=_default_rules(kind),
    )


def _default_rules(kind: str) -> list[dict[str, Any]]:
    path = load_kind(kind).folder / "rules.yaml"
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rules = data.get("rules", []) if isinstance(data, dict) else []
    return [rule for rule in rules if isinstance(rule, dict)]


@router.get("", summary="List device types", response_model=list[DeviceTypePublic])
def list_device_types(principal: PrincipalDep) -> list[DeviceTypePublic]:
    """Every installed device kind with fields, units, ranges, codecs, schema and rules."""
    principal.require("device_types", "read")
    return [describe(kind) for kind in KINDS]


@router.get(
    "/{kind}",
    summary="Get one device type",
    response_model=DeviceTypePublic,
    responses={404: {"model": ErrorBody}},
)
def get_device_type(kind: str, principal: PrincipalDep) -> DeviceTypePublic:
    """One device kind by name (e.g. ``smoke``)."""
    principal.require("device_types", "read")
    if kind not in KINDS:
        raise NotInScopeError(f"device type {kind!r} not found; known: {', '.join(KINDS)}")
    return describe(kind)
