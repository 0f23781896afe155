"""The relational database's base (SQLAlchemy 2): declarative base, JSON columns, engines.

The tables live with their stages (``registry.models``, ``storage.deadletter``,
``alerting.models``, ``workorders.models``, ``api.models``), each on :class:`Base`; this
module imports none of them. ``gateway.runtime.schema`` imports them all and creates the
tables.

SQLite is the embedded default (WAL mode, so readers never block the ingest path);
PostgreSQL works through the same models for deployments with several gateways.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the models use by default."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of all tables."""


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

    # (for now: gateway.runtime.schema will register the tables instead)
    import gateway.alert_models  # registers the alert and work-order tables
    import gateway.api_models
    import gateway.registry.models
    import gateway.storage.deadletter  # noqa: F401 - registers the dead_letters table

    Base.metadata.create_all(engine)
    return engine
