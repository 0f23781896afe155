"""Tables of the REST API (SQLAlchemy 2, on ``gateway.core.db.Base``): API tokens.

``gateway.runtime.schema.make_engine`` creates them with every other table;
:func:`create_tables` creates them on an engine made otherwise (``create_app`` calls it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Engine, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.core.db import Base, utcnow


class ApiToken(Base):
    """An API token: only a SHA-256 of its secret is kept, never the secret itself.

    The public ``prefix`` names the token in logs and lists and finds its row; the
    role says what it may do and ``node_id`` where (that node and everything below it).
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def create_tables(engine: Engine) -> None:
    """Create the API tables on ``engine`` if they are missing."""
    Base.metadata.create_all(engine, tables=[Base.metadata.tables[ApiToken.__tablename__]])
