"""bin and manhole kinds: field tables, models, derive functions, rules, simulators.

The kind-independent checks (README lists every field, one spec per model field, samples)
live in test_device_conformance.py.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import yaml

from devices import load_kind
from devices.base import DecodeError, Derive, DeviceKind, Reading, SimMessage
from devices.bin.model import BinReading, derive_fill
from devices.manhole.model import derive_manhole, derive_tilt, derive_water_gap, tilt_from_angles

BIN = load_kind("bin")
MANHOLE = load_kind("manhole")
KINDS = [pytest.param(BIN, id="bin"), pytest.param(MANHOLE, id="manhole")]
#: A minimal valid message per kind, to which one field under test is added.
BASE: dict[str, dict[str, Any]] = {"bin": {"distance": 100}, "manhole": {"battery": 50}}
T0 = 1_764_300_000.0


def as_bin(reading: Reading) -> BinReading:
    """Narrow a validated reading to the bin model."""
    assert isinstance(reading, BinReading)
    return reading


def reason_of(kind: DeviceKind, raw: dict[str, Any], params: Mapping[str, str]) -> str:
    """``ok`` or the DecodeError reason of validating ``raw``."""
    try:
        kind.validate(raw, params)
    except DecodeError as err:
        return err.reason
    return "ok"


# --- kind metadata and field tables ------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "heartbeat", "binary"),
    [(BIN, 1800, "em310-udl"), (MANHOLE, 21600, "em310-tilt")],
    ids=["bin", "manhole"],
)
def test_kind_metadata(kind: DeviceKind, heartbeat: int, binary: str) -> None:
    assert kind.folder.name == kind.name
    assert kind.heartbeat_s == heartbeat
    assert sorted(kind.codecs) == sorted(["json", binary])
    assert all(codec.name == name for name, codec in kind.codecs.items())
    assert kind.title_zh and kind.title_en


def range_cases() -> list[Any]:
    """Each spec bound must validate, and one step beyond it must be out_of_range."""
    cases = []
    for kind in (BIN, MANHOLE):
        for spec in kind.fields:
            step = 1 if spec.type == "int" else 0.01
            for limit, beyond in ((spec.minimum, -step), (spec.maximum, step)):
                if limit is not None:
                    # int specs keep float limits; int64's top is not exact as a float
                    bound = min(int(limit), 2**63 - 1) if spec.type == "int" else limit
                    name = f"{kind.name}.{spec.key}={bound:g}"
                    cases.append(pytest.param(kind, spec.key, bound, "ok", id=name))
                    cases.append(
                        pytest.param(kind, spec.key, bound + beyond, "out_of_range", id=name + "±")
                    )
    return cases


@pytest.mark.parametrize(("kind", "key", "value", "reason"), range_cases())
def test_spec_ranges_match_the_model(kind: DeviceKind, key: str, value: float, reason: str) -> None:
    assert reason_of(kind, {**BASE[kind.name], key: value}, {}) == reason


@pytest.mark.parametrize("kind", KINDS)
def test_spec_choices_match_the_model(kind: DeviceKind) -> None:
    for spec in kind.fields:
        if not spec.choices:
            continue
        for choice in spec.choices:
            assert reason_of(kind, {**BASE[kind.name], spec.key: choice}, {}) == "ok"
        assert reason_of(kind, {**BASE[kind.name], spec.key: "bogus"}, {}) == "wrong_type"


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        (BIN, {"distance": 2116}, "ok"),
        (BIN, {"fill": 40.5}, "ok"),
        (BIN, {"event": "fire", "temperature": 72.0}, "ok"),
        (BIN, {"temperature": 20.0, "battery": 80}, "missing_field"),
        (BIN, {"position": "tilt"}, "missing_field"),
        (BIN, {"distance": 2116.5}, "wrong_type"),
        (BIN, {"distance": 100, "level": 3}, "unknown_field"),
        (MANHOLE, {"tilt": 3.5}, "ok"),
        (MANHOLE, {"vibration": True}, "ok"),
        (MANHOLE, {"event": "opened"}, "ok"),
        (MANHOLE, {"ts": 1_764_300_000_000, "seq": 3, "fw": "v1.2"}, "missing_field"),
        (MANHOLE, {}, "missing_field"),
        (MANHOLE, {"vibration": "maybe"}, "wrong_type"),
        (MANHOLE, {"tilt": 1.0, "temperature": 9}, "unknown_field"),
    ],
)
def test_validators(kind: DeviceKind, raw: dict[str, Any], reason: str) -> None:
    assert reason_of(kind, raw, {}) == reason


def test_missing_level_message_is_clear() -> None:
    with pytest.raises(DecodeError, match="needs distance \\(mm\\) or fill"):
        BIN.validate({"temperature": 20.0}, {})


# --- derive functions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distance", "depth", "fill"),
    [
        (2116, "2500", 15.4),
        (0, "1000", 100.0),
        (1000, "1000", 0.0),
        (1500, "1000", 0.0),  # sensor sees past the bottom: clamped
        (250, "1000.0", 75.0),
        (333.0, "1000", 66.7),
        (4500, "1e6", 99.5),
    ],
)
def test_derive_fill(distance: float, depth: str, fill: float) -> None:
    raw = {"distance": distance, "battery": 90}
    derived = derive_fill(raw, {"depth_mm": depth})
    assert derived == {"distance": distance, "battery": 90, "fill": fill}
    assert raw == {"distance": distance, "battery": 90}


#: Values no derive function can use as a number.
JUNK: list[Any] = [None, True, False, "far", "", [], {}, [1], math.nan, math.inf, -math.inf]
JUNK += [10**400, -(10**400), 1e308, object()]
BAD_DEPTHS = [{}, {"depth_cm": "100"}] + [
    {"depth_mm": depth} for depth in ("", "deep", "0", "-5", "nan", "inf", "1e999")
]
UNCHANGED: list[tuple[Derive, dict[str, Any], dict[str, str]]] = [
    *[(derive_fill, {"distance": junk}, {"depth_mm": "1000"}) for junk in [*JUNK, -1, 4501]],
    *[(derive_fill, {"distance": 100}, params) for params in BAD_DEPTHS],
    (derive_fill, {"distance": 100, "fill": 12.0}, {"depth_mm": "1000"}),
    *[(derive_tilt, {"angle_x": junk, "angle_y": 0}, {}) for junk in [*JUNK, 180.01, -181]],
    *[(derive_tilt, {"angle_x": 0, "angle_y": junk}, {}) for junk in [*JUNK, 180.01, -181]],
    (derive_tilt, {"angle_x": 5.0}, {}),
    (derive_tilt, {"angle_x": 40.0, "angle_y": 0.0, "tilt": 2.0}, {}),
    *[(derive_water_gap, {"water_level": junk}, {"depth_cm": "300"}) for junk in [*JUNK, 501]],
    *[(derive_water_gap, {"water_level": 10}, {"depth_cm": d}) for d in ("", "x", "0", "501")],
    (derive_water_gap, {"water_level": 10}, {}),
    (derive_water_gap, {"water_level": 10, "water_gap": 5.0}, {"depth_cm": "300"}),
]


@pytest.mark.parametrize(("derive", "raw", "params"), UNCHANGED, ids=repr)
def test_derive_leaves_unusable_or_complete_input_as_is(
    derive: Derive, raw: dict[str, Any], params: dict[str, str]
) -> None:
    assert derive(raw, params) is raw


def test_bin_validate_derives_fill_from_the_published_example() -> None:
    reading = BIN.validate(
        {"battery": 92, "distance": 2116, "position": "tilt"}, {"depth_mm": "2500"}
    )
    expected = {"battery": 92.0, "distance": 2116, "fill": 15.4, "position": "tilt"}
    assert reading.model_dump(exclude_none=True) == expected


@pytest.mark.parametrize(
    ("angle_x", "angle_y", "tilt"),
    [
        (0, 0, 0.0),
        (30, 0, 30.0),
        (0, -45, 45.0),
        (-90, 10, 90.0),
        (180, 0, 180.0),
        (60, 60, 75.52),  # acos(0.5 × 0.5)
        (3, 4, 5.0),
    ],
)
def test_tilt_from_angles(angle_x: float, angle_y: float, tilt: float) -> None:
    assert tilt_from_angles(angle_x, angle_y) == pytest.approx(tilt, abs=0.01)


def test_derive_manhole_adds_tilt_and_water_gap_without_mutating() -> None:
    raw = {"angle_x": 10.0, "angle_y": 12.0, "angle_z": -0.5, "water_level": 285.5}
    derived = derive_manhole(raw, {"depth_cm": "300"})
    assert derived == {**raw, "tilt": 15.57, "water_gap": 14.5}
    assert "tilt" not in raw and "water_gap" not in raw
    assert derive_manhole({"water_level": 0}, {"depth_cm": "500"})["water_gap"] == 500
    assert derive_manhole({"water_level": 500}, {"depth_cm": "120"})["water_gap"] == -380


# --- rules -------------------------------------------------------------------------------


def rule_leaves(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``{field, op, value}`` leaf of a condition tree."""
    if isinstance(node, dict):
        if "field" in node:
            yield node
        for key in ("all", "any", "not"):
            if key in node:
                yield from rule_leaves(node[key])
    elif isinstance(node, list):
        for item in node:
            yield from rule_leaves(item)


@pytest.mark.parametrize("kind", KINDS)
def test_rules_name_known_fields_and_choices(kind: DeviceKind) -> None:
    doc = yaml.safe_load((kind.folder / "rules.yaml").read_text(encoding="utf-8"))
    ids = [rule["id"] for rule in doc["rules"]]
    assert len(ids) == len(set(ids))
    for rule in doc["rules"]:
        assert rule["device_type"] == kind.name
        assert rule["id"].startswith(f"{kind.name}.")
        assert rule["severity"] in {"info", "warning", "major", "critical"}
        assert sum(key in rule for key in ("when", "absent", "rate")) == 1, rule["id"]
        leaves = [*rule_leaves(rule.get("when")), *rule_leaves(rule.get("clear"))]
        if "rate" in rule:
            leaves.append(rule["rate"])
        for leaf in leaves:
            spec = kind.field(leaf["field"])
            values = leaf.get("value")
            if spec.choices and leaf.get("op") in {"eq", "ne", "in"}:
                for value in values if isinstance(values, list) else [values]:
                    assert value in spec.choices, (rule["id"], value)


# --- simulators --------------------------------------------------------------------------


def run(
    kind: DeviceKind,
    codec: str = "json",
    seed: int = 1,
    hours: float = 72,
    params: Mapping[str, str] | None = None,
    incidents: Mapping[int, str] | None = None,
) -> list[tuple[float, SimMessage]]:
    """Step one simulated device every minute; start incidents at the given hour marks."""
    sim = kind.simulator(
        "dev-1", kind.codecs[codec], params or {}, random.Random(seed), kind.heartbeat_s
    )
    due = dict(incidents or {})
    out: list[tuple[float, SimMessage]] = []
    for minute in range(int(hours * 60)):
        now = T0 + minute * 60
        for hour in [h for h in due if now >= T0 + h * 3600]:
            out += [(now, m) for m in sim.start_incident(due.pop(hour), now)]
        out += [(now, m) for m in sim.step(now)]
    return out


def readings(
    kind: DeviceKind,
    messages: list[tuple[float, SimMessage]],
    codec: str,
    params: Mapping[str, str],
) -> list[tuple[float, Reading]]:
    """Decode and validate every message; any rejection fails the test."""
    return [
        (now, kind.validate(raw, params))
        for now, message in messages
        for raw in kind.codecs[codec].decode(message.payload)
    ]


SIM_CASES = [
    (BIN, "json", {"depth_mm": "1000"}),
    (BIN, "em310-udl", {"depth_mm": "1200"}),
    (MANHOLE, "json", {}),
    (MANHOLE, "em310-tilt", {"depth_cm": "250"}),
]


@pytest.mark.parametrize(("kind", "codec", "params"), SIM_CASES)
def test_simulated_messages_decode_and_validate(
    kind: DeviceKind, codec: str, params: dict[str, str]
) -> None:
    marks = {6 + 8 * i: name for i, name in enumerate(kind.simulator.incidents)}
    messages = run(kind, codec, params=params, incidents=marks)
    got = readings(kind, messages, codec, params)
    assert len(got) == len(messages) > 10
    if codec != "json":
        assert {m.topic_kind for _, m in messages} == {"telemetry"}
    else:
        assert {m.topic_kind for _, m in messages} == {"telemetry", "event"}
        assert [r.seq for _, r in got] == list(range(1, len(got) + 1))


@pytest.mark.parametrize(("kind", "codec", "params"), SIM_CASES)
def test_simulators_are_deterministic(kind: DeviceKind, codec: str, params: dict[str, str]) -> None:
    first = run(kind, codec, seed=7, hours=24, params=params)
    assert first == run(kind, codec, seed=7, hours=24, params=params)
    assert first != run(kind, codec, seed=8, hours=24, params=params)


@pytest.mark.parametrize("kind", KINDS)
def test_first_report_is_spread_over_the_first_heartbeat(kind: DeviceKind) -> None:
    hours = kind.heartbeat_s / 3600 + 0.1
    firsts = [run(kind, seed=seed, hours=hours)[0][0] - T0 for seed in range(20)]
    assert all(0 <= first <= kind.heartbeat_s for first in firsts)
    assert len(set(firsts)) > 10


def test_bin_fills_up_is_emptied_and_reports_more_often_near_full() -> None:
    params = {"depth_mm": "1000"}
    got = readings(BIN, run(BIN, hours=24 * 5, params=params), "json", params)
    emptied = [now for now, r in got if as_bin(r).event == "emptied"]
    assert emptied
    full = [now for now, r in got if (as_bin(r).fill or 0) >= 80]
    gaps_full = [b - a for a, b in itertools.pairwise(full) if b - a < 1800]
    assert gaps_full and max(gaps_full) == 600


INCIDENT_CASES: list[tuple[DeviceKind, str, str, Callable[[Any], bool]]] = [
    (BIN, "json", "overflow", lambda r: 95.5 <= r.fill <= 100),
    (BIN, "em310-udl", "overflow", lambda r: 95.5 <= r.fill <= 100),
    (BIN, "json", "tilt", lambda r: r.position == "tilt"),
    (BIN, "em310-udl", "tilt", lambda r: r.position == "tilt"),
    (MANHOLE, "json", "opened", lambda r: 60 <= r.tilt <= 90 and r.state == "opened"),
    (MANHOLE, "em310-tilt", "opened", lambda r: 60 <= r.tilt <= 90 and r.alarm_x | r.alarm_y),
    (MANHOLE, "json", "tilted", lambda r: 15 <= r.tilt <= 30 and r.state == "tilted"),
    (MANHOLE, "em310-tilt", "tilted", lambda r: 15 <= r.tilt <= 30),
    (MANHOLE, "json", "gas", lambda r: 10 <= r.h2s <= 30.5),
]


@pytest.mark.parametrize(("kind", "codec", "incident", "check"), INCIDENT_CASES)
def test_incident_shows_at_once(
    kind: DeviceKind, codec: str, incident: str, check: Callable[[Any], bool]
) -> None:
    params = {"depth_mm": "1000"} if kind is BIN else {}
    messages = run(kind, codec, hours=2, params=params, incidents={1: incident})
    first = next(r for now, r in readings(kind, messages, codec, params) if now >= T0 + 3600)
    assert check(first)
    assert first.model_dump().get("event") == (incident if codec == "json" else None)


def test_bin_fire_incident_rises_fast() -> None:
    got = readings(BIN, run(BIN, hours=3, incidents={1: "fire"}), "json", {})
    temps = [(now, as_bin(r).temperature or 0.0) for now, r in got]
    assert max(t for now, t in temps if now <= T0 + 3600 + 1200) >= 70
    # The rate rule (a rise of 10 °C within 10 min) sees it: reports come every 2 minutes.
    assert any(tb - ta <= 600 and b - a >= 10 for ta, a in temps for tb, b in temps if tb > ta)


def test_manhole_flood_rises_to_within_30_cm_of_the_cover() -> None:
    params = {"depth_cm": "180"}
    messages = run(MANHOLE, hours=8, params=params, incidents={1: "flood"})
    gaps = [r.model_dump()["water_gap"] for _, r in readings(MANHOLE, messages, "json", params)]
    assert 0 <= min(gaps) <= 30


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_incident_is_refused(kind: DeviceKind) -> None:
    sim = kind.simulator("d", kind.codecs["json"], {}, random.Random(1), kind.heartbeat_s)
    with pytest.raises(ValueError, match="unknown incident 'meteor'"):
        sim.start_incident("meteor", T0)


@pytest.mark.parametrize(
    ("kind", "params"),
    [(BIN, {"depth_mm": "deep"}), (BIN, {"depth_mm": "-1"}), (MANHOLE, {"depth_cm": "900"})],
)
def test_simulator_refuses_bad_install_params(kind: DeviceKind, params: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="depth"):
        kind.simulator("d", kind.codecs["json"], params, random.Random(1), kind.heartbeat_s)


@pytest.mark.parametrize(("kind", "codec", "params"), SIM_CASES)
def test_bad_payloads_are_rejected(kind: DeviceKind, codec: str, params: dict[str, str]) -> None:
    sim = kind.simulator("d", kind.codecs[codec], params, random.Random(3), kind.heartbeat_s)
    for _ in range(8):
        bad = sim.bad_payload()
        with pytest.raises(DecodeError):
            for raw in kind.codecs[codec].decode(bad.payload):
                kind.validate(raw, params)
