"""Alert routes, and the operations environment the rule, work-order, event and scope tests
share: the demo community with the gateway's rule stage, alert and work-order services on a
manual clock, and an event hub, all injected into ``create_app``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.alerting.alerts import AlertService, Transition
from gateway.alerting.rulestage import RuleStage, rule_infos
from gateway.api.app import create_app
from gateway.core.clock import ManualClock
from gateway.core.config import Settings
from gateway.notify.live import EventHub
from gateway.registry.models import Node, Staff
from gateway.runtime.schema import make_engine
from gateway.workorders.lifecycle import WorkOrderService
from gateway.workorders.routing import Router
from tests.integration.test_api_common import ApiEnv, community_db, env

with warnings.catch_warnings():  # see test_api_common
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

__all__ = ["env"]

SMOKE_C1 = "smoke-B3-2-1001"  # B3-2 → B3 → C1 → G1 → SQ1 → ST1
SMOKE_C2 = "smoke-B6-1-102"  # B6-1 → B6 → C2 → G1
BIN_C1 = "bin-C1-01"
State = Literal["pending", "firing", "resolved"]


@dataclass
class OpsEnv:
    """An API with the operations side: services on a manual clock, hub, site rules."""

    api: ApiEnv
    clock: ManualClock
    stage: RuleStage
    alerts: AlertService
    orders: WorkOrderService
    hub: EventHub
    rules_dir: Path
    reloads: list[bool] = field(default_factory=list)

    def auth(self, role: str = "admin", node: str = "ST1") -> dict[str, str]:
        """``Authorization`` header of a token of ``role`` scoped at ``node``."""
        return self.api.auth(role, node)

    @property
    def client(self) -> TestClient:
        """The test client."""
        return self.api.client

    def now_ns(self) -> int:
        """The manual clock's time in epoch ns."""
        return int(self.clock.now().timestamp()) * 1_000_000_000

    def smoke(self, device: str, state: State = "firing", level: float = 0.3) -> None:
        """Apply a ``smoke.fire_alarm`` transition of ``device`` at the clock's time."""
        values = {"state": "alarm" if state != "resolved" else "normal", "smoke": level}
        transition = Transition(
            "smoke.fire_alarm", device, "smoke", state, "critical", self.now_ns(), values,
            None, f"smoke {level}",
        )  # fmt: skip
        self.alerts.apply([transition])

    def staff_id(self, node: str, role: str) -> int:
        """Id of the first staff entry of ``role`` at ``node``."""
        query = (
            select(Staff.id)
            .join(Node, Node.id == Staff.node_id)
            .where(Node.code == node, Staff.role == role)
            .order_by(Staff.id)
        )
        with Session(self.api.engine) as session:
            found = session.scalar(query)
        assert found is not None, (node, role)
        return found


def make_ops_env(
    tmp_path_factory: pytest.TempPathFactory,
    directory: Path,
    on_rules_changed: Callable[[OpsEnv], None] | None = None,
    **kwargs: Any,
) -> Iterator[OpsEnv]:
    """Yield an :class:`OpsEnv`; ``kwargs`` go to ``create_app``."""
    engine = make_engine(community_db(tmp_path_factory, directory / "gateway.db"))
    clock, hub = ManualClock(), EventHub(keepalive_s=0.2)
    rules_dir = directory / "site-rules"
    rules_dir.mkdir()

    def publish(event: dict[str, Any]) -> None:
        hub.publish(event)

    stage = RuleStage(engine, clock, rules_dir, {}, publish)
    orders = WorkOrderService(engine, clock, Router(), publish)
    alerts = AlertService(engine, clock, rule_infos(stage.ruleset), publish, orders=orders)
    holder: list[OpsEnv] = []

    def reload() -> None:
        ops = holder[0]
        ops.reloads.append(True)
        ops.stage.reload()
        ops.alerts.rules = rule_infos(ops.stage.ruleset)
        if on_rules_changed is not None:
            on_rules_changed(ops)

    services: dict[str, Any] = {"rules": stage, "alerts": alerts, "orders": orders, "hub": hub}
    app = create_app(
        Settings(state_dir=directory), engine, on_rules_changed=reload, **(services | kwargs)
    )
    with TestClient(app) as client:
        api = ApiEnv(engine, app, client)
        holder.append(OpsEnv(api, clock, stage, alerts, orders, hub, rules_dir))
        yield holder[0]
    engine.dispose()


@pytest.fixture
def ops(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[OpsEnv]:
    """The API with rules, alerts, work orders and live events."""
    yield from make_ops_env(tmp_path_factory, tmp_path)


def alert_ids(ops: OpsEnv, **query: str) -> list[int]:
    """Ids of the alerts a root admin lists with ``query``."""
    page = ops.client.get("/alerts", headers=ops.auth(), params=query).json()
    return [item["id"] for item in page["items"]]


# --- listing and reading -------------------------------------------------------------------


def test_alerts_are_listed_newest_first_within_the_scope(ops: OpsEnv) -> None:
    ops.smoke(SMOKE_C1)
    ops.clock.advance(10)
    ops.smoke(SMOKE_C2)
    root = ops.client.get("/alerts", headers=ops.auth("read_only")).json()
    assert [item["device_id"] for item in root["items"]] == [SMOKE_C2, SMOKE_C1]
    assert root["total"] == 2 and root["limit"] == 100 and root["offset"] == 0
    c1 = ops.client.get("/alerts", headers=ops.auth("manager", "C1")).json()
    assert [item["device_id"] for item in c1["items"]] == [SMOKE_C1]
    assert c1["total"] == 1
    first = c1["items"][0]
    assert first["path"] == ["ST1", "SQ1", "G1", "C1", "B3", "B3-2"] and first["node"] == "B3-2"
    assert (first["state"], first["severity"], first["kind"]) == ("firing", "critical", "smoke")
    assert first["values"] == {"state": "alarm", "smoke": 0.3}
    assert first["rule_id"] == "smoke.fire_alarm" and first["acked_by"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "firing"}, [SMOKE_C2]),
        ({"state": "resolved"}, [SMOKE_C1]),
        ({"severity": "critical"}, [SMOKE_C2, SMOKE_C1]),
        ({"severity": "info"}, []),
        ({"kind": "smoke"}, [SMOKE_C2, SMOKE_C1]),
        ({"kind": "bin"}, []),
        ({"device_id": SMOKE_C1}, [SMOKE_C1]),
        ({"node": "C2"}, [SMOKE_C2]),
        ({"node": "G1"}, [SMOKE_C2, SMOKE_C1]),
        ({"node": "B3-2"}, [SMOKE_C1]),
        ({"rule_id": "smoke.fire_alarm"}, [SMOKE_C2, SMOKE_C1]),
        ({"rule_id": "bin.overflow"}, []),
        ({"limit": "1"}, [SMOKE_C2]),
        ({"limit": "1", "offset": "1"}, [SMOKE_C1]),
    ],
)
def test_alert_filters(ops: OpsEnv, query: dict[str, str], expected: list[str]) -> None:
    ops.smoke(SMOKE_C1)
    ops.clock.advance(10)
    ops.smoke(SMOKE_C1, "resolved", level=0.01)
    ops.smoke(SMOKE_C2)
    page = ops.client.get("/alerts", headers=ops.auth(), params=query).json()
    assert [item["device_id"] for item in page["items"]] == expected
    assert page["total"] == (2 if "limit" in query else len(expected))


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ("kind=lamp", 422, "query.kind: unknown kind 'lamp'"),
        ("state=burning", 422, "query.state"),
        ("severity=huge", 422, "query.severity"),
        ("limit=0", 422, "query.limit"),
        ("offset=-1", 422, "query.offset"),
        ("node=NOPE", 404, "node 'NOPE' not found"),
    ],
)
def test_bad_alert_filters(ops: OpsEnv, query: str, status: int, fragment: str) -> None:
    response = ops.client.get(f"/alerts?{query}", headers=ops.auth())
    assert response.status_code == status
    assert fragment in response.json()["detail"]


def test_get_one_alert(ops: OpsEnv) -> None:
    ops.smoke(SMOKE_C1)
    [alert_id] = alert_ids(ops)
    body = ops.client.get(f"/alerts/{alert_id}", headers=ops.auth("grid_member", "G1")).json()
    assert body["id"] == alert_id and body["device_id"] == SMOKE_C1
    assert body["first_at"] == "2025-01-01T08:00:00Z" and body["occurrences"] == 1
    missing = ops.client.get("/alerts/987654", headers=ops.auth())
    assert missing.status_code == 404
    assert missing.json() == {"detail": "alert 987654 not found"}
    assert ops.client.get("/alerts/0", headers=ops.auth()).status_code == 422
    assert ops.client.get("/alerts/abc", headers=ops.auth()).status_code == 422


# --- acknowledging -------------------------------------------------------------------------------


def test_acknowledge_records_the_token_name_and_acknowledges_the_order(ops: OpsEnv) -> None:
    ops.smoke(SMOKE_C1)
    [alert_id] = alert_ids(ops)
    ops.clock.advance(60)
    response = ops.client.post(f"/alerts/{alert_id}/ack", headers=ops.auth("grid_member", "G1"))
    assert response.status_code == 200
    body = response.json()
    assert body["acked_by"] == "test grid_member"
    assert body["acked_at"] == "2025-01-01T08:01:00Z"
    [order] = ops.client.get("/work-orders", headers=ops.auth()).json()["items"]
    assert order["acked_at"] == "2025-01-01T08:01:00Z"
    ops.clock.advance(60)
    again = ops.client.post(f"/alerts/{alert_id}/ack", headers=ops.auth("manager", "C1"))
    assert again.json()["acked_by"] == "test grid_member"  # the first acknowledgement stays
    assert again.json()["acked_at"] == "2025-01-01T08:01:00Z"


@pytest.mark.parametrize("role", ["read_only", "integrator"])
def test_acknowledge_needs_the_permission(ops: OpsEnv, role: str) -> None:
    ops.smoke(SMOKE_C1)
    [alert_id] = alert_ids(ops)
    response = ops.client.post(f"/alerts/{alert_id}/ack", headers=ops.auth(role))
    assert response.status_code == 403
    assert response.json() == {"detail": f"role {role!r} may not write alerts"}


def test_acknowledge_unknown_alert_is_404(ops: OpsEnv) -> None:
    response = ops.client.post("/alerts/4242/ack", headers=ops.auth())
    assert response.status_code == 404
    assert response.json() == {"detail": "alert 4242 not found"}


def test_alert_routes_are_503_without_the_alert_service(env: ApiEnv) -> None:
    for method, path in (("get", "/alerts"), ("get", "/alerts/1"), ("post", "/alerts/1/ack")):
        response = env.client.request(method, path, headers=env.auth())
        assert response.status_code == 503
        assert response.json() == {"detail": "alerts are not available: this API runs without them"}
