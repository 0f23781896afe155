"""Dead-letter store: every rejected message with its raw bytes, reason and detail.

The store is bounded (``max_bytes``, the ``dead_letter_max_bytes`` setting): a device that
floods bad payloads must not fill the disk that also holds the spool. Below the bound
nothing is removed; above it the oldest letters of the reason holding the most bytes are
removed first (so a flood evicts its own letters, not the few letters of other causes),
down to 90 % of the bound. Every removed letter is counted by reason (``pruned``, exported as
``scc_dead_letters_pruned_total``) and each pruning is logged.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from gateway.core.db import Base
from gateway.ingest.pipeline import Rejected

log = logging.getLogger(__name__)


class DeadLetter(Base):
    """A rejected message with its raw bytes, kept for inspection and replay."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_reason_time", "reason", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    topic: Mapped[str] = mapped_column(String(512))
    device_id: Mapped[str | None] = mapped_column(String(128), index=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


#: What a row costs beyond its text and bytes (ids, times, index entries), roughly.
ROW_OVERHEAD = 96
_PRUNE_CHUNK = 1000
_SIZE = (
    func.length(DeadLetter.payload)
    + func.length(DeadLetter.detail)
    + func.length(DeadLetter.topic)
    + ROW_OVERHEAD
)


def _row_size(item: Rejected) -> int:
    """What a letter adds to the store, counted as ``_SIZE`` counts it."""
    return len(item.payload) + len(item.detail[:2000]) + len(item.topic[:512]) + ROW_OVERHEAD


class DeadLetterStore:
    """Writes rejections in one transaction per batch; lists, shows and marks replays."""

    def __init__(self, engine: Engine, max_bytes: int = 256 << 20) -> None:
        self.engine = engine
        self.max_bytes = max_bytes
        #: Letters removed to keep the bound, by reason (cumulative since start).
        self.pruned: Counter[str] = Counter()
        self._lock = threading.Lock()  # the persist and drainer threads both add
        self._bytes: int | None = None  # measured on first use

    def add_many(self, items: Sequence[Rejected]) -> None:
        """Store a batch of rejections (committed before the batch is acknowledged)."""
        if not items:
            return
        rows = [
            {
                "received_at": datetime.fromtimestamp(item.received_ns / 1e9, UTC),
                "topic": item.topic[:512],
                "device_id": None if item.device_id is None else item.device_id[:128],
                "reason": item.reason,
                "detail": item.detail[:2000],
                "payload": item.payload,
            }
            for item in items
        ]
        added = sum(_row_size(item) for item in items)
        with self._lock, self.engine.begin() as conn:
            held = self._measure(conn) if self._bytes is None else self._bytes
            conn.execute(insert(DeadLetter), rows)
            held += added
            pruned: Counter[str] = Counter()
            if held > self.max_bytes:
                held -= self._prune(conn, held - int(self.max_bytes * 0.9), pruned)
        # Only once the transaction is committed (a failed one is retried whole).
        self._bytes = held
        if pruned:
            self.pruned.update(pruned)
            log.warning(
                "dead letters over their bound (%d bytes): removed the oldest %s",
                self.max_bytes,
                ", ".join(f"{n} {reason}" for reason, n in pruned.most_common()),
            )

    def held_bytes(self) -> int:
        """Roughly how many bytes the stored letters take."""
        with self._lock:
            if self._bytes is None:
                with self.engine.connect() as conn:
                    self._bytes = self._measure(conn)
            return self._bytes

    @staticmethod
    def _measure(conn: Connection) -> int:
        return int(conn.execute(select(func.coalesce(func.sum(_SIZE), 0))).scalar_one())

    @staticmethod
    def _prune(conn: Connection, excess: int, pruned: Counter[str]) -> int:
        """Remove at least ``excess`` bytes, oldest first from the biggest reason."""
        by_reason = {
            reason: int(size)
            for reason, size in conn.execute(
                select(DeadLetter.reason, func.sum(_SIZE)).group_by(DeadLetter.reason)
            )
        }
        freed = 0
        for _ in range(1_000_000):  # bounded: every round removes at least one row
            if freed >= excess or not by_reason:
                break
            reason = max(by_reason, key=by_reason.__getitem__)
            rows = conn.execute(
                select(DeadLetter.id, _SIZE)
                .where(DeadLetter.reason == reason)
                .order_by(DeadLetter.id)
                .limit(_PRUNE_CHUNK)
            ).all()
            if not rows:
                del by_reason[reason]
                continue
            taken, last_id = 0, rows[0][0]
            for count, (row_id, size) in enumerate(rows, 1):
                taken, last_id = taken + int(size), row_id
                if freed + taken >= excess:
                    rows = rows[:count]
                    break
            conn.execute(
                delete(DeadLetter).where(DeadLetter.reason == reason, DeadLetter.id <= last_id)
            )
            pruned[reason] += len(rows)
            freed += taken
            by_reason[reason] -= taken
            if by_reason[reason] <= 0:
                del by_reason[reason]
        return freed

    def list(
        self,
        reason: str | None = None,
        device_id: str | None = None,
        limit: int = 50,
        include_replayed: bool = True,
    ) -> list[DeadLetter]:
        """Newest first, optionally filtered."""
        query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
        if reason:
            query = query.where(DeadLetter.reason == reason)
        if device_id:
            query = query.where(DeadLetter.device_id == device_id)
        if not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        with Session(self.engine) as session:
            return list(session.scalars(query))

    def get(self, letter_id: int) -> DeadLetter | None:
        """One dead letter by id."""
        with Session(self.engine) as session:
            return session.get(DeadLetter, letter_id)

    def counts_by_reason(self) -> dict[str, int]:
        """How many dead letters there are for each reason."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason)
            )
            return {reason: count for reason, count in rows}

    def replay(self, letters: Iterable[DeadLetter], publish: Callable[[str, bytes], None]) -> int:
        """Publish each letter's payload on its original topic again and mark it replayed."""
        done = []
        for letter in letters:
            publish(letter.topic, letter.payload)
            done.append(letter.id)
        if done:
            with self.engine.begin() as conn:
                conn.execute(
                    update(DeadLetter)
                    .where(DeadLetter.id.in_(done))
                    .values(replayed_at=datetime.now(UTC))
                )
        return len(done)
