"""Rules engine semantics: conditions, hysteresis, ``for``, count windows, rate, absence,
ordering, reload and saved state. Time is explicit everywhere (seconds after ``T0``)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import load_kind
from rules.conditions import Columns, Vocabulary, evaluate, holds
from rules.engine import Engine, Observation, Transition
from rules.loader import load_rules, validate_rule
from rules.model import Condition, Rule, RuleSet

S = 1_000_000_000
T0 = 1_700_000_000 * S
TAGS = {"street": "ST1", "community": "SQ1", "grid": "G1", "building": "B1", "unit": "U1"}


def make_rule(**fields: Any) -> Rule:
    entry: dict[str, Any] = {
        "id": "smoke.test",
        "title": "测试 / Test",
        "device_type": "smoke",
        "severity": "warning",
    }
    entry.update(fields)
    rule, problems = validate_rule(entry)
    assert rule is not None and problems == [], problems
    return rule


def engine_for(*rules: Rule, **options: Any) -> Engine:
    return Engine(RuleSet.of(rules), {}, **options)


def obs(
    device: str, t: float, kind: str = "smoke", tags: Mapping[str, str] = TAGS, **values: Any
) -> Observation:
    return Observation(device, kind, T0 + round(t * S), values, {**tags, "device_id": device})


def states(transitions: Iterable[Transition]) -> list[tuple[str, str, str, bool]]:
    return [(t.rule_id, t.device_id, t.state, t.repeat) for t in transitions]


def leaf(field: str, op: str, value: object) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


# -- conditions ----------------------------------------------------------------------------

LEAF_CASES: list[tuple[str, str, object, dict[str, Any], bool]] = [
    ("smoke", "eq", 0.2, {"smoke": 0.2}, True),
    ("smoke", "eq", 0.2, {"smoke": 0.3}, False),
    ("smoke", "ne", 0.2, {"smoke": 0.3}, True),
    ("smoke", "ne", 0.2, {"smoke": 0.2}, False),
    ("smoke", "lt", 0.2, {"smoke": 0.1}, True),
    ("smoke", "lt", 0.2, {"smoke": 0.2}, False),
    ("smoke", "le", 0.2, {"smoke": 0.2}, True),
    ("smoke", "le", 0.2, {"smoke": 0.3}, False),
    ("smoke", "gt", 0.2, {"smoke": 0.3}, True),
    ("smoke", "gt", 0.2, {"smoke": 0.2}, False),
    ("smoke", "ge", 0.2, {"smoke": 0.2}, True),
    ("smoke", "ge", 0.2, {"smoke": 0.1}, False),
    ("smoke", "in", [0.1, 0.2], {"smoke": 0.2}, True),
    ("smoke", "in", [0.1, 0.2], {"smoke": 0.3}, False),
    ("smoke", "not_in", [0.1, 0.2], {"smoke": 0.3}, True),
    ("smoke", "not_in", [0.1, 0.2], {"smoke": 0.1}, False),
    ("battery", "lt", 20, {"battery": 19}, True),
    ("state", "eq", "alarm", {"state": "alarm"}, True),
    ("state", "eq", "alarm", {"state": "normal"}, False),
    ("state", "ne", "alarm", {"state": "normal"}, True),
    ("state", "ne", "alarm", {"state": "alarm"}, False),
    ("state", "in", ["fault", "tamper"], {"state": "tamper"}, True),
    ("state", "in", ["fault", "tamper"], {"state": "normal"}, False),
    ("state", "not_in", ["fault", "tamper"], {"state": "normal"}, True),
    ("state", "not_in", ["fault", "tamper"], {"state": "fault"}, False),
    ("fw", "eq", "1.0", {"fw": "2.0"}, False),
    ("fw", "ne", "1.0", {"fw": "2.0"}, True),
    # a missing value makes every comparison false, ne and not_in included
    *[
        ("smoke", op, 0.2, {"state": "normal"}, False)
        for op in ("eq", "ne", "lt", "le", "gt", "ge")
    ],
    ("smoke", "not_in", [0.2], {"state": "normal"}, False),
    ("state", "ne", "alarm", {"smoke": 0.1}, False),
    ("state", "not_in", ["alarm"], {"smoke": 0.1}, False),
]


@pytest.mark.parametrize(("field", "op", "value", "reading", "expected"), LEAF_CASES)
def test_every_operator(
    field: str, op: str, value: object, reading: dict[str, Any], expected: bool
) -> None:
    engine = engine_for(make_rule(when=leaf(field, op, value)))
    fired = engine.evaluate([obs("s1", 0, **reading)])
    assert states(fired) == ([("smoke.test", "s1", "firing", False)] if expected else [])
    rule = engine.rules.get("smoke.test")
    assert rule is not None and rule.when is not None
    assert holds(rule.when, reading) is expected


@pytest.mark.parametrize(
    ("field", "value", "reading", "expected"),
    [
        ("vibration", True, {"vibration": True}, True),
        ("vibration", True, {"vibration": False}, False),
        ("vibration", False, {"vibration": False}, True),
        ("vibration", True, {"tilt": 3.0}, False),
    ],
)
def test_boolean_fields(field: str, value: bool, reading: dict[str, Any], expected: bool) -> None:
    rule = make_rule(id="manhole.test", device_type="manhole", when=leaf(field, "eq", value))
    fired = engine_for(rule).evaluate([obs("m1", 0, kind="manhole", **reading)])
    assert bool(fired) is expected


TREE_CASES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    (
        {"all": [leaf("state", "eq", "alarm"), leaf("smoke", "ge", 0.15)]},
        {"state": "alarm", "smoke": 0.2},
        True,
    ),
    (
        {"all": [leaf("state", "eq", "alarm"), leaf("smoke", "ge", 0.15)]},
        {"state": "alarm", "smoke": 0.1},
        False,
    ),
    ({"all": [leaf("state", "eq", "alarm"), leaf("smoke", "ge", 0.15)]}, {"state": "alarm"}, False),
    (
        {"any": [leaf("state", "eq", "alarm"), leaf("smoke", "ge", 0.15)]},
        {"state": "normal", "smoke": 0.2},
        True,
    ),
    (
        {"any": [leaf("state", "eq", "alarm"), leaf("smoke", "ge", 0.15)]},
        {"state": "normal"},
        False,
    ),
    ({"not": leaf("state", "eq", "normal")}, {"state": "fault"}, True),
    ({"not": leaf("state", "eq", "normal")}, {"state": "normal"}, False),
    (
        {"not": leaf("smoke", "ge", 0.15)},
        {"state": "normal"},
        True,
    ),  # missing → leaf false → not true
    (
        {
            "all": [
                {"any": [leaf("state", "eq", "alarm"), leaf("event", "eq", "alarm_raised")]},
                {"not": {"all": [leaf("temperature", "lt", 30)]}},
            ]
        },
        {"event": "alarm_raised", "temperature": 45.0},
        True,
    ),
]


@pytest.mark.parametrize(("tree", "reading", "expected"), TREE_CASES)
def test_condition_trees(tree: dict[str, Any], reading: dict[str, Any], expected: bool) -> None:
    fired = engine_for(make_rule(when=tree)).evaluate([obs("s1", 0, **reading)])
    assert bool(fired) is expected


SMOKE_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "state": st.sampled_from(["normal", "alarm", "fault", "tamper", "test"]),
        "smoke": st.sampled_from([0.0, 0.05, 0.1, 0.15, 0.3, 1.9]),
        "temperature": st.sampled_from([-5.0, 20.0, 57.0, 60.0]),
        "battery": st.integers(0, 100),
        "event": st.sampled_from(["fault", "tamper", "alarm_raised", "silenced"]),
    },
)


@settings(max_examples=60, deadline=None)
@given(st.lists(SMOKE_VALUES, min_size=1, max_size=40))
def test_vectorised_conditions_match_one_reading_at_a_time(readings: list[dict[str, Any]]) -> None:
    ruleset = load_rules(None)
    specs = {spec.key: spec for spec in load_kind("smoke").fields}
    rules = ruleset.for_kind("smoke")
    columns = Columns(readings, Vocabulary(specs, rules))
    for rule in rules:
        trees: list[Condition] = [tree for tree in (rule.when, rule.clear) if tree is not None]
        for tree in trees:
            expected = [holds(tree, reading) for reading in readings]
            assert evaluate(tree, columns).tolist() == expected, rule.id


# -- hysteresis, repeats, default clear ----------------------------------------------------

FIRE = make_rule(
    id="smoke.fire",
    when=leaf("smoke", "ge", 0.15),
    clear=leaf("smoke", "lt", 0.1),
)


def run(engine: Engine, *steps: Observation | float) -> list[tuple[str, str, str, bool]]:
    """Observations are evaluated one call each, numbers are ticks (seconds after T0)."""
    out: list[Transition] = []
    for step in steps:
        if isinstance(step, Observation):
            out += engine.evaluate([step])
        else:
            out += engine.tick(T0 + round(step * S))
    return states(out)


def test_hysteresis_keeps_firing_in_the_band_and_clears_below() -> None:
    engine = engine_for(FIRE)
    assert run(
        engine,
        obs("s1", 0, smoke=0.2),
        obs("s1", 10, smoke=0.12),  # below the trigger, above the clear: still firing
        obs("s1", 20, smoke=0.05),
        obs("s1", 30, smoke=0.12),  # in the band from below: nothing
        obs("s1", 40, smoke=0.3),
    ) == [
        ("smoke.fire", "s1", "firing", False),
        ("smoke.fire", "s1", "resolved", False),
        ("smoke.fire", "s1", "firing", False),
    ]


def test_repeated_trigger_while_firing_is_a_repeat() -> None:
    engine = engine_for(FIRE)
    out = engine.evaluate([obs("s1", 0, smoke=0.2)]) + engine.evaluate([obs("s1", 5, smoke=0.4)])
    assert states(out) == [
        ("smoke.fire", "s1", "firing", False),
        ("smoke.fire", "s1", "firing", True),
    ]
    assert out[1].values == {"smoke": 0.4}
    assert "smoke 0.4 ≥ 0.15" in out[1].message and out[1].message.startswith("测试 / Test")
    assert out[1].severity == "warning" and out[1].group is None and out[1].kind == "smoke"


def test_without_clear_a_reading_that_no_longer_triggers_clears() -> None:
    engine = engine_for(make_rule(when=leaf("state", "eq", "fault")))
    assert run(
        engine,
        obs("s1", 0, state="fault"),
        obs("s1", 10, battery=80.0),  # says nothing about the state: no clear
        obs("s1", 20, state="normal"),
    ) == [
        ("smoke.test", "s1", "firing", False),
        ("smoke.test", "s1", "resolved", False),
    ]


def test_alerts_are_per_device() -> None:
    engine = engine_for(FIRE)
    out = engine.evaluate(
        [obs("s1", 0, smoke=0.2), obs("s2", 0, smoke=0.2), obs("s3", 0, smoke=0.0)]
    )
    assert sorted(t.device_id for t in out) == ["s1", "s2"]
    assert states(engine.evaluate([obs("s1", 5, smoke=0.0)])) == [
        ("smoke.fire", "s1", "resolved", False)
    ]


# -- for -----------------------------------------------------------------------------------

HELD = make_rule(id="smoke.held", when=leaf("smoke", "ge", 0.15), **{"for": "60s"})


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            [
                obs("s1", 0, smoke=0.2),
                obs("s1", 30, smoke=0.2),
                obs("s1", 60, smoke=0.2),
                obs("s1", 70, smoke=0.2),
            ],
            ["pending", "firing", "firing+"],
            id="fires-on-a-later-reading",
        ),
        pytest.param(
            [obs("s1", 0, smoke=0.2), 59.0, 60.0, 61.0], ["pending", "firing"], id="fires-on-tick"
        ),
        pytest.param(
            [obs("s1", 0, smoke=0.2), obs("s1", 30, smoke=0.05), 90.0],
            ["pending", "resolved"],
            id="dropped-when-it-stops-holding",
        ),
        pytest.param(
            [obs("s1", 0, smoke=0.2), obs("s1", 30, battery=50.0), 90.0],
            ["pending", "firing"],
            id="kept-by-a-reading-without-the-field",
        ),
        pytest.param(
            [
                obs("s1", 0, smoke=0.2),
                obs("s1", 30, smoke=0.05),
                obs("s1", 40, smoke=0.2),
                90.0,
                100.0,
            ],
            ["pending", "resolved", "pending", "firing"],
            id="hold-time-restarts",
        ),
        pytest.param(
            [obs("s1", 0, smoke=0.2), 70.0, obs("s1", 80, smoke=0.01)],
            ["pending", "firing", "resolved"],
            id="resolves-after-firing",
        ),
    ],
)
def test_for_hold_time(steps: list[Observation | float], expected: list[str]) -> None:
    got = run(engine_for(HELD), *steps)
    assert [state + ("+" if repeat else "") for _, _, state, repeat in got] == expected


def test_pending_to_firing_on_tick_reports_tick_time_and_reading() -> None:
    engine = engine_for(HELD)
    engine.evaluate([obs("s1", 0, smoke=0.2)])
    [fired] = engine.tick(T0 + 75 * S)
    assert (fired.state, fired.ts_ns, fired.values) == ("firing", T0 + 75 * S, {"smoke": 0.2})


# -- count windows -------------------------------------------------------------------------

THROWS = make_rule(
    id="throw_camera.repeated",
    device_type="throw_camera",
    severity="critical",
    when={"all": [leaf("event", "eq", "throw"), leaf("confidence", "ge", 0.6)]},
    count={"at_least": 3, "within": "1h", "group_by": ["facade"]},
)


def throw(device: str, t: float, facade: str = "north", confidence: float = 0.9) -> Observation:
    return obs(
        device,
        t,
        kind="throw_camera",
        event="throw",
        confidence=confidence,
        facade=facade,
        floor_estimate=9,
    )


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [throw("c1", 0), throw("c2", 600), throw("c1", 1200)],
            [("north", "firing", False)],
            id="three-in-an-hour",
        ),
        pytest.param(
            [throw("c1", 0), throw("c1", 1800), throw("c1", 3600)],
            [("north", "firing", False)],
            id="window-inclusive",
        ),
        pytest.param(
            [throw("c1", 0), throw("c1", 1800), throw("c1", 3601)], [], id="first-expired"
        ),
        pytest.param(
            [throw("c1", 0), throw("c1", 10, "south"), throw("c1", 20)], [], id="other-facade"
        ),
        pytest.param(
            [throw("c1", 0), throw("c1", 10, confidence=0.3), throw("c1", 20)],
            [],
            id="low-confidence",
        ),
        pytest.param(
            [throw("c1", 0), throw("c1", 10), throw("c1", 20), throw("c2", 30)],
            [("north", "firing", False), ("north", "firing", True)],
            id="repeat",
        ),
    ],
)
def test_count_within_window_per_group(
    events: list[Observation], expected: list[tuple[str, str, bool]]
) -> None:
    engine = engine_for(THROWS)
    out: list[Transition] = []
    for event in events:
        out += engine.evaluate([event])
    assert [(t.group, t.state, t.repeat) for t in out] == expected


def regrouped(*group_by: str) -> Rule:
    assert THROWS.count is not None
    count = THROWS.count.model_copy(update={"group_by": group_by})
    return THROWS.model_copy(update={"count": count})


def test_count_window_expires_on_tick_and_groups_by_tag_and_field() -> None:
    engine = engine_for(regrouped("building", "facade"))
    fired = engine.evaluate([throw("c1", 0), throw("c2", 60), throw("c3", 120)])
    assert [(t.group, t.state, t.device_id) for t in fired] == [("B1/north", "firing", "c3")]
    assert engine.tick(T0 + 3600 * S) == []  # the first throw is exactly 1 h old: still in
    [resolved] = engine.tick(T0 + 3601 * S)
    assert (resolved.state, resolved.group, resolved.ts_ns) == (
        "resolved",
        "B1/north",
        T0 + 3601 * S,
    )
    assert resolved.device_id == "c3"
    assert engine.dirty_states()[("throw_camera.repeated", "B1/north")] is not None
    engine.tick(T0 + 10_000 * S)  # every throw aged out: the group is forgotten
    assert engine.dirty_states()[("throw_camera.repeated", "B1/north")] is None


def test_count_groups_missing_values_together() -> None:
    events = [obs(f"c{i}", i, kind="throw_camera", event="throw", confidence=0.9) for i in range(3)]
    [fired] = engine_for(regrouped("facade")).evaluate(events)
    assert fired.group == "?"


# -- rate ----------------------------------------------------------------------------------

RISE = make_rule(
    id="bin.rise",
    device_type="bin",
    severity="critical",
    rate={"field": "temperature", "rise": 10, "within": "10m"},
)


def temp(device: str, t: float, value: float) -> Observation:
    return obs(device, t, kind="bin", temperature=value)


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        pytest.param([(0, 20), (300, 31)], ["firing"], id="rise-within"),
        pytest.param([(0, 20), (600, 30)], ["firing"], id="rise-exactly-at-window-edge"),
        pytest.param([(0, 20), (601, 31)], [], id="rise-outside-window"),
        pytest.param([(0, 20), (300, 25), (700, 32)], [], id="slow-rise"),
        pytest.param([(0, 20), (300, 29)], [], id="rise-too-small"),
        pytest.param([(0, 30), (60, 20), (120, 31)], ["firing"], id="from-window-minimum"),
        pytest.param(
            [(0, 20), (60, 31), (120, 33), (900, 33)],
            ["firing", "firing+", "resolved"],
            id="clears-when-rate-gone",
        ),
    ],
)
def test_rate_rise(readings: list[tuple[float, float]], expected: list[str]) -> None:
    engine = engine_for(RISE)
    got: list[Transition] = []
    for t, value in readings:
        got += engine.evaluate([temp("b1", t, value)])
    assert [t.state + ("+" if t.repeat else "") for t in got] == expected


def test_rate_fall_and_explicit_clear() -> None:
    rule = make_rule(
        id="bin.emptied",
        device_type="bin",
        rate={"field": "fill", "fall": 50, "within": "1h"},
        clear=leaf("fill", "ge", 60),
    )
    engine = engine_for(rule)
    got: list[Transition] = []
    for t, fill in [(0, 90.0), (600, 10.0), (7200, 12.0), (8000, 70.0)]:
        got += engine.evaluate([obs("b1", t, kind="bin", fill=fill)])
    assert [(t.state, t.ts_ns) for t in got] == [
        ("firing", T0 + 600 * S),
        ("resolved", T0 + 8000 * S),
    ]
    assert "fill fell 80 within 1h (90 → 10)" in got[0].message


def test_rate_with_several_readings_of_one_device_in_a_batch() -> None:
    engine = engine_for(RISE)
    batch = [
        temp("b1", 0, 20),
        temp("b2", 0, 20),
        temp("b1", 60, 25),
        temp("b1", 120, 31),
        temp("b2", 60, 21),
    ]
    assert states(engine.evaluate(batch)) == [("bin.rise", "b1", "firing", False)]


def test_rate_window_keeps_the_newest_points_only() -> None:
    engine = engine_for(RISE, rate_points=4)
    got: list[Transition] = []
    for step in range(8):  # +2 °C a minute: the ring holds 4 points (3 minutes back)
        got += engine.evaluate([temp("b1", step * 60, 20 + 2 * step)])
    assert got == []


# -- absence -------------------------------------------------------------------------------

OFFLINE = make_rule(id="smoke.gone", absent="10m", severity="warning")


def test_absence_fires_on_tick_after_the_duration_and_clears_on_message() -> None:
    engine = engine_for(OFFLINE)
    engine.evaluate([obs("s1", 0, state="normal"), obs("s2", 300, state="normal")])
    assert engine.tick(T0 + 599 * S) == []
    [fired] = engine.tick(T0 + 600 * S)
    assert (fired.device_id, fired.state, fired.values) == ("s1", "firing", {"last_seen_ns": T0})
    assert engine.tick(T0 + 700 * S) == []  # no second edge
    [resolved] = engine.evaluate([obs("s1", 800, state="normal")])
    assert (resolved.state, resolved.values) == ("resolved", {"last_seen_ns": T0 + 800 * S})
    assert states(engine.tick(T0 + 900 * S)) == [("smoke.gone", "s2", "firing", False)]


def test_registered_device_never_heard_from_goes_offline() -> None:
    engine = engine_for(OFFLINE)
    engine.seen("s9", "smoke", T0)
    assert engine.tick(T0 + 599 * S) == []
    assert states(engine.tick(T0 + 600 * S)) == [("smoke.gone", "s9", "firing", False)]
    engine.seen("s9", "smoke", T0 + 700 * S)  # an "online" status message
    assert states(engine.tick(T0 + 701 * S)) == [("smoke.gone", "s9", "resolved", False)]


def test_registering_many_devices_at_once_is_seen_for_each() -> None:
    one_by_one, at_once = engine_for(OFFLINE), engine_for(OFFLINE)
    devices = [(f"s{n}", "smoke") for n in range(2000)]
    for device_id, kind in devices:
        one_by_one.seen(device_id, kind, T0)
    at_once.register(devices, T0)
    assert at_once.tick(T0 + 599 * S) == []
    fired = states(at_once.tick(T0 + 600 * S))
    assert fired == states(one_by_one.tick(T0 + 600 * S))
    assert len(fired) == 2000
    # registering again (a restart) resolves offline alerts, as activity does
    at_once.register(devices[:3], T0 + 700 * S)
    resolved = states(at_once.tick(T0 + 701 * S))
    assert resolved == [("smoke.gone", f"s{n}", "resolved", False) for n in range(3)]


def test_mark_saved_forgets_changes_without_building_them() -> None:
    engine = engine_for(OFFLINE)
    engine.register([("s1", "smoke"), ("s2", "smoke")], T0)
    engine.evaluate([obs("s1", 1, state="normal")])
    engine.mark_saved()
    assert engine.dirty_states() == {}
    engine.evaluate([obs("s1", 120, state="normal")])
    assert ("@activity", "s1") in engine.dirty_states()


def test_absence_heartbeat_multiple_uses_the_engine_heartbeat() -> None:
    rule = make_rule(id="smoke.gone", absent="2x heartbeat")
    engine = Engine(RuleSet.of([rule]), {"smoke": 30.0})
    engine.seen("s1", "smoke", T0)
    assert states(engine.tick(T0 + 60 * S)) == [("smoke.gone", "s1", "firing", False)]


def test_absence_can_use_receive_time_for_devices_with_wrong_clocks() -> None:
    engine = engine_for(OFFLINE)
    late_clock = obs("s1", -86_400, state="normal")  # device clock a day behind
    engine.evaluate([late_clock], received_ns=T0)
    assert engine.tick(T0 + 300 * S) == []


# -- ordering ------------------------------------------------------------------------------


def test_late_readings_do_not_flip_state_backwards() -> None:
    engine = engine_for(FIRE)
    assert run(
        engine,
        obs("s1", 100, smoke=0.2),
        obs("s1", 50, smoke=0.0),  # older than the alarm: ignored
        obs("s2", 100, smoke=0.0),
        obs("s2", 50, smoke=0.9),  # older than a normal reading: ignored
        obs("s1", 100, smoke=0.3),  # same time again (redelivery): ignored
    ) == [("smoke.fire", "s1", "firing", False)]


def test_a_batch_is_applied_in_time_order() -> None:
    engine = engine_for(FIRE)
    batch = [obs("s1", 20, smoke=0.0), obs("s1", 10, smoke=0.2), obs("s1", 20, smoke=0.0)]
    out = engine.evaluate(batch)
    assert [(t.state, t.ts_ns) for t in out] == [("firing", T0 + 10 * S), ("resolved", T0 + 20 * S)]


def test_late_readings_still_count_as_activity() -> None:
    engine = engine_for(OFFLINE)
    engine.evaluate([obs("s1", 100, state="normal")])
    engine.tick(T0 + 800 * S)
    assert states(engine.evaluate([obs("s1", 50, state="normal")])) == [
        ("smoke.gone", "s1", "resolved", False)
    ]
    # alive at least since the alert fired: offline again only a full duration later
    assert engine.tick(T0 + 1399 * S) == []
    assert states(engine.tick(T0 + 1400 * S)) == [("smoke.gone", "s1", "firing", False)]


def random_stream(seed: int, count: int) -> list[Observation]:
    rng = random.Random(seed)
    stream = []
    for number in range(count):
        device = f"s{rng.randrange(6)}"
        t = number * 7 + rng.randrange(-20, 5)  # jitter: some readings arrive late
        smoke = rng.choice([0.0, 0.05, 0.12, 0.2, 0.5])
        state = rng.choice(["normal", "alarm", "fault", "low_battery"])
        stream.append(obs(device, t, smoke=smoke, state=state, battery=rng.choice([10, 50])))
    return stream


def comparable(transitions: Iterable[Transition]) -> list[tuple[int, str, str, str, bool]]:
    return sorted((t.ts_ns, t.rule_id, t.device_id, t.state, t.repeat) for t in transitions)


@pytest.mark.parametrize("seed", range(5))
def test_batches_give_the_same_transitions_as_one_reading_at_a_time(seed: int) -> None:
    ruleset = load_rules(None)
    stream = random_stream(seed, 300)
    in_order = sorted(stream, key=lambda o: o.ts_ns)
    single = Engine(ruleset, {})
    one_by_one = [t for row in in_order for t in single.evaluate([row])]
    assert one_by_one, "the stream should trigger something"
    chunked = Engine(ruleset, {})
    batched = [t for i in range(0, 300, 50) for t in chunked.evaluate(in_order[i : i + 50])]
    assert comparable(batched) == comparable(one_by_one)
    # one unsorted batch: applied in time order, so the same again
    assert comparable(Engine(ruleset, {}).evaluate(stream)) == comparable(one_by_one)


# -- reload --------------------------------------------------------------------------------


def test_reload_keeps_state_of_rules_that_still_exist() -> None:
    engine = engine_for(FIRE, OFFLINE)
    engine.evaluate([obs("s1", 0, smoke=0.2)])
    engine.tick(T0 + 700 * S)
    stricter = FIRE.model_copy(update={"clear": make_rule(when=leaf("smoke", "lt", 0.01)).when})
    assert engine.reload(RuleSet.of([stricter, OFFLINE])) == []
    # the old clear (smoke < 0.1) would resolve here, the new one does not
    assert states(engine.evaluate([obs("s1", 800, smoke=0.05)])) == [
        ("smoke.gone", "s1", "resolved", False)
    ]
    out = engine.evaluate([obs("s1", 900, smoke=0.005)])
    assert states(out) == [("smoke.fire", "s1", "resolved", False)]


def test_reload_resolves_removed_disabled_and_changed_rules() -> None:
    count_fire = make_rule(
        id="smoke.fire", when=leaf("smoke", "ge", 0.15), count={"at_least": 1, "within": "1h"}
    )
    engine = engine_for(FIRE, OFFLINE, HELD)
    engine.evaluate([obs("s1", 0, smoke=0.2)])
    engine.tick(T0 + 30 * S)
    disabled = OFFLINE.model_copy(update={"enabled": False})
    out = engine.reload(RuleSet.of([count_fire, disabled]))
    assert sorted(states(out)) == [
        ("smoke.fire", "s1", "resolved", False),  # when → count: a different kind of state
        ("smoke.held", "s1", "resolved", False),  # removed while pending
    ]
    assert all(t.ts_ns == T0 + 30 * S for t in out)
    engine.tick(T0 + 10_000 * S)
    assert engine.tick(T0 + 20_000 * S) == []  # the disabled absence rule no longer runs


def test_reload_resolves_offline_alerts_of_a_disabled_rule() -> None:
    engine = engine_for(OFFLINE)
    engine.seen("s1", "smoke", T0)
    engine.tick(T0 + 601 * S)
    out = engine.reload(RuleSet.of([OFFLINE.model_copy(update={"enabled": False})]))
    assert states(out) == [("smoke.gone", "s1", "resolved", False)]
    assert engine.dirty_states()[("smoke.gone", "s1")] is None


# -- saved state ---------------------------------------------------------------------------

RESTART_RULES = [FIRE, HELD, OFFLINE, THROWS, RISE]


def scenario() -> tuple[list[Observation | float], list[Observation | float]]:
    before: list[Observation | float] = [
        obs("s1", 0, smoke=0.2),  # FIRE firing, HELD pending
        obs("s3", 0, smoke=0.3),  # HELD pending
        obs("s2", 0, smoke=0.0),
        throw("c1", 10),
        throw("c2", 20),  # two of three throws on the north facade
        temp("b1", 30, 20.0),  # first point of the rate window
        40.0,
    ]
    after: list[Observation | float] = [
        obs("s1", 50, smoke=0.12),  # FIRE: in the band, still firing; HELD: dropped
        90.0,  # HELD fires for s3 (pending since before the restart)
        throw("c1", 100),  # third throw: the count rule fires
        temp("b1", 120, 31.0),  # rise across the restart
        700.0,  # smoke devices silent for 10 min go offline
        obs("s2", 750, smoke=0.0),  # back online
        obs("s1", 760, smoke=0.01),  # FIRE clears
        5000.0,  # the throw window expires
    ]
    return before, after


def drive(engine: Engine, steps: list[Observation | float]) -> list[Transition]:
    out: list[Transition] = []
    for step in steps:
        out += (
            engine.evaluate([step])
            if isinstance(step, Observation)
            else engine.tick(T0 + round(step * S))
        )
    return out


def test_state_survives_a_restart() -> None:
    before, after = scenario()
    ruleset = RuleSet.of(RESTART_RULES)
    continuous = Engine(ruleset, {}, activity_resolution_s=0)
    drive(continuous, before)
    expected = drive(continuous, after)

    first = Engine(ruleset, {}, activity_resolution_s=0)
    drive(first, before)
    saved: dict[tuple[str, str], Any] = {}
    for key, doc in first.dirty_states().items():
        saved[key] = json.loads(json.dumps(doc))  # what a database would give back
    restarted = Engine(ruleset, {}, activity_resolution_s=0)
    restarted.load_states(
        (rule_id, key, doc) for (rule_id, key), doc in saved.items() if doc is not None
    )
    assert restarted.dirty_states() == {}
    got = drive(restarted, after)
    assert [(t.rule_id, t.device_id, t.state, t.ts_ns, t.group, t.repeat) for t in got] == [
        (t.rule_id, t.device_id, t.state, t.ts_ns, t.group, t.repeat) for t in expected
    ]
    happened = {(t.rule_id, t.device_id, t.state) for t in expected}
    assert {
        ("smoke.held", "s3", "firing"),
        ("smoke.held", "s1", "resolved"),
        ("smoke.fire", "s1", "resolved"),
        ("throw_camera.repeated", "c1", "firing"),
        ("throw_camera.repeated", "c1", "resolved"),
        ("bin.rise", "b1", "firing"),
        ("smoke.gone", "s2", "firing"),
        ("smoke.gone", "s2", "resolved"),
    } <= happened


def test_dirty_states_report_changes_once_and_deletions_as_none() -> None:
    engine = engine_for(FIRE)
    engine.evaluate([obs("s1", 0, smoke=0.2)])
    first = engine.dirty_states()
    assert first[("smoke.fire", "s1")] == {
        "status": "firing",
        "since_ns": T0,
        "fired_ns": T0,
        "values": {"smoke": 0.2},
    }
    assert first[("@activity", "s1")] == {
        "kind": "smoke",
        "last_seen_ns": T0,
        "last_reading_ns": T0,
    }
    assert engine.dirty_states() == {}
    engine.evaluate([obs("s1", 10, smoke=0.0)])
    assert engine.dirty_states()[("smoke.fire", "s1")] is None


def test_activity_is_saved_at_the_configured_resolution() -> None:
    engine = engine_for(OFFLINE)  # default resolution: 60 s
    engine.evaluate([obs("s1", 0, state="normal")])
    assert ("@activity", "s1") in engine.dirty_states()
    engine.evaluate([obs("s1", 30, state="normal")])
    assert engine.dirty_states() == {}
    engine.evaluate([obs("s1", 61, state="normal")])
    saved = engine.dirty_states()[("@activity", "s1")]
    assert saved is not None and saved["last_seen_ns"] == T0 + 61 * S


def test_bad_saved_states_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_for(FIRE)
    engine.load_states(
        [
            ("smoke.fire", "s1", {"status": "exploded"}),
            ("smoke.fire", "s2", {"status": "firing"}),  # no since_ns
            ("@activity", "s3", {"last_seen_ns": 1}),  # no kind
            ("smoke.gone_rule", "s4", {"status": "firing", "since_ns": 1}),
            ("smoke.fire", "s5", {"status": "firing", "since_ns": T0, "values": {"smoke": 0.3}}),
        ]
    )
    assert len(caplog.records) == 3
    assert states(engine.evaluate([obs("s5", 10, smoke=0.0)])) == [
        ("smoke.fire", "s5", "resolved", False)
    ]


# -- default rules end to end --------------------------------------------------------------


def test_default_rules_on_a_mixed_batch() -> None:
    engine = Engine(load_rules(None), {})
    batch = [
        obs("s1", 0, state="alarm", smoke=0.41),
        obs("s2", 0, state="normal", smoke=0.01, battery=15.0),
        obs("b1", 0, kind="bin", fill=97.0, temperature=21.0, position="normal"),
        obs("m1", 0, kind="manhole", tilt=25.0, state="opened", water_gap=20.0),
        throw("c1", 0),
        obs("c2", 0, kind="throw_camera", event="heartbeat"),
    ]
    fired = {(t.rule_id, t.device_id) for t in engine.evaluate(batch)}
    assert fired == {
        ("smoke.fire_alarm", "s1"),
        ("smoke.low_battery", "s2"),
        ("bin.nearly_full", "b1"),
        ("bin.overflow", "b1"),
        ("manhole.tilt", "m1"),
        ("manhole.opened", "m1"),
        ("manhole.water_high", "m1"),
        ("throw_camera.throw", "c1"),
    }
    [fire] = engine.evaluate([obs("s1", 5, state="alarm", smoke=0.5)])
    assert fire.repeat and fire.message == "火警 / Fire alarm: state = alarm, smoke 0.5 ≥ 0.15"
    emptied = engine.evaluate([obs("b1", 600, kind="bin", fill=10.0)])
    assert sorted(t.rule_id for t in emptied if t.state == "resolved") == [
        "bin.nearly_full",
        "bin.overflow",
    ]
