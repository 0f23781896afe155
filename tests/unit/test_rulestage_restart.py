"""RuleStage start-up: saved state streamed back, devices decommissioned while it was down."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.alerting.rulestage import RuleStage
from gateway.core.clock import ManualClock
from gateway.ingest.pipeline import Accepted
from gateway.registry.store import DeviceInfo
from gateway.runtime.schema import make_engine

#: A smoke offline rule with a 2 s absence (shared with test_workers).
OFFLINE_FAST = """rules:
  - id: smoke.offline
    title: 设备离线 / Offline
    device_type: smoke
    severity: warning
    absent: 2s
"""
S = 1_000_000_000


def _info(device_id: str) -> DeviceInfo:
    return DeviceInfo(device_id, "smoke", "M", "json", {}, (("street", "ST1"), ("grid", "G1")))


def test_restart_restores_state_and_never_reports_retired_devices_offline(
    tmp_path: Path,
) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "offline.yaml").write_text(OFFLINE_FAST)
    devices = {d: _info(d) for d in ("smoke-a", "smoke-b", "smoke-gone")}
    first = RuleStage(db, ManualClock(), rules, devices, lambda e: None)
    # A message from each, two minutes on: their activity is saved (60 s resolution).
    now = time.time_ns() + 120 * S
    heard = [Accepted(info, "status", None, now, "online") for info in devices.values()]
    first.persist(first.observe(heard, now))
    went_offline = first.tick(now + 10 * S)
    assert {t.device_id for t in went_offline.transitions} == set(devices)
    first.persist(went_offline)
    saved = list(first._saved_states())
    assert {key for rule_id, key, _ in saved if rule_id == "smoke.offline"} == set(devices)
    assert {key for rule_id, key, _ in saved if rule_id == "@activity"} == set(devices)

    # Restart after smoke-gone was decommissioned: its alert is resolved, not kept firing,
    # and it is never reported offline again.
    del devices["smoke-gone"]
    second = RuleStage(db, ManualClock(), rules, devices, lambda e: None)
    assert second._retired == {"smoke-gone"}
    later = second.tick(now + 100 * S)
    assert all(t.device_id != "smoke-gone" or t.state == "resolved" for t in later.transitions)
    # the others' offline alerts came back from the saved state: no second "firing"
    assert not [t for t in later.transitions if t.state == "firing"]


def test_tags_are_shared_per_place_not_per_device(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    stage = RuleStage(db, ManualClock(), None, {}, lambda e: None)
    first, second = stage.place(_info("smoke-1")), stage.place(_info("smoke-2"))
    assert first is second
    assert dict(first) == {"model": "M", "street": "ST1", "grid": "G1"}
    assert stage.place(DeviceInfo("x", "smoke", "N", "json", {}, ())) == {"model": "N"}


def test_saved_states_are_upserted_with_a_utc_time_and_read_back_by_the_orm(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.orm import Session

    from gateway.alerting.models import RuleStateRow

    db = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    stage = RuleStage(db, ManualClock(), None, {}, lambda e: None)
    stage._save_states({("r.one", "dev-1"): {"window": [[1, 2.5]]}, ("r.one", "dev-2"): {"a": 1}})
    stage._save_states({("r.one", "dev-1"): {"window": [[1, 2.5], [2, 3.0]]}})
    stage._save_states({("r.one", "dev-2"): None})
    with Session(db) as session:
        rows = session.query(RuleStateRow).all()
    assert [(r.rule_id, r.key, r.state) for r in rows] == [
        ("r.one", "dev-1", {"window": [[1, 2.5], [2, 3.0]]})
    ]
    assert rows[0].updated_at.tzinfo is not None
    assert abs(rows[0].updated_at - datetime.now(UTC)) < timedelta(minutes=1)
