"""Relational schema (SQLAlchemy 2): hierarchy, staff, devices, dead letters.

SQLite is the embedded default (WAL mode, so readers never block the ingest path);
PostgreSQL works through the same models for deployments with several gateways.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

LEVELS: tuple[str, ...] = ("street", "community", "grid", "compound", "building", "unit")


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the models use by default."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of all tables."""


class Node(Base):
    """One node of the six-level hierarchy (street → community → grid → compound → …)."""

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    level: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Staff(Base):
    """A person attached to a node with a role (grid member, property manager, …)."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(256))
    phone: Mapped[str | None] = mapped_column(String(32))


class Device(Base):
    """A registered sensor: kind, model, codec, where it hangs, install parameters."""

    __tablename__ = "devices"
    # fleet statistics group active devices by node and kind (1M devices: 1.3 s → 0.06 s)
    __table_args__ = (Index("ix_devices_status_node_kind", "status", "node_id", "kind"),)

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(64))
    codec: Mapped[str] = mapped_column(String(32), default="json")
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    location: Mapped[str] = mapped_column(String(128), default="")
    params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    installed_at: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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


def json_dumps(value: Any) -> str:
    """JSON columns' serializer: orjson (the rule states of every device a batch changed are
    written with that batch, ~5x faster than the standard library); values orjson refuses
    (non-string keys, integers past 64 bits) go through the standard library as before."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    """JSON columns' deserializer: orjson, or the standard library for what only it reads
    (``NaN`` written by earlier versions)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    engine = create_engine(url, json_serializer=json_dumps, json_deserializer=json_loads)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    import gateway.alert_models  # registers the alert and work-order tables
    import gateway.api_models  # noqa: F401 - registers the api_tokens table

    Base.metadata.create_all(engine)
    return engine
