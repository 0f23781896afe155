"""Load and validate rule files: defaults from every kind's folder, then a site directory.

Every problem names the file, the rule and the field, e.g.
``site/rules/fire.yaml: rule smoke.fire_alarm: when.any[2].value: 'hot' is not a number
for field smoke``. All problems are collected before one ``RuleError`` is raised. YAML is
read with ``safe_load``; nothing in a rule file is ever executed.

A site file uses the same shape as the defaults. A site rule with the id of a default
replaces it; an entry with only ``id`` and ``enabled`` switches a default rule on or off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from devices import KINDS, load_kind
from rules.checks import check_rule
from rules.model import Rule, RuleSet

TOGGLE_KEYS = frozenset({"id", "enabled"})


class RuleError(ValueError):
    """Rule files are invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Toggle:
    """A site entry that only switches a default rule on or off."""

    id: str
    enabled: bool
    source: str


@dataclass(frozen=True, slots=True)
class _Parsed:
    rules: list[Rule]
    toggles: list[Toggle]
    problems: list[str]


def load_rules(site_dir: Path | None = None) -> RuleSet:
    """Default rules of every device kind, overridden by ``*.yaml`` files in ``site_dir``."""
    problems: list[str] = []
    merged: dict[str, Rule] = {}
    sources: dict[str, str] = {}
    for kind in KINDS:
        path = load_kind(kind).folder / "rules.yaml"
        parsed = _parse_file(path, f"devices/{kind}/rules.yaml", allow_toggles=False)
        problems.extend(parsed.problems)
        _merge_defaults(parsed.rules, merged, sources, f"devices/{kind}/rules.yaml", problems)
    if site_dir is not None:
        _apply_site(site_dir, merged, sources, problems)
    if problems:
        raise RuleError(problems)
    return RuleSet.of(merged.values(), sources)


def load_rule_file(path: Path, label: str | None = None) -> list[Rule]:
    """The rules of one file (toggles are not allowed); RuleError lists every problem."""
    parsed = _parse_file(path, label or str(path), allow_toggles=False)
    if parsed.problems:
        raise RuleError(parsed.problems)
    return parsed.rules


def parse_rules(text: str, source: str = "<string>") -> list[Rule]:
    """The rules of a YAML document given as text; RuleError lists every problem."""
    parsed = _parse_text(text, source, allow_toggles=False)
    if parsed.problems:
        raise RuleError(parsed.problems)
    return parsed.rules


def _merge_defaults(
    rules: list[Rule],
    merged: dict[str, Rule],
    sources: dict[str, str],
    label: str,
    problems: list[str],
) -> None:
    for rule in rules:
        if rule.id in merged:
            problems.append(f"{label}: rule {rule.id}: id also used in {sources[rule.id]}")
            continue
        merged[rule.id] = rule
        sources[rule.id] = label


def _apply_site(
    site_dir: Path, merged: dict[str, Rule], sources: dict[str, str], problems: list[str]
) -> None:
    if not site_dir.is_dir():
        problems.append(f"{site_dir}: rules directory does not exist")
        return
    site_sources: dict[str, str] = {}
    for path in sorted(site_dir.glob("*.yaml")):
        label = str(path)
        parsed = _parse_file(path, label, allow_toggles=True)
        problems.extend(parsed.problems)
        entries: list[Rule | Toggle] = [*parsed.rules, *parsed.toggles]
        for entry in entries:
            if entry.id in site_sources:
                other = site_sources[entry.id]
                problems.append(f"{label}: rule {entry.id}: id also used in {other}")
                continue
            site_sources[entry.id] = label
            if isinstance(entry, Toggle):
                if entry.id not in merged:
                    problems.append(f"{label}: rule {entry.id}: no default rule of that id")
                    continue
                merged[entry.id] = merged[entry.id].model_copy(update={"enabled": entry.enabled})
            else:
                merged[entry.id] = entry
            sources[entry.id] = label


def _parse_file(path: Path, label: str, allow_toggles: bool) -> _Parsed:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return _Parsed([], [], [f"{label}: cannot read: {err}"])
    return _parse_text(text, label, allow_toggles)


def _parse_text(text: str, label: str, allow_toggles: bool) -> _Parsed:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        return _Parsed([], [], [f"{label}: not valid YAML{line}: {err}"])
    if doc is None:
        return _Parsed([], [], [])
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        return _Parsed([], [], [f"{label}: expected a mapping with a 'rules' list"])
    extra = sorted(str(key) for key in doc if key != "rules")
    result = _Parsed([], [], [f"{label}: unknown top-level key {key!r}" for key in extra])
    ids: set[str] = set()
    for index, entry in enumerate(doc["rules"]):
        _parse_entry(entry, index, label, allow_toggles, ids, result)
    return result


def _parse_entry(
    entry: object, index: int, label: str, allow_toggles: bool, ids: set[str], result: _Parsed
) -> None:
    if not isinstance(entry, dict):
        result.problems.append(f"{label}: rules[{index}]: expected a mapping")
        return
    rule_id = entry.get("id")
    name = f"rule {rule_id}" if isinstance(rule_id, str) and rule_id else f"rules[{index}]"
    if isinstance(rule_id, str):
        if rule_id in ids:
            result.problems.append(f"{label}: {name}: id used twice in this file")
            return
        ids.add(rule_id)
    if allow_toggles and set(entry) <= TOGGLE_KEYS and "enabled" in entry:
        if isinstance(rule_id, str) and isinstance(entry["enabled"], bool):
            result.toggles.append(Toggle(rule_id, entry["enabled"], label))
        else:
            result.problems.append(f"{label}: {name}: id must be text, enabled true/false")
        return
    rule, problems = validate_rule(entry)
    result.problems.extend(f"{label}: {name}: {problem}" for problem in problems)
    if rule is not None and not problems:
        result.rules.append(rule)


def validate_rule(entry: Mapping[str, Any]) -> tuple[Rule | None, list[str]]:
    """Validate one rule mapping: structure, then fields against its device kind.

    Returns the rule (None when the structure is invalid) and ``path: message`` problems.
    """
    device_type = entry.get("device_type")
    kind = load_kind(device_type) if device_type in KINDS else None
    problems: list[str] = []
    if kind is None and "device_type" in entry:
        known = ", ".join(KINDS)
        problems.append(f"device_type: {device_type!r} is not a device type (known: {known})")
    context = {"heartbeat_s": kind.heartbeat_s if kind is not None else None}
    try:
        rule = Rule.model_validate(dict(entry), context=context)
    except ValidationError as err:
        return None, problems + _explain_all(err)
    if kind is not None:
        problems.extend(f"{path}: {message}" for path, message in check_rule(rule, kind))
    return rule, problems


def _explain_all(err: ValidationError) -> list[str]:
    errors = err.errors(include_url=False)
    # A list whose items failed is also "too short" (no valid items): say it once.
    failed = {tuple(error["loc"]) for error in errors if error["type"] != "too_short"}
    return [
        _explain(error)
        for error in errors
        if error["type"] != "too_short"
        or not any(loc[: len(error["loc"])] == tuple(error["loc"]) for loc in failed)
    ]


def _explain(error: Mapping[str, Any]) -> str:
    path = format_loc(error["loc"])
    etype = error["type"]
    if etype == "extra_forbidden":
        message = "unknown key"
    elif etype == "missing":
        message = "missing"
    elif etype in {"duration", "rule", "rate", "condition"}:
        message = str(error["msg"])
    else:
        message = f"{error['msg']} (got {error.get('input')!r:.60})"
    return f"{path}: {message}" if path else message


def format_loc(loc: Sequence[int | str]) -> str:
    """``('when', 'any', 2, '<leaf>', 'value')`` → ``when.any[2].value``.

    Segments in angle brackets are the tags of the condition union and are dropped; a tag's
    key follows it (``'<any>', 'any'``), so it is not lost.
    """
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith("<"):
            text += f".{part}" if text else part
    return text
