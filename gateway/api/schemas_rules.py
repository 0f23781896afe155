"""Request and response models of rules and rule dry-runs, and the rule document shape.

A rule's ``definition`` is written the way ``PUT /rules/{id}`` reads it (durations as
``"5m"`` or ``"2x heartbeat"``, not seconds), so a definition can be sent back changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import PurePath
from typing import Any, Literal

from pydantic import BaseModel, Field

from gateway.api.errors import UnprocessableError
from gateway.api.schemas import NodeCode, _In
from gateway.core.clock import from_ns
from rules import Rule, RuleSet, Transition, load_rules
from rules.loader import validate_rule

_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0))
_PROBLEM = re.compile(r"^([A-Za-z_][\w.\[\]]*): (.*)$", re.DOTALL)
_LOC_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")

RULE_EXAMPLE: dict[str, Any] = {
    "title": "烟雾浓度高 / Smoke level high",
    "device_type": "smoke",
    "severity": "major",
    "when": {"field": "smoke", "op": "ge", "value": 0.12},
    "clear": {"field": "smoke", "op": "lt", "value": 0.08},
    "for": "30s",
    "work_order": {"category": "fire", "sla": {"ack": "5m", "resolve": "1h"}},
}


def duration_text(seconds: float) -> str:
    """Seconds as a rule duration: ``"5m"``, ``"2h"``, ``"1.5s"``."""
    for unit, size in _UNITS:
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    text = f"{seconds:f}".rstrip("0").rstrip(".")
    return f"{text or '0'}s"


def rule_document(rule: Rule) -> dict[str, Any]:
    """The rule as a JSON object of the YAML rule shape (round-trips through validation)."""
    doc = rule.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc.pop("for", None)
    if rule.for_:
        doc["for"] = duration_text(rule.for_)
    if rule.absent is not None:
        beats = rule.absent_heartbeats
        doc["absent"] = f"{beats:g}x heartbeat" if beats else duration_text(rule.absent)
    if rule.rate is not None:
        doc["rate"]["within"] = duration_text(rule.rate.within)
    if rule.count is not None:
        doc["count"]["within"] = duration_text(rule.count.within)
    if rule.work_order is not None and rule.work_order.sla is not None:
        sla = rule.work_order.sla
        doc["work_order"]["sla"] = {
            "ack": duration_text(sla.ack),
            "resolve": duration_text(sla.resolve),
        }
    return doc


class RulePublic(BaseModel):
    """A rule as the gateway runs it."""

    id: str
    title: str
    kind: str = Field(description="the device type the rule applies to")
    severity: str
    trigger: Literal["when", "absent", "rate"]
    enabled: bool
    origin: Literal["default", "site"] = Field(
        description="default: from devices/<kind>/rules.yaml; site: from the site rules "
        "directory (a site rule or an enable/disable override of a default)"
    )
    source: str = Field(description="the file the rule comes from")
    has_default: bool = Field(description="a default rule of this id exists")
    work_order: str | None = Field(description="category of the work orders it opens")
    definition: dict[str, Any] = Field(description="the rule in the shape PUT accepts")

    @classmethod
    def of(
        cls, rule: Rule, origin: Literal["default", "site"], source: str, has_default: bool
    ) -> RulePublic:
        """From a loaded rule and where it comes from."""
        return cls(
            id=rule.id,
            title=rule.title,
            kind=rule.device_type,
            severity=rule.severity,
            trigger=rule.trigger,
            enabled=rule.enabled,
            origin=origin,
            source=source,
            has_default=has_default,
            work_order=rule.work_order.category if rule.work_order else None,
            definition=rule_document(rule),
        )


@cache
def default_rules() -> tuple[frozenset[str], frozenset[str]]:
    """Ids and source labels of the default rules (they change only with a new release)."""
    ruleset = load_rules(None)
    return frozenset(rule.id for rule in ruleset), frozenset(ruleset.sources.values())


def rule_public(ruleset: RuleSet, rule: Rule) -> RulePublic:
    """The public shape of ``rule`` as loaded in ``ruleset`` (site files by name only)."""
    ids, labels = default_rules()
    label = ruleset.sources.get(rule.id, "")
    if label in labels:
        return RulePublic.of(rule, "default", label, rule.id in ids)
    return RulePublic.of(rule, "site", PurePath(label).name, rule.id in ids)


def validated_rule(entry: Mapping[str, Any], where: str) -> Rule:
    """The rule of a request's ``entry``, validated by the rules loader; else a 422 naming
    each bad part as ``<where>.<path>: message`` (``errors`` lists them one by one)."""
    rule, problems = validate_rule(entry)
    if rule is not None and not problems:
        return rule
    items, texts = [], []
    for problem in problems or ["not a valid rule"]:
        match = _PROBLEM.match(problem)
        path, msg = match.groups() if match else ("", problem)
        parts = [int(index) if index else name for index, name in _LOC_PART.findall(path)]
        items.append({"loc": [*where.split("."), *parts], "msg": msg, "type": "rule"})
        texts.append(f"{where}.{path}: {msg}" if path else f"{where}: {msg}")
    raise UnprocessableError("; ".join(texts), extra={"errors": items})


class DryRunRequest(_In):
    """A rule to try on the recent readings of the devices of its kind."""

    rule: dict[str, Any] = Field(
        description="a rule in the shape PUT /rules/{id} accepts (id optional)",
        examples=[RULE_EXAMPLE],
    )
    minutes: int = Field(60, ge=1, le=24 * 60, description="how far back to read")
    node: NodeCode | None = Field(None, description="only devices at or under this node")
    device_ids: list[str] | None = Field(
        None, min_length=1, max_length=500, description="only these devices"
    )


class TransitionPublic(BaseModel):
    """A change of an alert the rule would have made."""

    state: Literal["pending", "firing", "resolved"]
    at: datetime
    severity: str
    message: str
    values: dict[str, Any]
    repeat: bool = Field(description="a further trigger while the alert already fires")
    group: str | None

    @classmethod
    def of(cls, transition: Transition) -> TransitionPublic:
        """From an engine transition."""
        values = {str(key): _plain(value) for key, value in transition.values.items()}
        return cls(
            state=transition.state,
            at=from_ns(transition.ts_ns),
            severity=transition.severity,
            message=transition.message,
            values=values,
            repeat=transition.repeat,
            group=transition.group,
        )


def _plain(value: object) -> object:
    """numpy scalars → Python values."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class DryRunDevice(BaseModel):
    """What the rule would have done on one device."""

    device_id: str
    readings: int
    transitions: list[TransitionPublic]


class DryRunResult(BaseModel):
    """The dry-run of a rule: devices with transitions, and what was read."""

    rule_id: str
    kind: str
    minutes: int
    devices_evaluated: int
    readings: int
    devices: list[DryRunDevice] = Field(description="only devices with transitions")
