"""Work orders: the state table, manual reports, reopening, rating, SLA escalation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import gateway.workorders.models  # noqa: F401  (registers the alert tables before make_engine)
from gateway.alerting.alerts import AlertService, Transition
from gateway.core.clock import ManualClock
from gateway.registry.models import Staff
from gateway.registry.store import Registry
from gateway.runtime.schema import make_engine
from gateway.workorders.lifecycle import Action, WorkOrderError, WorkOrderService
from gateway.workorders.models import STEPS, RuleInfo, WorkOrder, WorkOrderEvent
from gateway.workorders.routing import Router

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"
HOUR = 3600.0
DAY = 86400.0
# how to bring a fresh order into each state
PATHS: dict[str, list[Action]] = {
    "open": [],
    "dispatched": ["dispatch"],
    "in_progress": ["dispatch", "start"],
    "resolved": ["dispatch", "start", "resolve"],
    "closed": ["dispatch", "start", "resolve", "close"],
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo community loaded once; each test works on a copy."""
    db = tmp_path_factory.mktemp("template") / "community.db"
    engine = make_engine(f"sqlite:///{db}")
    Registry(engine).load_community(FIXTURE)
    engine.dispose()
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
    return ManualClock()


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def orders(engine: Engine, clock: ManualClock, events: list[dict[str, Any]]) -> WorkOrderService:
    return WorkOrderService(engine, clock, Router(), events.append)


@pytest.fixture
def handler(engine: Engine) -> int:
    with Session(engine) as session:
        found = session.scalar(select(Staff.id).where(Staff.role == "property_manager"))
    assert found is not None
    return found


def report(orders: WorkOrderService, node: str = "B1-1", **kw: Any) -> WorkOrder:
    return orders.create_manual(
        title=kw.pop("title", "楼道灯不亮 / stairway light out"),
        description=kw.pop("description", "3rd floor, since yesterday"),
        node_code=node,
        reporter=kw.pop("reporter", "resident B1-1-301"),
        **kw,
    )


def drive(orders: WorkOrderService, order_id: int, steps: list[Action], handler: int) -> None:
    for action in steps:
        orders.transition(order_id, action, actor="pm", assignee=handler)


def audit_count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(WorkOrderEvent)) or 0)


# -- manual reports -------------------------------------------------------------------------
def test_manual_report_lifecycle(
    orders: WorkOrderService, handler: int, clock: ManualClock, events: list[dict[str, Any]]
) -> None:
    order = report(orders, photo_url="https://img.example/report.jpg")
    assert (order.source, order.state, order.sensor_state) == ("manual", "open", None)
    opened = events[-1]
    assert opened["type"] == "workorder.opened" and opened["order"]["node"] == "C1"
    assert {(r["role"], r["cc"]) for r in opened["recipients"]} == {
        ("property_manager", False),
        ("building_head", True),
    }
    assert order.ack_due == clock.now().replace(hour=12)  # 4 h default for manual reports
    orders.transition(order.id, "dispatch", actor="朱刚", assignee=handler, note="please check")
    orders.transition(order.id, "start", actor="朱杰")
    orders.comment(order.id, actor="朱杰", note="bulb ordered")
    photo = "https://img.example/fixed.jpg"
    orders.transition(order.id, "resolve", actor="朱杰", note="bulb replaced", photo_url=photo)
    orders.transition(order.id, "close", actor="朱刚", note="回访 ok")
    rated = orders.rate(order.id, 4, "ok but slow", actor="resident B1-1-301")
    assert (rated.rating, rated.rated_by) == (4, "resident B1-1-301")
    trail = orders.history(order.id)
    assert [(e.action, e.from_state, e.to_state) for e in trail] == [
        ("open", None, "open"),
        ("dispatch", "open", "dispatched"),
        ("start", "dispatched", "in_progress"),
        ("comment", "in_progress", "in_progress"),
        ("resolve", "in_progress", "resolved"),
        ("close", "resolved", "closed"),
        ("rate", "closed", "closed"),
    ]
    assert trail[0].photo_url == "https://img.example/report.jpg"
    assert trail[4].photo_url == photo and trail[4].actor == "朱杰"
    assert all(e.at.tzinfo is not None for e in trail)
    assert [e["type"] for e in events] == [
        "workorder.opened", "workorder.dispatched", "workorder.started", "workorder.commented",
        "workorder.resolved", "workorder.closed", "workorder.rated",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node": "NOPE"}, "node 'NOPE' is not in the hierarchy"),
        ({"title": "  "}, "needs a title"),
    ],
)
def test_manual_report_refusals(
    orders: WorkOrderService, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(WorkOrderError, match=message):
        report(orders, **kwargs)


# -- the state table ------------------------------------------------------------------------
INVALID = [(state, action) for state in PATHS for action in STEPS if state not in STEPS[action][0]]


@pytest.mark.parametrize(("state", "action"), INVALID)
def test_invalid_transitions_are_refused_and_change_nothing(
    engine: Engine, orders: WorkOrderService, handler: int, state: str, action: Action
) -> None:
    order = report(orders)
    drive(orders, order.id, PATHS[state], handler)
    before = audit_count(engine)
    with pytest.raises(WorkOrderError, match=f"cannot {action} order {order.id}: it is "):
        orders.transition(order.id, action, actor="x", assignee=handler)
    assert orders.get(order.id).state == state
    assert audit_count(engine) == before


@pytest.mark.parametrize(
    ("state", "action", "message"),
    [
        ("in_progress", "close", "it is in_progress; resolve it first"),
        ("open", "start", "it is open; dispatch it first"),
        ("open", "close", "it is open; dispatch it first"),
        ("dispatched", "resolve", "it is dispatched; start it first"),
        ("resolved", "start", "it is resolved; reopen it first"),
        ("closed", "resolve", "it is closed; reopen it first"),
        ("open", "reopen", "it is already open"),
    ],
)
def test_refusals_say_what_to_do(
    orders: WorkOrderService, handler: int, state: str, action: Action, message: str
) -> None:
    order = report(orders)
    drive(orders, order.id, PATHS[state], handler)
    with pytest.raises(WorkOrderError) as refused:
        orders.transition(order.id, action, actor="x", assignee=handler)
    assert str(refused.value) == f"cannot {action} order {order.id}: {message}"


def test_dispatch_needs_a_known_assignee(orders: WorkOrderService) -> None:
    order = report(orders)
    for assignee in (None, 99_999):
        with pytest.raises(WorkOrderError, match=f"staff {assignee} unknown"):
            orders.transition(order.id, "dispatch", actor="pm", assignee=assignee)


@pytest.mark.parametrize("state", ["dispatched", "in_progress", "resolved", "closed"])
def test_reopen_goes_back_to_open_with_fresh_deadlines(
    orders: WorkOrderService, handler: int, clock: ManualClock, state: str
) -> None:
    order = report(orders)
    drive(orders, order.id, PATHS[state], handler)
    clock.advance(DAY)
    reopened = orders.transition(order.id, "reopen", actor="resident", note="still dark")
    assert (reopened.state, reopened.acked_at, reopened.closed_at) == ("open", None, None)
    assert reopened.ack_due == clock.now().replace(hour=12)
    assert orders.history(order.id)[-1].note == "still dark"


def test_reopening_a_closed_order_only_within_the_window(
    orders: WorkOrderService, handler: int, clock: ManualClock
) -> None:
    order = report(orders)
    drive(orders, order.id, PATHS["closed"], handler)
    clock.advance(8 * DAY)
    with pytest.raises(WorkOrderError, match="more than 7 days ago; open a new order"):
        orders.transition(order.id, "reopen", actor="resident")


@pytest.mark.parametrize(("state", "score"), [("resolved", 5), ("closed", 0), ("closed", 6)])
def test_rating_needs_a_closed_order_and_a_score_of_1_to_5(
    orders: WorkOrderService, handler: int, state: str, score: int
) -> None:
    order = report(orders)
    drive(orders, order.id, PATHS[state], handler)
    with pytest.raises(WorkOrderError, match=f"cannot rate order {order.id}"):
        orders.rate(order.id, score, "", actor="resident")


def test_concurrent_changes_to_one_order_are_not_lost(
    orders: WorkOrderService, handler: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = report(orders)
    real_step = orders.step

    def racing_step(*args: Any, **kwargs: Any) -> dict[str, Any]:
        monkeypatch.setattr(orders, "step", real_step)
        orders.transition(order.id, "dispatch", actor="other", assignee=handler)  # wins
        return real_step(*args, **kwargs)

    monkeypatch.setattr(orders, "step", racing_step)
    with pytest.raises(WorkOrderError, match=f"work order {order.id} changed meanwhile"):
        orders.transition(order.id, "dispatch", actor="me", assignee=handler)
    assert [e.actor for e in orders.history(order.id)] == ["resident B1-1-301", "other"]


def test_unknown_order(orders: WorkOrderService) -> None:
    with pytest.raises(WorkOrderError, match="work order 404 not found"):
        orders.transition(404, "start", actor="x")
    with pytest.raises(WorkOrderError, match="work order 404 not found"):
        orders.get(404)


# -- SLA -------------------------------------------------------------------------------------
def test_escalation_climbs_one_level_per_breach_and_stops_at_the_street(
    orders: WorkOrderService, clock: ManualClock
) -> None:
    order = report(orders)  # owned by the compound C1; ack within 4 h
    seen = []
    for _ in range(5):
        clock.advance(4 * HOUR + 1)
        seen += [(e["type"], e["order"]["node"]) for e in orders.check_sla()]
        assert orders.check_sla() == []  # at most once per breach
    assert seen == [
        ("workorder.escalated", "G1"),
        ("workorder.escalated", "SQ1"),
        ("workorder.escalated", "ST1"),
        ("workorder.overdue", "ST1"),
    ]
    stored = orders.get(order.id)
    assert (stored.escalation_level, stored.overdue_breach) == (3, "ack")
    assert [o.id for o in orders.overdue("street")] == [order.id]
    assert orders.overdue("compound") == []


def test_resolve_deadline_escalates_a_dispatched_order(
    orders: WorkOrderService, handler: int, clock: ManualClock
) -> None:
    order = report(orders)
    orders.transition(order.id, "dispatch", actor="pm", assignee=handler)
    clock.advance(2 * DAY)
    assert orders.check_sla() == [] and orders.overdue() == []  # acknowledged, not yet late
    clock.advance(DAY + 1)
    assert [o.id for o in orders.overdue("compound")] == [order.id]
    [escalated] = orders.check_sla()
    assert (escalated["breach"], escalated["to_node"]) == ("resolve", "G1")
    assert orders.get(order.id).resolve_due == clock.now() + timedelta(days=3)
    assert orders.overdue() == []  # fresh deadline for the grid


def test_resolved_and_closed_orders_do_not_escalate(
    orders: WorkOrderService, handler: int, clock: ManualClock
) -> None:
    for state in ("resolved", "closed"):
        drive(orders, report(orders).id, PATHS[state], handler)
    clock.advance(30 * DAY)
    assert orders.check_sla() == []


def test_search_by_node_state_and_category(orders: WorkOrderService, handler: int) -> None:
    a = report(orders, "B1-1")
    b = report(orders, "B11-1", category="facility")
    drive(orders, b.id, ["dispatch"], handler)
    assert [o.id for o in orders.search(node="C1")] == [a.id]
    assert [o.id for o in orders.search(node="SQ1")] == [b.id, a.id]
    assert [o.id for o in orders.search(state="dispatched")] == [b.id]
    assert [o.id for o in orders.search(category="facility")] == [b.id]


def test_sensor_order_reopened_while_a_newer_one_is_open_is_refused(
    engine: Engine, clock: ManualClock
) -> None:
    rule = RuleInfo("bin.overflow", "Bin overflow", "major", "sanitation", 1800.0, 14400.0)
    alerts = AlertService(engine, clock, {rule.rule_id: rule})
    orders = alerts.orders

    def fire(repeat: bool) -> None:
        ts = int(clock.now().timestamp()) * 1_000_000_000
        t = Transition("bin.overflow", "bin-C1-01", "bin", "firing", "major", ts, {"fill": 99})
        alerts.apply([replace(t, repeat=repeat)])

    fire(False)
    [first] = orders.search()
    with Session(engine) as session:
        handler = session.scalar(select(Staff.id).where(Staff.role == "property_manager"))
    assert handler is not None
    orders.transition(first.id, "dispatch", actor="pm", assignee=handler)
    orders.transition(first.id, "start", actor="pm")
    orders.transition(first.id, "resolve", actor="pm", override_reason="emptied, sensor lags")
    orders.transition(first.id, "close", actor="pm")
    clock.advance(60)
    fire(True)
    [second, _] = orders.search()
    with pytest.raises(WorkOrderError, match=f"order {second.id} is already open"):
        orders.transition(first.id, "reopen", actor="resident")
