"""Rule schema and loading: defaults, site overrides, durations, and errors that name
file, rule and field."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from devices import KINDS, load_kind
from rules.loader import RuleError, load_rule_file, load_rules, parse_rules, validate_rule
from rules.model import Leaf, Rule, RuleSet, parse_duration

SMOKE_RULE: dict[str, Any] = {
    "id": "smoke.test",
    "title": "测试 / Test",
    "device_type": "smoke",
    "severity": "warning",
    "when": {"field": "smoke", "op": "ge", "value": 0.15},
}


def write(folder: Path, name: str, rules: list[Any] | str) -> Path:
    path = folder / name
    text = rules if isinstance(rules, str) else yaml.safe_dump({"rules": rules})
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- defaults ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind_name", KINDS)
def test_every_default_rules_file_loads(kind_name: str) -> None:
    path = load_kind(kind_name).folder / "rules.yaml"
    rules = load_rule_file(path)
    assert rules, f"{path} has no rules"
    assert {rule.device_type for rule in rules} == {kind_name}


def test_default_rule_set_covers_every_kind_and_trigger() -> None:
    ruleset = load_rules(None)
    assert set(ruleset.kinds) == set(KINDS)
    assert {rule.trigger for rule in ruleset} == {"when", "absent", "rate"}
    assert any(rule.count is not None for rule in ruleset)
    offline = ruleset.get("smoke.offline")
    assert offline is not None
    assert offline.absent == 2 * load_kind("smoke").heartbeat_s
    assert offline.absent_heartbeats == 2.0
    assert ruleset.sources["smoke.offline"] == "devices/smoke/rules.yaml"


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "heartbeat", "seconds"),
    [
        ("0s", None, 0.0),
        ("90s", None, 90.0),
        ("5m", None, 300.0),
        ("1.5h", None, 5400.0),
        ("3d", None, 259_200.0),
        ("2x heartbeat", 300.0, 600.0),
        ("1.5x heartbeat", 100.0, 150.0),
    ],
)
def test_durations_are_float_seconds(text: str, heartbeat: float | None, seconds: float) -> None:
    assert parse_duration(text, heartbeat) == seconds


@pytest.mark.parametrize("value", ["5", 5, 0.5, "5 minutes", "-1s", "1w", True, None, "2x"])
def test_bad_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value, 300.0)


def test_heartbeat_duration_needs_a_kind() -> None:
    with pytest.raises(ValueError, match="needs a known device_type"):
        parse_duration("2x heartbeat", None)


# -- the schema ----------------------------------------------------------------------------


def test_rule_is_frozen_and_parses_every_part() -> None:
    entry = {
        **SMOKE_RULE,
        "clear": {"all": [{"field": "smoke", "op": "lt", "value": 0.1}]},
        "for": "30s",
        "work_order": {"category": "fire", "sla": {"ack": "5m", "resolve": "1h"}},
    }
    rule, problems = validate_rule(entry)
    assert problems == [] and rule is not None
    assert rule.for_ == 30.0 and rule.enabled
    assert rule.work_order is not None and rule.work_order.sla is not None
    assert (rule.work_order.sla.ack, rule.work_order.sla.resolve) == (300.0, 3600.0)
    assert rule.when == Leaf(field="smoke", op="ge", value=0.15)
    with pytest.raises(ValidationError):
        rule.severity = "critical"  # type: ignore[misc]


def test_ruleset_is_immutable_indexed_and_fingerprinted() -> None:
    first, _ = validate_rule(SMOKE_RULE)
    second, _ = validate_rule({**SMOKE_RULE, "id": "smoke.other", "enabled": False})
    assert first is not None and second is not None
    ruleset = RuleSet.of([first, second])
    assert ruleset.for_kind("smoke") == (first,)
    assert ruleset.for_kind("bin") == ()
    assert len(ruleset) == 2 and "smoke.other" in ruleset
    assert RuleSet.of([second, first]).fingerprint == ruleset.fingerprint
    changed = first.model_copy(update={"severity": "critical"})
    assert RuleSet.of([changed, second]).fingerprint != ruleset.fingerprint
    with pytest.raises(dataclasses.FrozenInstanceError):
        ruleset.rules = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        ruleset.sources["x"] = "y"  # type: ignore[index]
    with pytest.raises(ValueError, match="duplicate rule id"):
        RuleSet.of([first, first])


# -- site directory ------------------------------------------------------------------------


def test_site_rule_replaces_default_and_adds_new(tmp_path: Path) -> None:
    override = {**SMOKE_RULE, "id": "smoke.fire_alarm", "severity": "major"}
    added = {**SMOKE_RULE, "id": "smoke.site_only"}
    path = write(tmp_path, "fire.yaml", [override, added])
    defaults = load_rules(None)
    ruleset = load_rules(tmp_path)
    fire = ruleset.get("smoke.fire_alarm")
    assert fire is not None and fire.severity == "major"
    assert ruleset.sources["smoke.fire_alarm"] == str(path)
    assert "smoke.site_only" in ruleset
    assert len(ruleset) == len(defaults) + 1
    assert ruleset.fingerprint != defaults.fingerprint


def test_site_can_disable_a_default_with_enabled_false(tmp_path: Path) -> None:
    write(tmp_path, "off.yaml", [{"id": "smoke.offline", "enabled": False}])
    ruleset = load_rules(tmp_path)
    offline = ruleset.get("smoke.offline")
    assert offline is not None and not offline.enabled
    assert offline.absent == 2 * load_kind("smoke").heartbeat_s  # the rest is kept
    assert "smoke.offline" not in {rule.id for rule in ruleset.for_kind("smoke")}


def test_site_problems_name_the_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", [{**SMOKE_RULE, "id": "smoke.twice"}])
    write(tmp_path, "b.yaml", [{**SMOKE_RULE, "id": "smoke.twice"}])
    write(tmp_path, "c.yaml", [{"id": "smoke.no_such_rule", "enabled": False}])
    with pytest.raises(RuleError) as caught:
        load_rules(tmp_path)
    text = str(caught.value)
    assert f"{tmp_path / 'b.yaml'}: rule smoke.twice: id also used in {tmp_path / 'a.yaml'}" in text
    assert f"{tmp_path / 'c.yaml'}: rule smoke.no_such_rule: no default rule of that id" in text


def test_missing_site_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="does not exist"):
        load_rules(tmp_path / "nope")


def test_yaml_is_never_executed(tmp_path: Path) -> None:
    path = write(tmp_path, "evil.yaml", "rules: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(RuleError, match="not valid YAML"):
        load_rule_file(path)


# -- errors name file, rule and field ------------------------------------------------------


def leaf(field: str, op: str, value: object) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


BAD_RULES: list[tuple[str, dict[str, Any], str]] = [
    (
        "not_a_number",
        {
            "when": {
                "any": [
                    leaf("state", "eq", "alarm"),
                    leaf("smoke", "ge", 0.2),
                    leaf("smoke", "ge", "hot"),
                ]
            }
        },
        "when.any[2].value: 'hot' is not a number for field smoke",
    ),
    ("unknown_field", {"when": leaf("smok", "ge", 1)}, "when.field: 'smok' is not a field"),
    (
        "enum_value",
        {"when": leaf("state", "eq", "burning")},
        "when.value: 'burning' is not one of normal, alarm",
    ),
    (
        "enum_in_list",
        {"when": {"all": [leaf("state", "in", ["alarm", "smoky"])]}},
        "when.all[0].value[1]: 'smoky' is not one of",
    ),
    ("ordered_text", {"when": leaf("state", "lt", "alarm")}, "when.op: lt needs a numeric field"),
    ("in_scalar", {"when": leaf("state", "in", "alarm")}, "when.value: in needs a list"),
    ("eq_list", {"when": leaf("smoke", "eq", [1, 2])}, "when.value: eq needs one value"),
    ("bad_op", {"when": leaf("smoke", "bigger", 1)}, "when.op: Input should be 'eq'"),
    ("leaf_key", {"when": {**leaf("smoke", "ge", 1), "unit": "x"}}, "when.unit: unknown key"),
    ("rule_key", {"colour": "red"}, "colour: unknown key"),
    ("not_a_condition", {"when": {"every": []}}, "when: a condition is {all: [...]}"),
    ("missing_value", {"when": {"field": "smoke", "op": "ge"}}, "when.value: missing"),
    (
        "nested_not",
        {"clear": {"not": {"all": [leaf("temperature", "lt", True)]}}},
        "clear.not.all[0].value: True is not a number for field temperature",
    ),
    ("severity", {"severity": "high"}, "severity: Input should be 'info'"),
    ("device_type", {"device_type": "lamp"}, "device_type: 'lamp' is not a device type"),
    ("duration_unit", {"for": 30}, "for: 30 is not a duration"),
    ("duration_text", {"for": "soon"}, "for: 'soon' is not a duration"),
    ("two_triggers", {"absent": "1h"}, "needs exactly one trigger of when, absent, rate"),
    ("no_trigger", {"when": None}, "needs exactly one trigger"),
    (
        "absent_with_clear",
        {"when": None, "absent": "1h", "clear": leaf("smoke", "lt", 1)},
        "clear: not allowed with absent",
    ),
    (
        "rate_both",
        {"when": None, "rate": {"field": "smoke", "rise": 1, "fall": 1, "within": "1m"}},
        "rate: give exactly one of rise or fall",
    ),
    (
        "rate_text_field",
        {"when": None, "rate": {"field": "state", "rise": 1, "within": "1m"}},
        "rate.field: 'state' is str, a rate needs a numeric field",
    ),
    (
        "count_group",
        {"count": {"at_least": 3, "within": "1h", "group_by": ["building", "floor"]}},
        "count.group_by[1]: 'floor' is neither a field of smoke nor a tag",
    ),
    ("count_zero", {"count": {"at_least": 0, "within": "1h"}}, "count.at_least: Input should be"),
    ("wo_category", {"work_order": {"sla": {"ack": "1m"}}}, "work_order.category: missing"),
    (
        "sla_duration",
        {"work_order": {"category": "x", "sla": {"ack": "1m", "resolve": 5}}},
        "work_order.sla.resolve: 5 is not a duration",
    ),
    ("enabled", {"enabled": "no"}, "enabled: Input should be a valid boolean"),
]


@pytest.mark.parametrize(("name", "change", "expected"), BAD_RULES, ids=[c[0] for c in BAD_RULES])
def test_errors_name_file_rule_and_field(
    tmp_path: Path, name: str, change: dict[str, Any], expected: str
) -> None:
    entry = {key: value for key, value in {**SMOKE_RULE, **change}.items() if value is not None}
    path = write(tmp_path, "fire.yaml", [{**entry, "id": f"smoke.{name}"}])
    with pytest.raises(RuleError) as caught:
        load_rule_file(path, "site/rules/fire.yaml")
    assert isinstance(caught.value, ValueError)
    prefix = f"site/rules/fire.yaml: rule smoke.{name}: "
    assert any(line.startswith(prefix) and expected in line for line in caught.value.problems), (
        caught.value.problems
    )


def test_all_problems_of_a_file_are_collected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many.yaml",
        [
            {**SMOKE_RULE, "id": "smoke.a", "when": leaf("smoke", "ge", "hot")},
            {**SMOKE_RULE, "id": "smoke.b", "severity": "loud", "for": "later"},
            {**SMOKE_RULE, "id": "smoke.a"},
            "not a mapping",
            {**SMOKE_RULE, "id": "smoke.fine"},
        ],
    )
    with pytest.raises(RuleError) as caught:
        load_rule_file(path)
    problems = caught.value.problems
    assert len(problems) == 5, problems
    assert any("rule smoke.a: when.value" in p for p in problems)
    assert any("rule smoke.b: severity" in p for p in problems)
    assert any("rule smoke.b: for" in p for p in problems)
    assert any("rule smoke.a: id used twice in this file" in p for p in problems)
    assert any("rules[3]: expected a mapping" in p for p in problems)
    assert all(p.startswith(f"{path}: ") for p in problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: [\n  {id: x\n", "not valid YAML (line"),
        ("- just a list\n", "expected a mapping with a 'rules' list"),
        ("rules: []\nextra: 1\n", "unknown top-level key 'extra'"),
    ],
)
def test_file_level_problems(text: str, expected: str) -> None:
    with pytest.raises(RuleError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        parse_rules(text, "site/x.yaml")


def test_empty_file_has_no_rules() -> None:
    assert parse_rules("", "site/empty.yaml") == []


def test_rule_without_context_cannot_resolve_heartbeats() -> None:
    with pytest.raises(ValidationError, match="needs a known device_type"):
        Rule.model_validate({**SMOKE_RULE, "when": None, "absent": "2x heartbeat"})
