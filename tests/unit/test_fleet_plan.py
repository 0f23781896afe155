"""The fleet's plan: deterministic, incidents resolved, bad input at the asked rate."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from devices import KINDS, load_kind
from devices.base import DecodeError
from simulators.__main__ import main
from simulators.community import DeviceRow, load_devices, load_hierarchy, parent_map
from simulators.fleet import (
    OFFLINE,
    ONLINE,
    FleetCore,
    FleetError,
    Incident,
    IncidentError,
    IncidentSpec,
    Outgoing,
    build_simulator,
    incident_names,
    parse_incident,
    plan,
    plan_messages,
    resolve_incident,
    run_fleet,
    select_devices,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"
START = 1_750_000_000.0


@pytest.fixture(scope="module")
def rows() -> list[DeviceRow]:
    return load_devices(FIXTURE / "devices.csv")


@pytest.fixture(scope="module")
def parents() -> dict[str, str]:
    return parent_map(load_hierarchy(FIXTURE / "hierarchy.yaml"))


@pytest.fixture(scope="module")
def fleet(rows: list[DeviceRow]) -> list[DeviceRow]:
    """A small fleet with every kind and both codecs of bins and manholes."""
    return select_devices(rows, limit=120)


def test_same_seed_same_plan(fleet: list[DeviceRow]) -> None:
    incidents = [Incident("fire", fleet[0].device_id, 7.0)]
    first = plan(fleet, 1, START, START + 120, 5.0, incidents, 0.05)
    second = plan(fleet, 1, START, START + 120, 5.0, incidents, 0.05)
    assert len(first) > 2 * len(fleet)
    assert first == second


def test_other_seed_other_plan(fleet: list[DeviceRow]) -> None:
    assert plan(fleet, 1, START, START + 60, 5.0, [], 0.0) != plan(
        fleet, 2, START, START + 60, 5.0, [], 0.0
    )


def test_plan_brackets_the_run_with_statuses(fleet: list[DeviceRow]) -> None:
    planned = plan(fleet, 1, START, START + 30, 5.0, [], 0.0)
    n = len(fleet)
    assert [(m[2], m[3]) for m in planned[:n]] == [("status", ONLINE)] * n
    assert [(m[2], m[3]) for m in planned[-n:]] == [("status", OFFLINE)] * n
    times = [m[0] for m in planned]
    assert times == sorted(times) and times[0] >= START and times[-1] == START + 30


def test_every_good_message_decodes_and_validates(fleet: list[DeviceRow]) -> None:
    by_id = {row.device_id: row for row in fleet}
    incidents = []  # every incident of every kind, each on a device of its own
    for kind_name in KINDS:
        devices = [row.device_id for row in fleet if row.kind == kind_name]
        for n, name in enumerate(incident_names(kind_name)):
            incidents.append(Incident(name, devices[n], 3.0 + n))
    messages = plan_messages(fleet, 3, START, START + 300, 10.0, incidents, 0.0)
    seen: Counter[tuple[str, str]] = Counter()
    for message in messages:
        if message.topic_kind == "status":
            assert message.payload in (ONLINE, OFFLINE)
            continue
        row = by_id[message.device_id]
        kind = load_kind(row.kind)
        for raw in kind.codecs[row.codec].decode(message.payload):
            kind.validate(raw, row.params)
        seen[(row.kind, row.codec)] += 1
    assert {kind for kind, _ in seen} == set(KINDS)
    assert {codec for _, codec in seen} >= {"json", "em310-udl", "em310-tilt"}


def test_bad_rate_share_and_categories(fleet: list[DeviceRow]) -> None:
    messages = plan_messages(fleet, 1, START, START + 200, 5.0, [], 0.05)
    data = [m for m in messages if m.category != "status"]
    counts = Counter(m.category for m in data)
    assert len(data) > 3000
    assert counts["bad_payload"] + counts["ghost"] + counts["mismatch"] == pytest.approx(
        0.05 * len(data), rel=0.3
    )
    assert counts["ghost"] > 0 and counts["mismatch"] > 0
    for message in data:
        _check_bad(message, {row.device_id: row for row in fleet})


def _check_bad(message: Outgoing, by_id: dict[str, DeviceRow]) -> None:
    if message.category == "ghost":
        assert message.device_id.startswith("ghost-") and message.device_id not in by_id
    elif message.category == "mismatch":
        claimed = orjson.loads(message.payload)["device_id"]
        assert claimed != message.device_id
    elif message.category == "bad_payload":
        row = by_id[message.device_id]
        kind = load_kind(row.kind)
        with pytest.raises(DecodeError):
            for raw in kind.codecs[row.codec].decode(message.payload):
                kind.validate(raw, row.params)


def test_no_bad_messages_at_rate_zero(fleet: list[DeviceRow]) -> None:
    messages = plan_messages(fleet, 1, START, START + 60, 5.0, [], 0.0)
    assert {m.category for m in messages} == {"ok", "status"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fire@B3-2-1001", IncidentSpec("fire", "B3-2-1001", 0.0)),
        ("overflow@bin-C2-07+30", IncidentSpec("overflow", "bin-C2-07", 30.0)),
        ("throw@B3+2.5", IncidentSpec("throw", "B3", 2.5)),
        (" gas @ C1 ", IncidentSpec("gas", "C1", 0.0)),
    ],
)
def test_parse_incident(text: str, expected: IncidentSpec) -> None:
    assert parse_incident(text) == expected


@pytest.mark.parametrize("text", ["fire", "@B3", "fire@", "fire@B3+soon", "fire@B3+-5", "+5"])
def test_parse_incident_rejects(text: str) -> None:
    with pytest.raises(IncidentError, match="incident"):
        parse_incident(text)


@pytest.mark.parametrize(
    ("text", "device_id", "kind", "node"),
    [
        ("fire@B3-2-1001", "smoke-B3-2-1001", "smoke", "B3-2"),
        ("fire@smoke-B3-2-1001+10", "smoke-B3-2-1001", "smoke", "B3-2"),
        ("overflow@bin-C2-07", "bin-C2-07", "bin", "C2"),
        ("fire@B3", None, "smoke", "B3-1"),
        ("throw@B3", "cam-B3-east", "throw_camera", "B3"),
        ("overflow@C2", "bin-C2-01", "bin", "C2"),
        ("opened@C1", "mh-C1-01", "manhole", "C1"),
        ("throw@G2", "cam-B11-east", "throw_camera", "B11"),
    ],
)
def test_resolve_incident(
    rows: list[DeviceRow],
    parents: dict[str, str],
    text: str,
    device_id: str | None,
    kind: str,
    node: str,
) -> None:
    name = text.split("@", maxsplit=1)[0]
    if name not in incident_names(kind):
        pytest.skip(f"{kind} has no incident {name!r} (names: {incident_names(kind)})")
    incident = resolve_incident(parse_incident(text), rows, parents)
    row = next(r for r in rows if r.device_id == incident.device_id)
    assert (row.kind, row.node) == (kind, node)
    assert device_id is None or incident.device_id == device_id
    assert incident.delay_s == parse_incident(text).delay_s


@pytest.mark.parametrize(
    ("text", "message", "valid_kinds"),
    [
        ("explode@smoke-B3-2-1001", "has no incident 'explode'", ["smoke"]),
        ("explode@B3-2-1001", "has no incident 'explode'", ["smoke"]),
        ("explode@bin-C2-07", "has no incident 'explode'", ["bin"]),
        ("explode@B3", "no device under B3", ["smoke", "throw_camera"]),
        ("fire@B99", "no device, location or node", []),
        ("fire@B3-2-9999", "no device, location or node", []),
    ],
)
def test_resolve_incident_errors_list_valid_names(
    rows: list[DeviceRow], parents: dict[str, str], text: str, message: str, valid_kinds: list[str]
) -> None:
    with pytest.raises(IncidentError, match=message) as caught:
        resolve_incident(parse_incident(text), rows, parents)
    for kind in valid_kinds:
        for name in incident_names(kind):
            assert name in str(caught.value)


def test_cli_reports_bad_incident_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fleet", "--community", str(FIXTURE), "--incident", "explode@B3-2-1001"])
    assert code == 2
    err = capsys.readouterr().err
    assert "explode" in err and all(name in err for name in incident_names("smoke"))


def test_cli_refuses_unknown_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "--community", str(FIXTURE), "--kinds", "smoke,toaster"]) == 2
    assert "toaster" in capsys.readouterr().err


def test_cli_generates_the_fixture(tmp_path: Path) -> None:
    assert main(["generate-community", "--out", str(tmp_path), "--seed", "1"]) == 0
    assert (tmp_path / "devices.csv").read_bytes() == (FIXTURE / "devices.csv").read_bytes()


def test_select_devices_spreads_kinds_and_keeps_targets(rows: list[DeviceRow]) -> None:
    chosen = select_devices(rows, limit=8, keep=["mh-C4-15"])
    assert Counter(r.kind for r in chosen) == {
        "smoke": 2,
        "throw_camera": 2,
        "bin": 2,
        "manhole": 3,
    }
    assert "mh-C4-15" in {r.device_id for r in chosen}
    only = select_devices(rows, kinds=["bin"])
    assert len(only) == 100 and {r.kind for r in only} == {"bin"}


def test_core_refuses_bad_options(fleet: list[DeviceRow]) -> None:
    with pytest.raises(FleetError, match="bad rate"):
        FleetCore(fleet, 1, START, bad_rate=1.5)
    with pytest.raises(IncidentError, match="not in the fleet"):
        FleetCore(fleet[:2], 1, START, incidents=[Incident("fire", "smoke-B9-1-101")])
    unknown_codec = dataclasses.replace(fleet[0], codec="morse")
    with pytest.raises(FleetError, match="no codec 'morse'"):
        build_simulator(unknown_codec, 1, None)


class _FakeTime(threading.Event):
    """A stop event whose wait advances a fake clock instead of sleeping."""

    def __init__(self, now: float) -> None:
        super().__init__()
        self.now = now

    def wait(self, timeout: float | None = None) -> bool:
        self.now += timeout or 0.0
        return False

    def clock(self) -> float:
        return self.now


class _ListPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []

    def publish(self, device_id: str, topic_kind: str, payload: bytes) -> None:
        self.sent.append((device_id, topic_kind, payload))

    def flush(self, timeout: float) -> int:
        return 0


def test_runner_sends_what_the_plan_says(fleet: list[DeviceRow]) -> None:
    fake = _FakeTime(START)
    core = FleetCore(fleet, 4, START, interval=5.0, bad_rate=0.02)
    publisher = _ListPublisher()
    stats = run_fleet(core, publisher, fake, duration=60.0, stats_every=0, clock=fake.clock)
    planned = plan(fleet, 4, START, START + 60, 5.0, [], 0.02)
    body = len(publisher.sent) - len(fleet)  # the offline statuses are sent at the real stop
    assert publisher.sent[:body] == [(d, t, p) for _, d, t, p in planned[:body]]
    assert sum(stats.by_kind.values()) == len(publisher.sent)
    assert stats.by_category["status"] == 2 * len(fleet)
