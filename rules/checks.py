"""Checks that need the device kind: fields exist, values suit the field and the operator.

Each check returns ``(path, message)`` pairs; ``path`` is the location inside the rule in
the form ``when.any[2].value`` so the loader can name file, rule and field together.
"""

from __future__ import annotations

from collections.abc import Iterator

from devices.base import DeviceKind, FieldSpec
from rules.model import (
    HIERARCHY_TAGS,
    ORDERED_OPS,
    SET_OPS,
    AllOf,
    AnyOf,
    Condition,
    Leaf,
    NotOf,
    Rule,
)

Problem = tuple[str, str]
NUMERIC_TYPES = frozenset({"int", "float"})


def check_rule(rule: Rule, kind: DeviceKind) -> list[Problem]:
    """Every problem of one structurally valid rule against its device kind."""
    specs = {spec.key: spec for spec in kind.fields}
    problems: list[Problem] = []
    for part in ("when", "clear"):
        tree: Condition | None = getattr(rule, part)
        if tree is not None:
            for path, leaf in walk(tree, part):
                problems.extend(check_leaf(leaf, path, specs))
    if rule.rate is not None:
        problems.extend(_check_numeric_field(rule.rate.field, "rate.field", specs))
    if rule.count is not None:
        known = set(specs) | set(HIERARCHY_TAGS)
        seen: set[str] = set()
        for index, key in enumerate(rule.count.group_by):
            path = f"count.group_by[{index}]"
            if key not in known:
                problems.append((path, f"{key!r} is neither a field of {kind.name} nor a tag"))
            elif key in seen:
                problems.append((path, f"{key!r} is listed twice"))
            seen.add(key)
    return problems


def walk(tree: Condition, path: str) -> Iterator[tuple[str, Leaf]]:
    """Every leaf of a condition tree with its path, depth first."""
    if isinstance(tree, Leaf):
        yield path, tree
    elif isinstance(tree, AllOf):
        for index, child in enumerate(tree.all):
            yield from walk(child, f"{path}.all[{index}]")
    elif isinstance(tree, AnyOf):
        for index, child in enumerate(tree.any):
            yield from walk(child, f"{path}.any[{index}]")
    elif isinstance(tree, NotOf):
        yield from walk(tree.not_, f"{path}.not")


def check_leaf(leaf: Leaf, path: str, specs: dict[str, FieldSpec]) -> list[Problem]:
    """Problems of one comparison: unknown field, wrong operator or value type."""
    spec = specs.get(leaf.field)
    if spec is None:
        return [(f"{path}.field", f"{leaf.field!r} is not a field of this device type")]
    if leaf.op in SET_OPS:
        return _check_list(leaf, path, spec)
    if isinstance(leaf.value, tuple):
        return [(f"{path}.value", f"{leaf.op} needs one value, not a list")]
    if leaf.op in ORDERED_OPS and spec.type not in NUMERIC_TYPES:
        return [(f"{path}.op", f"{leaf.op} needs a numeric field, {spec.key} is {spec.type}")]
    return [(f"{path}.value", message) for message in _value_problems(leaf.value, spec)]


def _check_list(leaf: Leaf, path: str, spec: FieldSpec) -> list[Problem]:
    if not isinstance(leaf.value, tuple):
        return [(f"{path}.value", f"{leaf.op} needs a list, got {leaf.value!r}")]
    if not leaf.value:
        return [(f"{path}.value", f"{leaf.op} needs at least one value")]
    return [
        (f"{path}.value[{index}]", message)
        for index, item in enumerate(leaf.value)
        for message in _value_problems(item, spec)
    ]


def _value_problems(value: object, spec: FieldSpec) -> list[str]:
    if spec.type in NUMERIC_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [f"{value!r} is not a number for field {spec.key}"]
        return []
    if spec.type == "bool":
        return [] if isinstance(value, bool) else [f"{value!r} is not true/false for {spec.key}"]
    if not isinstance(value, str):
        return [f"{value!r} is not a string for field {spec.key}"]
    if spec.choices and value not in spec.choices:
        return [f"{value!r} is not one of {', '.join(spec.choices)} for field {spec.key}"]
    return []


def _check_numeric_field(key: str, path: str, specs: dict[str, FieldSpec]) -> list[Problem]:
    spec = specs.get(key)
    if spec is None:
        return [(path, f"{key!r} is not a field of this device type")]
    if spec.type not in NUMERIC_TYPES:
        return [(path, f"{key!r} is {spec.type}, a rate needs a numeric field")]
    return []
