"""Alert tables (SQLAlchemy 2, on ``gateway.core.db.Base``): alert episodes and the rules
engine's saved state, and the JSON shape of an alert in events.

An active alert carries an ``active_key`` (``rule|device``, or ``rule|@group`` for count
rules; see ``gateway.workorders.models.active_key``) with a UNIQUE index, set while the alert
is active and NULL afterwards: at most one live row per key, any number of finished ones. Two
writers racing to create the same row get one row and one ``IntegrityError``, which the loser
handles by reading again (see ``gateway.alerting.alerts``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.core.clock import iso
from gateway.core.db import Base, UtcDateTime, utcnow

ALERT_STATES: tuple[str, ...] = ("pending", "firing", "resolved")


class Alert(Base):
    """One alert episode of a rule on a device (and group): pending → firing → resolved."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_state_severity", "state", "severity"),
        Index("ix_alerts_rule_device", "rule_id", "device_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    active_key: Mapped[str | None] = mapped_column(String(512), unique=True)
    rule_id: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    group_key: Mapped[str | None] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(256))
    message: Mapped[str] = mapped_column(Text, default="")
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"), index=True)
    # "/ST1/SQ1/G1/C1/B3/B3-2/": codes are unique, so LIKE '%/C1/%' scopes to a subtree.
    node_path: Mapped[str] = mapped_column(String(512), default="/")
    first_at: Mapped[datetime] = mapped_column(UtcDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_at: Mapped[datetime] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_ts_ns: Mapped[int] = mapped_column(BigInteger)  # spots redelivered transitions
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    last_values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    acked_by: Mapped[str | None] = mapped_column(String(128))
    acked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    version: Mapped[int] = mapped_column(Integer)  # optimistic lock: no lost updates

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012  (SQLAlchemy's own protocol)


def alert_dict(alert: Alert) -> dict[str, Any]:
    """The ``alert`` part of a notification event (JSON-ready)."""
    return {
        "id": alert.id,
        "rule_id": alert.rule_id,
        "device_id": alert.device_id,
        "group": alert.group_key,
        "kind": alert.kind,
        "severity": alert.severity,
        "state": alert.state,
        "title": alert.title,
        "message": alert.message,
        "node_path": alert.node_path,
        "first_at": iso(alert.first_at),
        "fired_at": iso(alert.fired_at),
        "last_at": iso(alert.last_at),
        "resolved_at": iso(alert.resolved_at),
        "occurrences": alert.occurrences,
        "values": alert.last_values,
        "acked_by": alert.acked_by,
        "acked_at": iso(alert.acked_at),
    }


class RuleStateRow(Base):
    """Saved per-(rule, device or group) engine state, so alerts survive a restart."""

    __tablename__ = "rule_state"

    rule_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
