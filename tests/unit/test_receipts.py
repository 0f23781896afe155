"""Receive times kept for redeliveries (gateway.sources.mqtt.receipts): in memory, on disk,
bounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.sources.mqtt.receipts import Receipts

STEP = 1000
T0 = 1_764_000_000_000_000_000


def _batch(n: int, first_mid: int, tag: str = "") -> tuple[list[int], list[bytes], list[bytes]]:
    mids = [(first_mid + i - 1) % 65535 + 1 for i in range(n)]
    topics = [f"scc/v1/smoke-{i % 7}/telemetry".encode() for i in range(n)]
    payloads = [f'{{"state":"normal","n":{i}{tag}}}'.encode() for i in range(n)]
    return mids, topics, payloads


def test_a_noted_message_gets_its_receive_time_back_before_and_after_flush(tmp_path: Path) -> None:
    receipts = Receipts(tmp_path / "r", STEP)
    mids, topics, payloads = _batch(10, 100)
    receipts.note(T0, mids, topics, payloads, {3: T0 - 5})
    assert receipts.receive_time(104, topics[4], payloads[4]) == T0 + 4 * STEP  # pending
    assert receipts.receive_time(103, topics[3], payloads[3]) == T0 - 5  # kept from before
    receipts.flush()
    assert receipts.receive_time(104, topics[4], payloads[4]) == T0 + 4 * STEP  # flushed
    reloaded = Receipts(tmp_path / "r", STEP)  # after a crash
    assert reloaded.receive_time(104, topics[4], payloads[4]) == T0 + 4 * STEP
    assert reloaded.receive_time(103, topics[3], payloads[3]) == T0 - 5


@pytest.mark.parametrize("flushed", [False, True])
def test_another_message_under_the_same_packet_id_gets_nothing(
    tmp_path: Path, flushed: bool
) -> None:
    receipts = Receipts(tmp_path / "r", STEP)
    mids, topics, payloads = _batch(5, 1)
    receipts.note(T0, mids, topics, payloads, {})
    if flushed:
        receipts.flush()
    assert receipts.receive_time(2, topics[1], b'{"state":"alarm"}') is None  # other payload
    assert receipts.receive_time(2, b"scc/v1/other/telemetry", payloads[1]) is None  # topic
    assert receipts.receive_time(9, topics[1], payloads[1]) is None  # id never noted
    assert receipts.hits == 0


def test_the_latest_use_of_a_packet_id_wins(tmp_path: Path) -> None:
    receipts = Receipts(tmp_path / "r", STEP)
    topic, payload = b"scc/v1/smoke-1/telemetry", b'{"state":"normal"}'
    receipts.note(T0, [7], [topic], [payload], {})
    receipts.flush()
    receipts.note(T0 + 10**9, [7], [topic], [payload], {})  # the same bytes, a later message
    assert receipts.receive_time(7, topic, payload) == T0 + 10**9
    receipts.flush()
    assert receipts.receive_time(7, topic, payload) == T0 + 10**9
    assert Receipts(tmp_path / "r", STEP).receive_time(7, topic, payload) == T0 + 10**9


def test_a_lost_session_forgets_everything(tmp_path: Path) -> None:
    receipts = Receipts(tmp_path / "r", STEP)
    mids, topics, payloads = _batch(5, 1)
    receipts.note(T0, mids, topics, payloads, {})
    receipts.flush()
    receipts.note(T0 + 1, mids, topics, payloads, {})
    receipts.session_lost()
    assert receipts.receive_time(1, topics[0], payloads[0]) is None  # before the flush
    receipts.flush()
    assert receipts.receive_time(1, topics[0], payloads[0]) is None
    assert Receipts(tmp_path / "r", STEP).receive_time(1, topics[0], payloads[0]) is None


def test_only_the_last_keep_messages_are_kept_and_the_file_stays_bounded(tmp_path: Path) -> None:
    receipts = Receipts(tmp_path / "r", STEP, keep=1000)
    for k in range(300):
        mids, topics, payloads = _batch(100, k * 100 + 1, tag=f",{k}")
        receipts.note(T0 + k * 10**6, mids, topics, payloads, {})
        receipts.flush()
    assert (tmp_path / "r").stat().st_size < 4 * 14 * 1000 + 65_536 + 100 * 6 + 64
    last_mids, last_topics, last_payloads = _batch(100, 299 * 100 + 1, tag=",299")
    old_mids, old_topics, old_payloads = _batch(100, 280 * 100 + 1, tag=",280")
    for receipts_now in (receipts, Receipts(tmp_path / "r", STEP, keep=1000)):
        assert receipts_now.receive_time(last_mids[5], last_topics[5], last_payloads[5]) == (
            T0 + 299 * 10**6 + 5 * STEP
        )
        assert receipts_now.receive_time(old_mids[5], old_topics[5], old_payloads[5]) is None


def test_a_torn_tail_is_cut_off_and_later_notes_still_count(tmp_path: Path) -> None:
    path = tmp_path / "r"
    receipts = Receipts(path, STEP)
    mids, topics, payloads = _batch(3, 1)
    receipts.note(T0, mids, topics, payloads, {})
    receipts.flush()
    good = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(b"\x40\x00\x00\x00garbage")  # a record cut short by a crash
    reloaded = Receipts(path, STEP)
    assert path.stat().st_size == good
    assert reloaded.receive_time(2, topics[1], payloads[1]) == T0 + STEP
    mids2, topics2, payloads2 = _batch(3, 10, tag="b")
    reloaded.note(T0 + 7, mids2, topics2, payloads2, {})
    reloaded.flush()
    assert Receipts(path, STEP).receive_time(11, topics2[1], payloads2[1]) == T0 + 7 + STEP


def test_a_failed_write_keeps_the_notes_pending_and_leaves_no_torn_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r"
    receipts = Receipts(path, STEP)
    mids, topics, payloads = _batch(3, 1)
    receipts.note(T0, mids, topics, payloads, {})
    receipts.flush()
    size = path.stat().st_size
    receipts.note(T0 + 1, *_batch(3, 4, tag="x"), {})
    real_write = os.write

    def short_then_fail(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:5]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(OSError, match="No space"):
        receipts.flush()
    monkeypatch.setattr(os, "write", real_write)
    assert path.stat().st_size == size  # the partial record was cut off again
    receipts.flush()  # the retry writes what failed
    _, topics_x, payloads_x = _batch(3, 4, tag="x")
    assert Receipts(path, STEP).receive_time(5, topics_x[1], payloads_x[1]) == T0 + 1 + STEP


def test_without_a_path_nothing_is_written(tmp_path: Path) -> None:
    receipts = Receipts(None, STEP)
    mids, topics, payloads = _batch(3, 1)
    receipts.note(T0, mids, topics, payloads, {})
    receipts.flush()
    assert receipts.receive_time(1, topics[0], payloads[0]) == T0
    assert list(tmp_path.iterdir()) == []
