"""Dead-letter store: every rejected message with its raw bytes, reason and detail."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.orm import Session

from gateway.db import DeadLetter
from gateway.pipeline import Rejected


class DeadLetterStore:
    """Writes rejections in one transaction per batch; lists, shows and marks replays."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
        with self.engine.begin() as conn:
            conn.execute(insert(DeadLetter), rows)

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
