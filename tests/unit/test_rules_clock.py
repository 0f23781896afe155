"""Issue 14, item 2 (defence in depth): no reading, whatever its ``ts``, mutes a rule for the
device's later readings.

The gateway refuses a ``ts`` beyond its clock plus ``ts_max_skew_s`` (``future_ts``), but a
reading may still carry a ts somewhat ahead of the receive time. The engine orders readings by
their ts clamped to the batch's receive time (``rules.table.ordering_times``), so later,
correct readings are never taken for stale ones. Each scenario below runs the same script of
real readings on an engine that first saw one benign reading with a ts far ahead, and on one
that did not: the alerts must be the same. Without a receive time (the pure engine of the
other tests) the first scenario shows what the clamp prevents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from devices import KINDS, load_kind
from rules.engine import Engine, Observation
from rules.loader import load_rules, validate_rule
from rules.model import Rule, RuleSet
from rules.table import ordering_times

S = 1_000_000_000
T0 = 1_764_000_000 * S  # receive time of the first batch
TAGS = {"street": "ST1", "community": "SQ1", "grid": "G1", "building": "B1", "unit": "U1"}
HEARTBEAT = {kind: float(load_kind(kind).heartbeat_s) for kind in KINDS}
Y2099 = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp()) * S
#: A ts far ahead of the receive time T0: one day, 2099, and just inside the default skew.
AHEAD = [T0 + 86_400 * S, Y2099, T0 + 299 * S]


@dataclass(frozen=True)
class Step:
    """At ``at`` seconds after T0: a batch received then (readings with ts = receive time
    unless ``lag`` says how many seconds the device clock is behind), then a tick."""

    at: float
    kind: str
    device: str
    values: dict[str, Any]
    lag: float = 0.0


def rule(**fields: Any) -> Rule:
    made, problems = validate_rule(fields)
    assert made is not None and not problems, problems
    return made


def default_rules(*extra: Rule) -> RuleSet:
    return RuleSet.of([*load_rules(None), *extra])


def play(
    rules: RuleSet,
    steps: Sequence[Step],
    first: Observation | None = None,
    clamp: bool = True,
) -> list[tuple[str, str, str]]:
    """Alerts raised and resolved by ``steps`` (after an optional first reading at T0)."""
    engine = Engine(rules, HEARTBEAT)
    if first is not None:
        engine.evaluate([first], T0 if clamp else None)
        engine.tick(T0)
    out = []
    for step in steps:
        now = T0 + round(step.at * S)
        reading = Observation(step.device, step.kind, now - round(step.lag * S), step.values, TAGS)
        out += engine.evaluate([reading], now if clamp else None)
        out += engine.tick(now)
    return [(t.rule_id, t.device_id, t.state) for t in out if not t.repeat]


def fires(transitions: list[tuple[str, str, str]], rule_id: str) -> int:
    return sum(1 for r, _, state in transitions if r == rule_id and state == "firing")


FIRE = [
    Step(10, "smoke", "s1", {"state": "alarm", "smoke": 0.4}),
    Step(20, "smoke", "s1", {"state": "normal", "smoke": 0.01}),
    Step(30, "smoke", "s1", {"state": "alarm", "smoke": 0.5}),
    Step(40, "smoke", "s1", {"state": "normal", "smoke": 0.02}),
    Step(50, "smoke", "s1", {"state": "alarm", "event": "alarm_raised"}),
]
HELD = rule(
    id="smoke.held", title="持续 / Held", device_type="smoke", severity="major",
    when={"field": "smoke", "op": "ge", "value": 0.15}, **{"for": "30s"},
)  # fmt: skip
FOR_SCRIPT = [Step(t, "smoke", "s1", {"state": "normal", "smoke": 0.2}) for t in range(10, 70, 10)]
RATE = [
    Step(10, "bin", "b1", {"distance": 500, "temperature": 25.0}),
    Step(70, "bin", "b1", {"distance": 500, "temperature": 31.0}),
    Step(130, "bin", "b1", {"distance": 500, "temperature": 39.0}),
]
THROWS = [
    Step(t, "throw_camera", "c1", {"event": "throw", "confidence": 0.9, "facade": "east"})
    for t in (10, 20, 30)
]
OFFLINE = rule(
    id="smoke.quiet", title="安静 / Quiet", device_type="smoke", severity="warning",
    absent="60s",
)  # fmt: skip
ABSENCE = [
    Step(10, "smoke", "s1", {"state": "normal"}),
    Step(100, "smoke", "s2", {"state": "normal"}),  # time passes: s1 goes offline
    Step(110, "smoke", "s1", {"state": "normal"}),  # and comes back
]
SCENARIOS: dict[str, tuple[RuleSet, list[Step], str, str, str, int]] = {
    "fire alarm (when)": (default_rules(), FIRE, "smoke", "s1", "smoke.fire_alarm", 3),
    "held for 30 s (for)": (default_rules(HELD), FOR_SCRIPT, "smoke", "s1", "smoke.held", 1),
    "temperature rise (rate)": (default_rules(), RATE, "bin", "b1", "bin.fire_rise", 1),
    "3 throws in 1 h (count)": (
        default_rules(),
        THROWS,
        "throw_camera",
        "c1",
        "throw_camera.repeated_throws",
        1,
    ),
    "offline (absent)": (default_rules(OFFLINE), ABSENCE, "smoke", "s1", "smoke.quiet", 1),
}
BENIGN: dict[str, dict[str, object]] = {
    "smoke": {"state": "normal", "smoke": 0.01},
    "bin": {"distance": 500, "temperature": 45.0},
    "throw_camera": {"event": "heartbeat"},
}


@pytest.mark.parametrize("ahead", AHEAD, ids=["now+1d", "2099", "now+299s"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_a_reading_from_the_future_changes_no_later_alert(name: str, ahead: int) -> None:
    rules, steps, kind, device, rule_id, expected = SCENARIOS[name]
    first = Observation(device, kind, ahead, BENIGN[kind], TAGS)
    baseline = play(rules, steps)
    assert fires(baseline, rule_id) == expected, baseline
    assert play(rules, steps, first) == baseline


def test_without_the_receive_time_the_same_reading_would_mute_the_fire_alarm() -> None:
    # What the clamp prevents: the pure engine orders by the device's ts alone.
    rules, steps, kind, device, rule_id, _ = SCENARIOS["fire alarm (when)"]
    first = Observation(device, kind, T0 + 86_400 * S, BENIGN[kind], TAGS)
    assert fires(play(rules, steps, first, clamp=False), rule_id) == 0


def test_an_alarm_from_the_future_can_still_be_cleared() -> None:
    first = Observation("s1", "smoke", T0 + 86_400 * S, {"state": "alarm", "smoke": 0.4}, TAGS)
    steps = [Step(10, "smoke", "s1", {"state": "normal", "smoke": 0.01})]
    assert play(default_rules(), steps, first) == [("smoke.fire_alarm", "s1", "resolved")]


def test_a_device_clock_behind_keeps_its_own_order_and_dedup() -> None:
    # Readings a minute behind the receive time are ordered by their own ts; the same
    # reading delivered again (a redelivery) is recognised and changes nothing.
    engine = Engine(default_rules(), HEARTBEAT)
    alarm = Observation("s1", "smoke", T0 - 60 * S, {"state": "alarm"}, TAGS)
    normal = Observation("s1", "smoke", T0 - 59 * S, {"state": "normal", "smoke": 0.0}, TAGS)
    assert [t.state for t in engine.evaluate([alarm, normal], T0)] == ["firing", "resolved"]
    assert engine.evaluate([alarm, normal], T0 + S) == []


def test_clamped_readings_keep_their_arrival_order_one_ns_apart() -> None:
    ts = np.array([T0 - 5, T0 + 10 * S, T0, T0 + 3 * S, T0 + 2], dtype=np.int64)
    clamped, ahead = ordering_times(ts, T0)
    assert clamped.tolist() == [T0 - 5, T0 + 1, T0, T0 + 2, T0 + 3]
    assert ahead is not None and ahead.tolist() == [False, True, False, True, True]
    untouched = np.array([T0 - S, T0], dtype=np.int64)
    assert ordering_times(untouched, T0) == (untouched, None)


@pytest.mark.parametrize("lag", [1, 20, 250])
def test_a_device_clock_behind_is_not_muted_by_a_reading_from_the_future(lag: float) -> None:
    # A device whose clock is behind the gateway's: after one reading ahead of the receive
    # time, its real alarms (ts = receive time - lag) still raise, as without that reading.
    rules, steps, kind, device, rule_id, expected = SCENARIOS["fire alarm (when)"]
    behind = [Step(s.at, s.kind, s.device, s.values, lag) for s in steps]
    first = Observation(device, kind, T0 + 299 * S, BENIGN[kind], TAGS)
    baseline = play(rules, behind)
    assert fires(baseline, rule_id) == expected
    assert play(rules, behind, first) == baseline


def test_two_readings_from_the_future_in_one_batch_apply_in_arrival_order() -> None:
    engine = Engine(default_rules(), HEARTBEAT)
    batch = [
        Observation("s1", "smoke", T0 + 600 * S, {"state": "alarm"}, TAGS),
        Observation("s1", "smoke", T0 + 300 * S, {"state": "normal", "smoke": 0.0}, TAGS),
    ]
    out = engine.evaluate(batch, T0)
    assert [(t.state, t.ts_ns) for t in out] == [("firing", T0 + 1), ("resolved", T0 + 2)]
