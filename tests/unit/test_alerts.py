"""Alerts from transitions: lifecycle, dedup under concurrency, and the work orders they drive."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import gateway.workorders.models  # noqa: F401  (registers the alert tables before make_engine)
from gateway.alerting.alerts import AlertError, AlertService, Transition
from gateway.alerting.models import Alert
from gateway.core.clock import ManualClock
from gateway.registry.models import Staff
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine
from gateway.workorders.lifecycle import WorkOrderError, WorkOrderService
from gateway.workorders.models import RuleInfo, WorkOrder, WorkOrderOccurrence
from gateway.workorders.routing import Router

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"
SMOKE = "smoke-B3-2-1001"  # B3-2 → B3 → C1 → G1 → SQ1 → ST1
BIN = "bin-C1-01"
RULES = {
    rule.rule_id: rule
    for rule in (
        RuleInfo("smoke.fire_alarm", "火警 / Fire alarm", "critical", "fire", 300, 3600),
        RuleInfo("bin.overflow", "垃圾满溢 / Bin overflow", "major", "sanitation", 1800, 14400),
        RuleInfo("bin.nearly_full", "垃圾将满 / Bin nearly full", "warning"),
        RuleInfo(
            "throw_camera.repeated_throws", "反复抛物", "critical", "public_safety", 600, 14400
        ),
    )
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo community loaded once; each test works on a copy."""
    db = tmp_path_factory.mktemp("template") / "community.db"
    engine = make_engine(f"sqlite:///{db}")
    Registry(engine).load_community(FIXTURE)
    engine.dispose()  # the last connection checkpoints the WAL into the main file
    return db


@pytest.fixture
def engine(template: Path, tmp_path: Path) -> Iterator[Engine]:
    db = tmp_path / "gateway.db"
    shutil.copy(template, db)
    engine = make_engine(f"sqlite:///{db}")
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()  # 2025-01-01 08:00 UTC


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return []  # what the notification sink received


@pytest.fixture
def alerts(engine: Engine, clock: ManualClock, events: list[dict[str, Any]]) -> AlertService:
    return AlertService(engine, clock, RULES, events.append)


def now_ns(clock: ManualClock) -> int:
    return int(clock.now().timestamp()) * 1_000_000_000


State = Literal["pending", "firing", "resolved"]


def smoke(state: State, ts_ns: int, *, repeat: bool = False, level: float = 0.3) -> Transition:
    values = {"state": "alarm" if state != "resolved" else "normal", "smoke": level}
    return Transition(
        "smoke.fire_alarm", SMOKE, "smoke", state, "critical", ts_ns, values,
        None, f"smoke {level}", repeat,
    )  # fmt: skip


def overflow(state: State, ts_ns: int, *, repeat: bool = False, fill: float = 97.0) -> Transition:
    return Transition(
        "bin.overflow", BIN, "bin", state, "major", ts_ns, {"fill": fill},
        None, f"fill {fill}%", repeat,
    )  # fmt: skip


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def count(engine: Engine, model: type[Any]) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def staff_id(engine: Engine, role: str) -> int:
    with Session(engine) as session:
        found = session.scalar(select(Staff.id).where(Staff.role == role).order_by(Staff.id))
    assert found is not None
    return found


# -- the ThingsBoard race ----------------------------------------------------------------
class RacingRouter(Router):
    """Holds every writer until all have looked for the alert and found none."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties)

    def device_node(self, session: Session, device_id: str) -> int | None:
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(timeout=5)
        return super().device_node(session, device_id)


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_identical_firing_makes_one_alert_and_one_order(
    engine: Engine, clock: ManualClock, caplog: pytest.LogCaptureFixture, writers: int
) -> None:
    router = RacingRouter(writers)
    services = [
        AlertService(engine, clock, RULES, orders=WorkOrderService(engine, clock, router))
        for _ in range(writers)
    ]
    start = threading.Barrier(writers)
    transition = smoke("firing", now_ns(clock))
    results: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []

    def run(service: AlertService) -> None:
        start.wait(timeout=5)
        try:
            results.append(service.apply([transition]))
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    caplog.set_level(logging.DEBUG, logger="gateway.alerting.alerts")
    threads = [threading.Thread(target=run, args=(service,)) for service in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert count(engine, Alert) == 1
    assert count(engine, WorkOrder) == 1
    assert count(engine, WorkOrderOccurrence) == 1
    assert sorted(len(r) for r in results) == [0] * (writers - 1) + [2]  # one winner reports
    assert "by a concurrent writer" in caplog.text  # the losers really collided


# -- the whole chain -----------------------------------------------------------------------
def fire_opens_an_order_for_the_grid(alerts: AlertService, clock: ManualClock) -> int:
    opened = alerts.apply([smoke("firing", now_ns(clock))])
    assert types(opened) == ["alert.firing", "workorder.opened"]
    order = opened[1]["order"]
    assert (order["node"], order["node_level"]) == ("G1", "grid")
    assert {r["role"] for r in opened[1]["recipients"] if not r["cc"]} == {
        "grid_head",
        "grid_member",
    }
    assert order["ack_due"] == "2025-01-01T08:05:00+00:00"
    return int(order["id"])


def nobody_acks_so_it_escalates_to_the_community(
    orders: WorkOrderService, clock: ManualClock, order_id: int
) -> None:
    clock.advance(301)  # nobody acknowledged within 5 minutes
    [escalated] = orders.check_sla()
    assert escalated["type"] == "workorder.escalated" and escalated["breach"] == "ack"
    assert (escalated["from_node"], escalated["to_node"]) == ("G1", "SQ1")
    assert [r["name"] for r in escalated["recipients"] if not r["cc"]] == ["刘娜"]
    assert orders.check_sla() == []  # once per breach
    assert orders.get(order_id).escalation_level == 1


def resolve_is_refused_while_smoke_persists_unless_overridden(
    orders: WorkOrderService, order_id: int, member: int, events: list[dict[str, Any]]
) -> None:
    orders.transition(order_id, "dispatch", actor="刘娜", assignee=member, note="go")
    orders.transition(order_id, "start", actor="郭超艳", note="on site")
    with pytest.raises(WorkOrderError, match="still reports the fault") as refused:
        orders.transition(order_id, "resolve", actor="郭超艳", note="all fine")
    assert "'smoke': 0.3" in str(refused.value)
    assert orders.get(order_id).state == "in_progress"
    reason = "detector fouled by cooking steam"
    orders.transition(order_id, "resolve", actor="郭超艳", override_reason=reason)
    assert events[-1]["override_reason"] == reason
    audit = orders.history(order_id)[-1]
    assert (audit.action, audit.override_reason) == ("resolve", reason)


def smoke_returns_then_clears(
    alerts: AlertService, clock: ManualClock, order_id: int, member: int
) -> None:
    orders = alerts.orders
    clock.advance(60)  # the smoke is back: the order reopens itself
    again = alerts.apply([smoke("firing", now_ns(clock), repeat=True, level=0.4)])
    assert types(again) == ["alert.repeat", "workorder.reopened", "workorder.occurrence"]
    assert orders.get(order_id).state == "open"
    orders.transition(order_id, "dispatch", actor="刘娜", assignee=member)
    orders.transition(order_id, "start", actor="郭超艳", photo_url="https://img.example/1.jpg")
    clock.advance(120)
    cleared = alerts.apply([smoke("resolved", now_ns(clock), level=0.01)])
    assert types(cleared) == ["alert.resolved", "workorder.sensor_ok"]
    order = orders.get(order_id)
    assert (order.sensor_state, order.sensor_normal_since) == ("ok", clock.now())
    assert order.state == "in_progress"  # a clear does not close anything by itself


def test_fire_to_rating(
    engine: Engine, clock: ManualClock, alerts: AlertService, events: list[dict[str, Any]]
) -> None:
    orders = alerts.orders
    order_id = fire_opens_an_order_for_the_grid(alerts, clock)
    nobody_acks_so_it_escalates_to_the_community(orders, clock, order_id)
    member = staff_id(engine, "grid_member")
    resolve_is_refused_while_smoke_persists_unless_overridden(orders, order_id, member, events)
    smoke_returns_then_clears(alerts, clock, order_id, member)
    orders.transition(order_id, "resolve", actor="郭超艳", note="cleaned the detector")
    orders.transition(order_id, "close", actor="刘娜", note="回访: resident confirms")
    rated = orders.rate(order_id, 5, "fast and polite", actor="resident 1001")
    assert (rated.state, rated.rating, rated.rating_comment) == ("closed", 5, "fast and polite")
    assert [e.action for e in orders.history(order_id)] == [
        "open", "escalate", "dispatch", "start", "resolve", "reopen", "dispatch", "start",
        "sensor_ok", "resolve", "close", "rate",
    ]  # fmt: skip
    assert len(orders.occurrences(order_id)) == 2
    assert count(engine, WorkOrder) == 1


# -- repeats -----------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["repeats", "fire_and_clear"])
def test_bin_overflow_ten_times_is_one_order_with_ten_occurrences(
    engine: Engine, clock: ManualClock, alerts: AlertService, pattern: str
) -> None:
    for i in range(10):
        if pattern == "fire_and_clear" and i:
            alerts.apply([overflow("resolved", now_ns(clock), fill=10.0)])
            clock.advance(60)
        alerts.apply([overflow("firing", now_ns(clock), repeat=pattern == "repeats" and i > 0)])
        clock.advance(600)
    [order] = alerts.orders.search()
    assert order.occurrence_count == 10
    assert len(alerts.orders.occurrences(order.id)) == 10
    assert order.node_path.endswith("/C1/") and order.category == "sanitation"
    assert order.sensor_state == "fault"
    alerts_stored = count(engine, Alert)
    assert alerts_stored == (1 if pattern == "repeats" else 10)
    if pattern == "repeats":
        [alert] = alerts.search()
        assert alert.occurrences == 10 and alert.state == "firing"


def test_redelivered_transition_changes_nothing(
    alerts: AlertService, clock: ManualClock, events: list[dict[str, Any]]
) -> None:
    first = smoke("firing", now_ns(clock))
    assert len(alerts.apply([first])) == 2
    assert alerts.apply([first]) == []
    assert alerts.apply([smoke("firing", now_ns(clock), repeat=True)]) == []
    [alert] = alerts.search()
    assert alert.occurrences == 1


# -- lifecycle -----------------------------------------------------------------------------
def test_pending_firing_resolved(alerts: AlertService, clock: ManualClock) -> None:
    t0 = clock.now()
    assert types(alerts.apply([smoke("pending", now_ns(clock))])) == ["alert.pending"]
    assert alerts.orders.search() == []  # no work order before the alert fires
    clock.advance(30)
    alerts.apply([smoke("pending", now_ns(clock), repeat=True)])
    clock.advance(30)
    assert types(alerts.apply([smoke("firing", now_ns(clock))])) == [
        "alert.firing",
        "workorder.opened",
    ]
    clock.advance(60)
    alerts.apply([smoke("resolved", now_ns(clock))])
    [alert] = alerts.search()
    assert (alert.state, alert.occurrences, alert.first_at) == ("resolved", 2, t0)
    assert alert.fired_at == alert.first_at.replace(minute=1)
    assert alert.resolved_at == clock.now()
    assert alert.node_path == "/ST1/SQ1/G1/C1/B3/B3-2/"


def test_pending_that_clears_opens_nothing(alerts: AlertService, clock: ManualClock) -> None:
    alerts.apply([smoke("pending", now_ns(clock))])
    clock.advance(5)
    assert types(alerts.apply([smoke("resolved", now_ns(clock))])) == ["alert.resolved"]
    assert alerts.orders.search() == []


def test_resolved_without_alert_and_rule_without_order(
    alerts: AlertService, clock: ManualClock
) -> None:
    assert alerts.apply([smoke("resolved", now_ns(clock))]) == []
    nearly = Transition("bin.nearly_full", BIN, "bin", "firing", "warning", now_ns(clock), {})
    assert types(alerts.apply([nearly])) == ["alert.firing"]
    unknown = Transition("x.unknown", BIN, "bin", "firing", "info", now_ns(clock), {})
    assert types(alerts.apply([unknown])) == ["alert.firing"]
    assert alerts.orders.search() == []
    assert {a.title for a in alerts.search()} == {"垃圾将满 / Bin nearly full", "x.unknown"}


def test_a_new_fault_after_closing_opens_a_new_order(
    engine: Engine, alerts: AlertService, clock: ManualClock
) -> None:
    orders = alerts.orders
    alerts.apply([smoke("firing", now_ns(clock))])
    [order] = orders.search()
    orders.transition(order.id, "dispatch", actor="a", assignee=staff_id(engine, "grid_head"))
    orders.transition(order.id, "start", actor="a")
    orders.transition(order.id, "resolve", actor="a", override_reason="replaced detector")
    orders.transition(order.id, "close", actor="a")
    clock.advance(60)
    alerts.apply([smoke("firing", now_ns(clock), repeat=True)])  # still firing in the engine
    assert [o.state for o in orders.search()] == ["open", "closed"]


def test_count_rules_have_one_alert_per_group_whichever_camera_reports(
    alerts: AlertService, clock: ManualClock
) -> None:
    for camera, group in (("cam-1", "B3/east"), ("cam-2", "B3/west"), ("cam-3", "B3/east")):
        t = Transition(
            "throw_camera.repeated_throws", camera, "throw_camera", "firing", "critical",
            now_ns(clock), {"event": "throw"}, group, "3 throws", repeat=camera == "cam-3",
        )  # fmt: skip
        alerts.apply([t])
        clock.advance(1)
    assert sorted((a.group_key, a.device_id, a.occurrences) for a in alerts.search()) == [
        ("B3/east", "cam-1", 2),
        ("B3/west", "cam-2", 1),
    ]
    [east, west] = sorted(alerts.orders.search(), key=lambda o: o.group_key or "")
    assert (east.occurrence_count, west.occurrence_count) == (2, 1)
    assert east.node_id is None  # cameras not in the registry: stored, left unowned, no crash
    resolved = Transition(
        "throw_camera.repeated_throws", "cam-3", "throw_camera", "resolved", "critical",
        now_ns(clock), {}, "B3/east", "below threshold",
    )  # fmt: skip
    assert types(alerts.apply([resolved])) == ["alert.resolved", "workorder.sensor_ok"]


# -- acknowledge, search, robustness ------------------------------------------------------
def test_acknowledge_meets_the_ack_sla(
    alerts: AlertService, clock: ManualClock, events: list[dict[str, Any]]
) -> None:
    alerts.apply([smoke("firing", now_ns(clock))])
    [alert] = alerts.search()
    clock.advance(60)
    acked = alerts.acknowledge(alert.id, "徐丽")
    assert (acked.acked_by, acked.acked_at) == ("徐丽", clock.now())
    assert types(events)[-2:] == ["alert.acknowledged", "workorder.acknowledged"]
    assert alerts.acknowledge(alert.id, "someone else").acked_by == "徐丽"
    clock.advance(600)  # past the ack deadline, well before the resolve deadline
    assert alerts.orders.check_sla() == []
    with pytest.raises(AlertError, match="alert 999 not found"):
        alerts.acknowledge(999, "x")
    with pytest.raises(AlertError):
        alerts.get(999)


def test_search_filters(alerts: AlertService, clock: ManualClock) -> None:
    alerts.apply([smoke("firing", now_ns(clock)), overflow("firing", now_ns(clock))])
    smoke_2 = Transition(
        "smoke.fire_alarm", "smoke-B11-1-101", "smoke", "firing", "critical", now_ns(clock), {}
    )
    alerts.apply([smoke_2])
    by_node = {n: sorted(a.device_id for a in alerts.search(node=n)) for n in ("C1", "G2", "B3")}
    assert by_node == {"C1": [BIN, SMOKE], "G2": ["smoke-B11-1-101"], "B3": [SMOKE]}
    assert len(alerts.search(node="SQ1")) == 3
    assert [a.device_id for a in alerts.search(kind="bin")] == [BIN]
    assert len(alerts.search(severity="critical")) == 2
    assert len(alerts.search(state="firing", device_id=SMOKE)) == 1
    assert alerts.search(node="B3%") == []  # LIKE wildcards are escaped
    assert len(alerts.search(limit=1)) == 1


def test_a_failing_event_sink_does_not_undo_the_alert(engine: Engine, clock: ManualClock) -> None:
    def broken(_event: dict[str, Any]) -> None:
        raise RuntimeError("webhook down")

    service = AlertService(engine, clock, RULES, broken)
    assert len(service.apply([smoke("firing", now_ns(clock))])) == 2
    assert count(engine, Alert) == 1 and count(engine, WorkOrder) == 1


def test_repeats_without_a_work_order_fold_into_one_update(
    alerts: AlertService, clock: ManualClock
) -> None:
    def nearly_full(state: State, ts_ns: int, repeat: bool = False) -> Transition:
        return Transition("bin.nearly_full", BIN, "bin", state, "warning", ts_ns, {"fill": 85.0},
                          None, "fill 85", repeat)  # fmt: skip

    start = now_ns(clock)
    batch = [nearly_full("firing", start)] + [
        nearly_full("firing", start + i, repeat=True) for i in range(1, 6)
    ]
    events = alerts.apply(batch)
    assert types(events) == ["alert.firing", "alert.repeat"]  # five repeats, one update
    (alert,) = alerts.search(rule_id="bin.nearly_full")
    assert alert.occurrences == 6 and alert.last_ts_ns == start + 5
    # repeats of an alert with a work order are kept: each is an occurrence of the order
    fire = [smoke("firing", start)] + [smoke("firing", start + i, repeat=True) for i in (1, 2)]
    assert types(alerts.apply(fire)).count("workorder.occurrence") == 2
