"""The dead-letter store keeps within its bound: a flood evicts its own oldest letters."""

from __future__ import annotations

from pathlib import Path

from gateway.ingest.pipeline import Rejected
from gateway.runtime.schema import make_engine
from gateway.storage.deadletter import DeadLetterStore

MIB = 1 << 20


def _letters(reason: str, device: str, count: int, size: int, start: int = 0) -> list[Rejected]:
    return [
        Rejected(
            1_700_000_000_000_000_000 + i,
            f"scc/v1/{device}/telemetry",
            device,
            reason,
            f"{reason} #{i}",
            bytes([i % 251]) * size,
        )
        for i in range(start, start + count)
    ]


def test_a_flood_stays_within_the_bound_and_evicts_only_its_own_oldest(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    store = DeadLetterStore(engine, max_bytes=MIB)
    store.add_many(_letters("malformed_json", "smoke-1", 5, 2000))
    for round_ in range(40):  # 40 x 100 x 1 KB = ~4 MB of rate_limited letters
        store.add_many(_letters("rate_limited", "flood-1", 100, 1000, start=round_ * 100))
        assert store.held_bytes() <= MIB
    counts = store.counts_by_reason()
    assert counts["malformed_json"] == 5  # the other cause's letters are all kept
    assert 0 < counts["rate_limited"] < 4000
    assert store.pruned["rate_limited"] == 4000 - counts["rate_limited"]
    assert "malformed_json" not in store.pruned
    # the newest flood letters are the ones kept
    newest = store.list(reason="rate_limited", limit=1)[0]
    assert newest.detail == "rate_limited #3999"
    oldest_kept = store.list(reason="rate_limited", limit=counts["rate_limited"])[-1]
    assert oldest_kept.detail == f"rate_limited #{store.pruned['rate_limited']}"


def test_the_bound_holds_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    first = DeadLetterStore(make_engine(url), max_bytes=MIB)
    first.add_many(_letters("out_of_range", "bin-1", 900, 1000))
    held = first.held_bytes()
    assert 900_000 < held <= MIB and not first.pruned
    second = DeadLetterStore(make_engine(url), max_bytes=MIB)
    assert second.held_bytes() == held  # measured from the table, not started at zero
    second.add_many(_letters("out_of_range", "bin-1", 300, 1000, start=900))
    assert second.held_bytes() <= MIB
    assert sum(second.counts_by_reason().values()) == 1200 - second.pruned["out_of_range"]
    assert second.pruned["out_of_range"] > 0


def test_below_the_bound_nothing_is_removed(tmp_path: Path) -> None:
    store = DeadLetterStore(make_engine(f"sqlite:///{tmp_path / 'g.db'}"), max_bytes=4 * MIB)
    for reason in ("malformed_json", "wrong_type", "rate_limited"):
        store.add_many(_letters(reason, "smoke-1", 1000, 1000))
    assert store.counts_by_reason() == {
        "malformed_json": 1000,
        "wrong_type": 1000,
        "rate_limited": 1000,
    }
    assert not store.pruned
