"""Worker mode: settings, command line and the acknowledgement condition of a batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.__main__ import _settings, build_parser
from gateway.config import Settings
from gateway.workers import all_of


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
