"""Rules: the running rules, site rules written through the API, and dry-runs.

Rule definitions are gateway-wide, not tied to a place: every token may read them whatever
its scope. Changing them needs the admin or integrator role *and* a token scoped at the
root of the hierarchy, since a rule changed by a compound's token would change for every
compound. A dry-run reads the readings of devices inside the token's scope only.

Changes are files in the site rules directory (see :mod:`gateway.api.rule_files`), checked
before they are written; ``on_rules_changed`` then asks the gateway to reload. Listings
show the rules the gateway runs, so they follow a change once the gateway has reloaded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import groupby
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from devices import KINDS, load_kind
from gateway.api import device_ops
from gateway.api.auth import ForbiddenError, NodeIndex, NotInScopeError, Principal
from gateway.api.context import ApiContext, InfluxReader
from gateway.api.deps import ContextDep, PrincipalDep, RuleStageDep, SessionDep
from gateway.api.errors import UnavailableError, UnprocessableError
from gateway.api.rule_files import SiteRules, find_rule
from gateway.api.schemas import ErrorBody, ValidationErrorBody
from gateway.api.schemas_rules import (
    RULE_EXAMPLE,
    DryRunDevice,
    DryRunRequest,
    DryRunResult,
    RulePublic,
    TransitionPublic,
    default_rules,
    rule_public,
    validated_rule,
)
from gateway.registry.models import LEVELS, Device
from rules import Engine as RuleEngine
from rules import Observation, Rule, RuleSet, Transition
from rules.runtime import NS

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/rules",
    tags=["rules"],
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        503: {"model": ErrorBody, "description": "the API runs without the rules"},
    },
)
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "the site rules would not load with the change"},
    503: {"model": ErrorBody, "description": "no site rules directory, or it cannot be written"},
}
RULE_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
RuleIdPath = Annotated[
    str,
    Path(max_length=128, pattern=RULE_ID_PATTERN, description="rule id, e.g. smoke.fire_alarm"),
]
_RESERVED_IDS = frozenset({"dry-run"})  # POST /rules/dry-run would shadow it
MAX_DRY_RUN_DEVICES = 500
_TICK_NS = 10 * NS  # the dry-run lets time pass in steps like the gateway's rule ticks
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_NS = 2**62
_NOT_VALUES = frozenset({"time", "device_id", "model", *LEVELS})  # tags, not readings


# --- reading -----------------------------------------------------------------------------------


@router.get("", summary="List rules", response_model=list[RulePublic])
def list_rules(
    principal: PrincipalDep,
    stage: RuleStageDep,
    kind: Annotated[str | None, Query(description="device kind, e.g. smoke")] = None,
    enabled: bool | None = None,
) -> list[RulePublic]:
    """Every rule the gateway runs, disabled ones too, by id. Rules are gateway-wide: any
    token may read them whatever its scope (the scope applies to devices, not rules)."""
    principal.require("rules", "read")
    if kind is not None and kind not in KINDS:
        raise UnprocessableError(f"query.kind: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    ruleset = stage.ruleset
    return [
        rule_public(ruleset, rule)
        for rule in sorted(ruleset, key=lambda rule: rule.id)
        if kind in (None, rule.device_type) and enabled in (None, rule.enabled)
    ]


@router.get(
    "/{rule_id}",
    summary="Get a rule",
    response_model=RulePublic,
    responses={404: {"model": ErrorBody}},
)
def get_rule(rule_id: str, principal: PrincipalDep, stage: RuleStageDep) -> RulePublic:
    """One running rule, with where it comes from and its definition."""
    principal.require("rules", "read")
    return rule_public(stage.ruleset, find_rule(stage.ruleset, rule_id))


# --- writing -----------------------------------------------------------------------------------


def _writer(principal: Principal, ctx: ApiContext) -> SiteRules:
    """The site rules directory, once the caller may change rules."""
    principal.require("rules", "write")
    if not principal.is_global:
        raise ForbiddenError(
            "rules apply to the whole gateway: changing them needs a token scoped at the "
            "street root"
        )
    if ctx.rules_dir is None:
        raise UnavailableError(
            "rules cannot be changed: the gateway runs without a site rules directory"
        )
    return SiteRules(ctx.rules_dir, ctx.on_rules_changed)


@router.put(
    "/{rule_id}",
    summary="Create or replace a site rule",
    response_model=RulePublic,
    responses={
        201: {"model": RulePublic, "description": "a new rule"},
        422: {"model": ValidationErrorBody},
        **_WRITE_ERRORS,
    },
)
def put_rule(
    rule_id: RuleIdPath,
    body: Annotated[dict[str, Any], Body(examples=[RULE_EXAMPLE])],
    principal: PrincipalDep,
    ctx: ContextDep,
    response: Response,
) -> RulePublic:
    """Write the rule (the shape of ``devices/<kind>/rules.yaml`` entries, as JSON; ``id``
    may be left out) to ``<id>.yaml`` in the site rules directory. A site rule with a
    default's id replaces that default. Errors name the bad part, e.g.
    ``body.when.any[1].value: 'hot' is not a number for field smoke``. The gateway reloads
    its rules without a restart; alerts of a kept rule survive the change."""
    site = _writer(principal, ctx)
    if rule_id in _RESERVED_IDS:
        raise UnprocessableError(f"path.rule_id: {rule_id!r} is reserved")
    if body.get("id", rule_id) != rule_id:
        raise UnprocessableError(f"body.id: {body['id']!r} differs from the path's {rule_id!r}")
    entry = {"id": rule_id, **{key: value for key, value in body.items() if key != "id"}}
    validated_rule(entry, "body")
    with ctx.rules_lock:
        existed = site.entry(rule_id) is not None or rule_id in default_rules()[0]
        ruleset = site.trial(rule_id, entry)
        site.commit(rule_id, entry)
    response.status_code = 200 if existed else 201
    return rule_public(ruleset, find_rule(ruleset, rule_id))


def _switch(principal: Principal, ctx: ApiContext, rule_id: str, enabled: bool) -> RulePublic:
    site = _writer(principal, ctx)
    with ctx.rules_lock:
        entry = site.entry(rule_id)
        if entry is None:
            site.current(rule_id)  # a default rule (404 unknown, 409 in another file)
            entry = {"id": rule_id}
        entry = {**entry, "enabled": enabled}
        ruleset = site.trial(rule_id, entry)
        site.commit(rule_id, entry)
    return rule_public(ruleset, find_rule(ruleset, rule_id))


_SWITCH_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, **_WRITE_ERRORS}


@router.post(
    "/{rule_id}/enable",
    summary="Switch a rule on",
    response_model=RulePublic,
    responses=_SWITCH_ERRORS,
)
def enable_rule(rule_id: RuleIdPath, principal: PrincipalDep, ctx: ContextDep) -> RulePublic:
    """Switch the rule on: in its site file, or by an ``{id, enabled}`` override file."""
    return _switch(principal, ctx, rule_id, True)


@router.post(
    "/{rule_id}/disable",
    summary="Switch a rule off",
    response_model=RulePublic,
    responses=_SWITCH_ERRORS,
)
def disable_rule(rule_id: RuleIdPath, principal: PrincipalDep, ctx: ContextDep) -> RulePublic:
    """Switch the rule off (its open alerts resolve); it stays listed as disabled."""
    return _switch(principal, ctx, rule_id, False)


@router.delete(
    "/{rule_id}",
    summary="Remove a site rule or override",
    status_code=204,
    responses={404: {"model": ErrorBody}, **_WRITE_ERRORS},
)
def delete_rule(rule_id: RuleIdPath, principal: PrincipalDep, ctx: ContextDep) -> None:
    """Remove ``<id>.yaml`` from the site rules directory: a default rule of that id comes
    back as shipped, a site-only rule is gone. A default without an override is a 404
    (disable it instead)."""
    site = _writer(principal, ctx)
    with ctx.rules_lock:
        if site.entry(rule_id) is None:
            site.current(rule_id)  # 404 unknown, 409 in another file
            raise NotInScopeError(f"rule {rule_id!r} has no site override to remove")
        site.trial(rule_id, None)
        site.commit(rule_id, None)


# --- dry-run -----------------------------------------------------------------------------------


@cache
def _heartbeats() -> dict[str, float]:
    return {kind: float(load_kind(kind).heartbeat_s) for kind in KINDS}


def point_ns(value: object) -> int | None:
    """A point's time as epoch ns: a datetime, ISO 8601 text, or epoch s/ms/µs/ns."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return None
        size = abs(value)
        scale = 1 if size > 1e17 else 1_000 if size > 1e14 else NS // 1000 if size > 1e11 else NS
        ns = int(value * scale)
    else:
        when = value if isinstance(value, datetime) else None
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                when = datetime.fromisoformat(value)
        if when is None:
            return None
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        ns = (when - _EPOCH) // timedelta(microseconds=1) * 1000
    return ns if abs(ns) < _MAX_NS else None  # the engine keeps times as int64


def _devices(
    session: Session, principal: Principal, kind: str, body: DryRunRequest
) -> list[Device]:
    """The active devices of ``kind`` in scope, narrowed by ``node`` and ``device_ids``."""
    node_ids = principal.node_ids
    if body.node is not None:
        node_ids = principal.index.subtree(principal.node_in_scope(body.node).id)
    if body.device_ids is not None:
        wanted = dict.fromkeys(body.device_ids)  # once each, in the order given
        found = [device_ops.find_device(session, principal, d) for d in wanted]
        other = next((d.device_id for d in found if d.kind != kind), None)
        if other is not None:
            raise UnprocessableError(f"body.device_ids: {other!r} is not a {kind} device")
        return [device for device in found if device.node_id in node_ids]
    where = (Device.kind == kind, Device.status == "active", Device.node_id.in_(sorted(node_ids)))
    total = session.scalar(select(func.count()).select_from(Device).where(*where)) or 0
    if total > MAX_DRY_RUN_DEVICES:
        raise UnprocessableError(
            f"body: {total} {kind} devices match; a dry-run reads at most "
            f"{MAX_DRY_RUN_DEVICES}: narrow it with node or device_ids"
        )
    return list(session.scalars(select(Device).where(*where).order_by(Device.device_id)))


def _observations(
    reader: InfluxReader, devices: list[Device], minutes: int, index: NodeIndex
) -> list[Observation]:
    """The devices' readings of the last ``minutes`` as engine observations, oldest first."""
    out: list[Observation] = []
    for device in devices:
        try:
            points = reader(device.device_id, device.kind, minutes)
        except Exception as err:  # any reader failure means the store is unavailable to us
            logger.warning("dry-run: readings of %s failed: %s", device.device_id, err)
            raise UnavailableError(f"InfluxDB query failed: {err}") from err
        tags = {node.level: node.code for node in index.path(device.node_id)}
        tags["device_id"] = device.device_id
        for point in points:
            ts_ns = point_ns(point.get("time"))
            values = {k: v for k, v in point.items() if k not in _NOT_VALUES and _scalar(v)}
            if ts_ns is not None and values:
                out.append(Observation(device.device_id, device.kind, ts_ns, values, tags))
    out.sort(key=lambda observation: observation.ts_ns)
    return out


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _replay(
    rule: Rule, devices: list[Device], observations: list[Observation], window: tuple[int, int]
) -> list[Transition]:
    """Run a fresh engine with only ``rule`` over the readings, ticking as the gateway does."""
    start_ns, end_ns = window
    engine = RuleEngine(RuleSet.of([rule]), _heartbeats())
    for device in devices:  # seen at the start: absence counts from there
        engine.seen(device.device_id, device.kind, start_ns)
    out: list[Transition] = []
    for _, group in groupby(observations, key=lambda item: item.ts_ns // _TICK_NS):
        batch = list(group)
        out += engine.tick(batch[0].ts_ns)
        out += engine.evaluate(batch)
    return out + engine.tick(end_ns)


@router.post(
    "/dry-run",
    summary="Try a rule on recent readings",
    response_model=DryRunResult,
    responses={
        404: {"model": ErrorBody},
        422: {"model": ValidationErrorBody},
        503: {"model": ErrorBody},
    },
)
def dry_run(
    body: DryRunRequest, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> DryRunResult:
    """Evaluate the rule alone, in a fresh engine, over the last ``minutes`` of readings of
    the active devices of its kind inside the token's scope (at most 500: narrow with
    ``node`` or ``device_ids``). Devices count as seen at the start of the window, so an
    absence rule fires for a device silent since. Nothing is stored or notified."""
    principal.require("rules", "read")
    principal.require("devices", "read")
    rule = validated_rule({"id": "dry-run", **body.rule}, "body.rule")
    rule = rule.model_copy(update={"enabled": True})
    if ctx.influx_reader is None:
        raise UnavailableError("dry-runs need readings: this API runs without an InfluxDB reader")
    devices = _devices(session, principal, rule.device_type, body)
    observations = _observations(ctx.influx_reader, devices, body.minutes, principal.index)
    end_ns = time.time_ns()
    transitions = _replay(rule, devices, observations, (end_ns - body.minutes * 60 * NS, end_ns))
    by_device: dict[str, list[TransitionPublic]] = {}
    for transition in transitions:
        by_device.setdefault(transition.device_id, []).append(TransitionPublic.of(transition))
    readings = Counter(observation.device_id for observation in observations)
    return DryRunResult(
        rule_id=rule.id,
        kind=rule.device_type,
        minutes=body.minutes,
        devices_evaluated=len(devices),
        readings=len(observations),
        devices=[
            DryRunDevice(device_id=device_id, readings=readings[device_id], transitions=items)
            for device_id, items in sorted(by_device.items())
        ],
    )
