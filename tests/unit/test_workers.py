"""Worker mode: settings, command line and the acknowledgement condition of a batch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.cli.main import _settings, build_parser
from gateway.core.clock import ManualClock
from gateway.core.config import Settings
from gateway.registry.store import DeviceInfo
from gateway.runtime.partition import Forwarded, owned_partitions, partition_of
from gateway.runtime.schema import make_engine
from gateway.runtime.workers import PartitionedRuleStage, all_of
from tests.unit.test_rulestage_restart import OFFLINE_FAST


def test_single_process_is_the_default() -> None:
    settings = Settings()
    assert (settings.workers, settings.worker_index, settings.worker_mode) == (1, 0, False)
    assert settings.spool_dir == Path("var/spool/gw1")


@pytest.mark.parametrize(
    ("fields", "spool"),
    [
        ({"workers": 2, "worker_index": 1}, "var/spool/gw1-1"),
        ({"partitioned": True}, "var/spool/gw1-0"),
        ({"workers": 16, "worker_index": 15}, "var/spool/gw1-15"),
    ],
)
def test_worker_mode_has_a_spool_per_process(fields: dict[str, object], spool: str) -> None:
    settings = Settings.model_validate(fields)
    assert settings.worker_mode
    assert settings.spool_dir == Path(spool)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"workers": 2, "worker_index": 2}, "worker_index"),
        ({"worker_index": 1}, "worker_index"),
        ({"workers": 4, "rule_partitions": 3}, "rule_partitions"),
        ({"share_group": "a/b"}, "share_group"),
        ({"workers": 0}, "workers"),
        ({"partitioned": True, "mqtt_qos": 0}, "mqtt_qos"),
    ],
)
def test_impossible_worker_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate(fields)


def test_command_line_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCC_RULE_PARTITIONS", "32")
    args = build_parser().parse_args(
        ["run", "--workers", "2", "--worker-index", "1", "--share-group", "g1"]
    )
    settings = _settings(args)
    assert (settings.workers, settings.worker_index, settings.share_group) == (2, 1, "g1")
    assert settings.rule_partitions == 32
    assert not _settings(build_parser().parse_args(["run"])).worker_mode
    assert _settings(build_parser().parse_args(["run", "--partitioned"])).worker_mode


def test_all_of_waits_for_every_future_and_reports_the_first_failure() -> None:
    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        combined = all_of(futures)
        futures[1].set_exception(ConnectionError("lost"))
        futures[0].set_result(None)
        await asyncio.sleep(0)
        early = combined.done()
        futures[2].set_exception(TimeoutError("late"))
        await asyncio.sleep(0)
        error = combined.exception()
        ok = all_of([loop.create_future() for _ in range(0)])
        fine = [loop.create_future(), loop.create_future()]
        both = all_of(fine)
        for future in fine:
            future.set_result(None)
        await both
        return [early, error, ok.done() and ok.result() is None, both.result()]

    early, error, empty_done, result = asyncio.run(scenario())
    assert early is False
    assert isinstance(error, ConnectionError)
    assert empty_done is True
    assert result is None


def test_a_worker_registers_restores_and_ticks_only_its_own_devices(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "offline.yaml").write_text(OFFLINE_FAST)
    devices = {f"smoke-{n}": DeviceInfo(f"smoke-{n}", "smoke", "M", "json", {}) for n in range(40)}
    stages = [
        PartitionedRuleStage(
            db, ManualClock(), rules_dir, devices, lambda e: None, partitions=8, owned=owned
        )
        for owned in (owned_partitions(8, 2, 0), owned_partitions(8, 2, 1))
    ]
    later = time.time_ns() + 10 * 1_000_000_000
    outcomes = [stage.tick(later) for stage in stages]
    offline = [{t.device_id for t in outcome.transitions} for outcome in outcomes]
    mine = [{d for d in devices if stage.owns(d)} for stage in stages]
    assert offline == mine
    assert mine[0] and mine[1] and not mine[0] & mine[1]
    assert mine[0] | mine[1] == set(devices)
    # Saved state comes back to its owner only (one table shared by every worker).
    for stage, outcome in zip(stages, outcomes, strict=True):
        stage.persist(outcome)
    restored = PartitionedRuleStage(
        db, ManualClock(), rules_dir, {}, lambda e: None, partitions=8, owned=(1, 3, 5, 7)
    )
    states = list(restored._saved_states())
    assert states and {key for _, key, _ in states} <= mine[1]


def test_forwarded_readings_drive_the_rules_like_local_ones(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    info = DeviceInfo("smoke-0", "smoke", "M", "json", {}, (("street", "ST1"),))
    owner = partition_of("smoke-0", 4)
    stage = PartitionedRuleStage(
        db, ManualClock(), None, {"smoke-0": info}, lambda e: None, partitions=4, owned=[owner]
    )
    now = time.time_ns()
    alarm = Forwarded("smoke-0", "telemetry", now, None, {"state": "alarm", "smoke": 0.5})
    outcome = stage.observe_forwarded([(info, alarm)], now)
    assert ("smoke.fire_alarm", "smoke-0", "firing") in {
        (t.rule_id, t.device_id, t.state) for t in outcome.transitions
    }
    again = stage.observe_forwarded([(info, alarm)], now)  # redelivered: no second edge
    assert not [t for t in again.transitions if not t.repeat]
    status = Forwarded("smoke-0", "status", now + 1, "online", None)
    assert not stage.observe_forwarded([(info, status)], now + 1).transitions
    stranger = DeviceInfo("smoke-x", "smoke", "M", "json", {})
    assert not stage.owns("smoke-x")  # partition 0 (pinned by crc32)
    stage.device_changed("smoke-x", stranger)  # another worker's device: ignored
    offline = {t.device_id for t in stage.tick(now + 10**15).transitions}  # ~12 days on
    assert offline == {"smoke-0"}
