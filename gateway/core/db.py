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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import DateTime, Dialect, Engine, TypeDecorator, create_engine, event
from sqlalchemy.orm import DeclarativeBase

from gateway.core.clock import require_utc


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


def engine_for(url: str) -> Engine:
    """Engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys. It creates no
    tables: ``gateway.runtime.schema.make_engine`` does, with every model registered."""
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

    return engine


class UtcDateTime(TypeDecorator[datetime]):
    """A DateTime that refuses naive values and always reads back timezone-aware UTC.

    SQLite has no time zones and hands back naive datetimes; this stores UTC and re-attaches
    the zone on the way out, so comparisons and arithmetic never mix naive and aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC before storing; refuse naive datetimes."""
        return None if value is None else require_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Re-attach UTC to what the database returns."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_values(values: Mapping[str, object]) -> dict[str, Any]:
    """A reading as JSON-safe values (numpy scalars → Python, anything else odd → str);
    absent fields (None) are left out."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[str(key)] = value
        elif hasattr(value, "item"):
            out[str(key)] = value.item()
        else:
            out[str(key)] = str(value)
    return out
