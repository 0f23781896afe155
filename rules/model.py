"""Rule schema: frozen pydantic models for the shape of ``devices/<kind>/rules.yaml``.

Structure (types, required and unknown keys, exactly one trigger) is checked here; what
needs the device kind (do the fields exist, are values of the right type) is checked by
``rules.checks``. Durations are stored as float seconds; ``<n>x heartbeat`` is resolved
with the kind's heartbeat, passed as validation context ``{"heartbeat_s": ...}``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

Severity = Literal["info", "warning", "major", "critical"]
Op = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "major", "critical")
ORDERED_OPS = frozenset({"lt", "le", "gt", "ge"})
SET_OPS = frozenset({"in", "not_in"})
#: Registry tags a count rule may group by besides the kind's own fields.
HIERARCHY_TAGS: tuple[str, ...] = (
    "device_id",
    "street",
    "community",
    "grid",
    "compound",
    "building",
    "unit",
)
TRIGGERS: tuple[str, ...] = ("when", "absent", "rate")

_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_HEARTBEATS = re.compile(r"^(\d+(?:\.\d+)?)\s*x\s*heartbeats?$")
_DURATION_HELP = "use <n>s|m|h|d or <n>x heartbeat"


def heartbeat_multiplier(value: object) -> float | None:
    """The n of a ``"<n>x heartbeat"`` duration, None for any other value."""
    if not isinstance(value, str):
        return None
    match = _HEARTBEATS.match(value.strip())
    return float(match.group(1)) if match else None


def parse_duration(value: object, heartbeat_s: float | None = None) -> float:
    """``"90s"``, ``"5m"``, ``"1.5h"``, ``"3d"`` or ``"2x heartbeat"`` as float seconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        hint = f"; give a unit, e.g. '{value}s'" if isinstance(value, int | float) else ""
        raise PydanticCustomError(
            "duration", "{value} is not a duration ({help}){hint}", _ctx(value, hint)
        )
    text = value.strip()
    match = _DURATION.match(text)
    if match:
        return float(match.group(1)) * _UNIT_S[match.group(2)]
    times = heartbeat_multiplier(text)
    if times is None:
        raise PydanticCustomError(
            "duration", "{value} is not a duration ({help}){hint}", _ctx(value, "")
        )
    if heartbeat_s is None:
        raise PydanticCustomError(
            "duration", "'x heartbeat' needs a known device_type", {"value": repr(value)}
        )
    return times * heartbeat_s


def _ctx(value: object, hint: str) -> dict[str, object]:
    return {"value": repr(value), "help": _DURATION_HELP, "hint": hint}


def _duration_field(value: object, info: ValidationInfo) -> float:
    context = info.context if isinstance(info.context, Mapping) else {}
    heartbeat = context.get("heartbeat_s")
    return parse_duration(value, float(heartbeat) if heartbeat is not None else None)


#: Seconds, from a duration string; validated as float afterwards.
Duration = Annotated[float, BeforeValidator(_duration_field), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(_duration_field), Field(gt=0)]
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Leaf(_Frozen):
    """One comparison ``{field, op, value}``; a missing field makes it false."""

    field: StrictStr
    op: Op
    value: Scalar | tuple[Scalar, ...]


class AllOf(_Frozen):
    """True when every child is true."""

    all: tuple[Condition, ...] = Field(min_length=1)


class AnyOf(_Frozen):
    """True when at least one child is true."""

    any: tuple[Condition, ...] = Field(min_length=1)


class NotOf(_Frozen):
    """True when the child is false (a missing field makes a leaf false, so ``not`` true)."""

    not_: Condition = Field(alias="not")


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return f"<{key}>"
        return "<leaf>" if "field" in value or "op" in value else None
    tags: dict[type[BaseModel], str] = {
        Leaf: "<leaf>",
        AllOf: "<all>",
        AnyOf: "<any>",
        NotOf: "<not>",
    }
    return tags.get(type(value))


# Tags are in angle brackets so that error locations can drop them (see rules.loader).
Condition = Annotated[
    Union[  # noqa: UP007 -- tagged members of a discriminated union need the Union form
        Annotated[Leaf, Tag("<leaf>")],
        Annotated[AllOf, Tag("<all>")],
        Annotated[AnyOf, Tag("<any>")],
        Annotated[NotOf, Tag("<not>")],
    ],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message="a condition is {all: [...]}, {any: [...]}, {not: ...} "
        "or {field, op, value}",
    ),
]


class Rate(_Frozen):
    """Rate of change: the field rose (or fell) by at least the amount within ``within``."""

    field: StrictStr
    rise: Annotated[float, Field(gt=0, strict=True)] | None = None
    fall: Annotated[float, Field(gt=0, strict=True)] | None = None
    within: PositiveDuration

    @model_validator(mode="after")
    def _one_direction(self) -> Rate:
        if (self.rise is None) == (self.fall is None):
            raise PydanticCustomError("rate", "give exactly one of rise or fall")
        return self

    @property
    def amount(self) -> float:
        """Signed threshold: positive for a rise, negative for a fall."""
        return self.rise if self.rise is not None else -(self.fall or 0.0)


class Count(_Frozen):
    """Fire when the trigger was true at least ``at_least`` times within ``within``."""

    at_least: Annotated[int, Field(ge=1, strict=True)]
    within: PositiveDuration
    group_by: tuple[StrictStr, ...] = Field(default=("device_id",), min_length=1)


class Sla(_Frozen):
    """Time to acknowledge and to resolve a work order, in seconds."""

    ack: Duration
    resolve: Duration


class WorkOrder(_Frozen):
    """Ask the alert layer to open a work order of this category."""

    category: Annotated[str, Field(min_length=1, strict=True)]
    sla: Sla | None = None


class Rule(_Frozen):
    """One rule: a trigger, optional clear, hold time, count window and work order."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$", max_length=128)]
    title: Annotated[str, Field(min_length=1, strict=True)]
    device_type: StrictStr
    severity: Severity
    when: Condition | None = None
    absent: PositiveDuration | None = None
    rate: Rate | None = None
    clear: Condition | None = None
    for_: Duration = Field(default=0.0, alias="for")
    count: Count | None = None
    work_order: WorkOrder | None = None
    enabled: StrictBool = True
    _absent_heartbeats: float | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_heartbeats(cls, data: Any, handler: Any) -> Rule:
        rule: Rule = handler(data)
        if isinstance(data, dict):
            rule._absent_heartbeats = heartbeat_multiplier(data.get("absent"))
        return rule

    @model_validator(mode="after")
    def _combination(self) -> Rule:
        problems = _combination_problems(self)
        if problems:
            raise PydanticCustomError("rule", "{problems}", {"problems": "; ".join(problems)})
        return self

    @property
    def trigger(self) -> Literal["when", "absent", "rate"]:
        """Which of the three triggers this rule has."""
        if self.absent is not None:
            return "absent"
        return "rate" if self.rate is not None else "when"

    @property
    def absent_heartbeats(self) -> float | None:
        """n when ``absent`` was given as ``"<n>x heartbeat"`` (the engine may rescale it)."""
        return self._absent_heartbeats

    def canonical(self) -> dict[str, Any]:
        """JSON form used for the rule set fingerprint."""
        doc = self.model_dump(mode="json", by_alias=True)
        doc["absent_heartbeats"] = self._absent_heartbeats
        return doc


def _combination_problems(rule: Rule) -> list[str]:
    present = [name for name in TRIGGERS if getattr(rule, name) is not None]
    if len(present) != 1:
        found = ", ".join(present) or "none"
        return [f"needs exactly one trigger of when, absent, rate (found: {found})"]
    problems = []
    if rule.absent is not None:
        if rule.clear is not None:
            problems.append("clear: not allowed with absent (any new message clears it)")
        if rule.for_:
            problems.append("for: not allowed with absent (make absent longer instead)")
    if rule.count is not None:
        if rule.when is None:
            problems.append("count: only works with a when trigger")
        if rule.clear is not None:
            problems.append("clear: not allowed with count (the window expiring clears it)")
        if rule.for_:
            problems.append("for: not allowed with count")
    return problems


AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()


@dataclass(frozen=True)
class RuleSet:
    """An immutable set of rules with unique ids, indexed by device type.

    ``rules`` keeps every rule (disabled ones too); ``for_kind`` gives the enabled ones.
    ``fingerprint`` is a SHA-256 over the rules' canonical JSON, independent of order.
    """

    rules: tuple[Rule, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    fingerprint: str = field(init=False)
    _by_id: Mapping[str, Rule] = field(init=False, repr=False)
    _by_kind: Mapping[str, tuple[Rule, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_id: dict[str, Rule] = {}
        by_kind: dict[str, list[Rule]] = {}
        for rule in self.rules:
            if rule.id in by_id:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            by_id[rule.id] = rule
            if rule.enabled:
                by_kind.setdefault(rule.device_type, []).append(rule)
        docs = sorted((rule.canonical() for rule in self.rules), key=lambda doc: doc["id"])
        digest = hashlib.sha256(orjson.dumps(docs, option=orjson.OPT_SORT_KEYS)).hexdigest()
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))
        object.__setattr__(self, "fingerprint", digest)
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))
        frozen = {kind: tuple(rules) for kind, rules in by_kind.items()}
        object.__setattr__(self, "_by_kind", MappingProxyType(frozen))

    @classmethod
    def of(cls, rules: Iterable[Rule], sources: Mapping[str, str] | None = None) -> RuleSet:
        """Build a rule set from rules (ValueError on duplicate ids)."""
        return cls(tuple(rules), sources or {})

    def for_kind(self, kind: str) -> tuple[Rule, ...]:
        """The enabled rules of one device type, in load order."""
        return self._by_kind.get(kind, ())

    @property
    def kinds(self) -> tuple[str, ...]:
        """Device types that have at least one enabled rule."""
        return tuple(self._by_kind)

    def get(self, rule_id: str) -> Rule | None:
        """A rule by id (enabled or not), None if there is none."""
        return self._by_id.get(rule_id)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._by_id
