"""Gateway settings: validated without I/O, built from a YAML file, environment and flags.

Precedence: command-line flags > environment (``SCC_<FIELD>``) > YAML file > defaults.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)


class Settings(BaseModel):
    """Everything the running gateway needs; see README for the meaning of each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("gw1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    state_dir: Path = Path("var")
    db_url: str = ""  # default: sqlite under state_dir

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_client_id: str = ""  # default: scc-gateway-<name>-<random>, see gateway_client_id
    mqtt_admin_username: str | None = None  # dynamic-security admin: provisions devices
    mqtt_admin_password: str | None = None
    mqtt_qos: Literal[0, 1] = 1
    mqtt_topic_filter: str = "scc/v1/+/+"
    receive_maximum: int = Field(30_000, ge=1, le=65535)
    batch_max: int = Field(5000, ge=1, le=100_000)
    linger_ms: float = Field(20.0, ge=0, le=5000)
    event_linger_ms: float = Field(0.0, ge=0, le=5000)  # a batch holding an event message
    max_payload_bytes: int = Field(65536, ge=64, le=1 << 20)
    #: Bytes of received messages not yet acknowledged above which the gateway stops reading
    #: from the broker until acknowledgements catch up (receive_maximum bounds their number).
    mqtt_max_buffered_bytes: int = Field(64 << 20, ge=1 << 20)
    device_rate_per_s: float = Field(20.0, ge=0)  # 0: no per-device throttling
    device_burst: int = Field(200, ge=1)
    #: How far back, on its own clock (``ts``), a device catching up after an outage may
    #: deliver readings faster than ``device_rate_per_s`` by the gateway's clock.
    device_backlog_s: float = Field(86_400.0, ge=0)
    #: A device ``ts`` more than this ahead of the gateway's clock is a dead letter
    #: (``future_ts``): a clock gone wrong must not stop the device's later readings.
    ts_max_skew_s: float = Field(300.0, ge=0, le=86_400)
    #: A device ``ts`` older than this is a dead letter (``stale_ts``); 7 days is the
    #: gateway's own MQTT session expiry, the oldest backlog the broker can hold for it.
    ts_max_age_s: float = Field(7 * 86_400.0, gt=0)

    influx_version: Literal[1, 2] = 1
    influx_url: str = "http://127.0.0.1:8086"
    influx_database: str = "scc"
    influx_retention_policy: str | None = None
    influx_username: str | None = None
    influx_password: str | None = None
    influx_org: str = ""
    influx_bucket: str = ""
    influx_token: str = ""
    #: Larger writes cost InfluxDB less CPU per point (4 MiB: ~12 % less than 1 MiB, measured
    #: in `make bench`); InfluxDB 1.x refuses bodies over its max-body-size (25 MB default).
    influx_max_request_bytes: int = Field(4 << 20, ge=1024)
    influx_connections: int = Field(2, ge=1, le=16)

    api_host: str = "127.0.0.1"
    api_port: int = Field(0, ge=0, le=65535)  # 0: no API in this process (`run` serves 8080)
    #: Request bodies (gateway/api/bodyguard.py): read only after the token is checked, at
    #: most this many bytes (JSON routes; the bulk import has its own bound), within a time.
    api_max_body_bytes: int = Field(64 << 10, ge=1024, le=64 << 20)
    api_max_import_bytes: int = Field(8 << 20, ge=1024, le=256 << 20)
    api_body_timeout_s: float = Field(30.0, gt=0, le=3600)
    #: How often an open event stream checks that its token is still valid, unchanged.
    api_token_recheck_s: float = Field(1.0, gt=0, le=60)
    rules_dir: Path | None = None  # site rules overriding devices/<kind>/rules.yaml
    rules_tick_s: float = Field(1.0, gt=0, le=60)
    sla_check_s: float = Field(10.0, gt=0, le=3600)

    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_template: Literal["generic", "wecom", "dingtalk", "feishu"] = "generic"
    webhook_min_severity: Literal["info", "warning", "major", "critical"] = "warning"
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_sender: str = "scc-gateway@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    email_min_severity: Literal["info", "warning", "major", "critical"] = "major"

    # Several processes on one shared subscription (see gateway.runtime.workers). workers == 1 and
    # partitioned false is the plain single-process gateway; partitioned with one worker
    # runs the worker code paths alone (to measure what forwarding costs).
    workers: int = Field(1, ge=1, le=64)
    worker_index: int = Field(0, ge=0)
    partitioned: bool = False
    share_group: str = Field("scc-gw", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    rule_partitions: int = Field(16, ge=1, le=4096)  # the same on every worker

    spool_max_bytes: int = Field(1 << 30, ge=1 << 20)
    #: Bound of the dead-letter store; above it the oldest letters of the biggest reason go
    #: first, each counted (gateway/storage/deadletter.py).
    dead_letter_max_bytes: int = Field(256 << 20, ge=1 << 20)
    spool_fsync: bool = True
    #: SIGTERM/SIGINT: the gateway returns within this, whatever the spool's state (what
    #: is not acknowledged by then stays in the broker's session and comes again).
    shutdown_timeout_s: float = Field(15.0, gt=0, le=300)
    #: Not ready once data has waited this long without a successful InfluxDB write.
    influx_stall_s: float = Field(30.0, gt=0)
    stats_interval_s: float = Field(5.0, gt=0)
    #: Freeze start-up objects and collect rarely (gateway/core/gctune.py): fewer, shorter pauses.
    gc_freeze: bool = True

    @model_validator(mode="after")
    def _check_influx(self) -> Settings:
        if not self.influx_url.startswith(("http://", "https://")):
            raise ValueError(f"influx_url {self.influx_url!r} must start with http:// or https://")
        if self.influx_version == 2 and not (
            self.influx_org and self.influx_bucket and self.influx_token
        ):
            raise ValueError("influx_version 2 needs influx_org, influx_bucket and influx_token")
        return self

    @model_validator(mode="after")
    def _check_workers(self) -> Settings:
        if self.worker_index >= self.workers:
            raise ValueError(f"worker_index {self.worker_index} must be below workers")
        if self.worker_mode and self.rule_partitions < self.workers:
            raise ValueError("rule_partitions must be at least the number of workers")
        if self.worker_mode and self.mqtt_qos != 1:
            raise ValueError("worker mode needs mqtt_qos 1 (flow control by Receive Maximum)")
        return self

    @property
    def worker_mode(self) -> bool:
        """Whether this process is one worker of a shared subscription (rules partitioned)."""
        return self.workers > 1 or self.partitioned

    @property
    def database_url(self) -> str:
        """The registry database URL (SQLite file under the state directory by default)."""
        return self.db_url or f"sqlite:///{self.state_dir / 'gateway.db'}"

    @property
    def client_id(self) -> str:
        """The MQTT client id: ``mqtt_client_id``, else :func:`gateway_client_id` (the one
        place it comes from: worker ids add ``-<K>`` / ``-rules-<K>`` to it)."""
        return self.mqtt_client_id or gateway_client_id(self.state_dir, self.name)

    @property
    def receipts_path(self) -> Path:
        """Receive times of the QoS 1 messages of the last batches
        (gateway.sources.mqtt.receipts)."""
        return self.state_dir / "mqtt" / f"{self.spool_dir.name}.receipts"

    @property
    def spool_dir(self) -> Path:
        """Where the durable spool lives (one per worker process)."""
        if self.worker_mode:
            return self.state_dir / "spool" / f"{self.name}-{self.worker_index}"
        return self.state_dir / "spool" / self.name


_WARNED: set[Path] = set()  # legacy client ids already warned about (once per process)


def gateway_client_id(state_dir: Path, name: str) -> str:
    """``scc-gateway-<name>-<16 random hex digits>``, made once and kept in the state directory.

    Stable, so the broker keeps our persistent session across restarts; not guessable from
    the gateway's name, so that a client on an anonymous broker cannot take it over (with
    dynamic security each login is also bound to its own client id). A state directory an
    earlier version ran in keeps that version's ``scc-gateway-<name>``: a new id would
    strand the backlog the broker holds in the old session.
    """
    path = state_dir / "mqtt" / f"{name}.client-id"
    for _ in range(50):  # bounded: another process may be writing it right now
        with contextlib.suppress(FileNotFoundError):
            client_id = path.read_text(encoding="utf-8").strip()
            if client_id:
                break
        if not path.exists():
            _create_client_id(path, _new_client_id(state_dir, name))
        else:
            time.sleep(0.01)
    else:
        raise RuntimeError(f"{path} stays empty; delete it to make a new client id")
    if client_id == f"scc-gateway-{name}" and path not in _WARNED:
        _WARNED.add(path)
        log.warning(
            "MQTT client id %s is guessable (kept from an earlier version, whose session at "
            "the broker may hold a backlog); once it is drained, stop the gateway and delete "
            "%s for an unguessable one",
            client_id,
            path,
        )
    return client_id


def _new_client_id(state_dir: Path, name: str) -> str:
    if _has_run_before(state_dir / "spool", name):
        return f"scc-gateway-{name}"  # an earlier version ran here: keep its session
    return f"scc-gateway-{name}-{secrets.token_hex(8)}"


def _has_run_before(spool: Path, name: str) -> bool:
    """Whether a gateway of this name spooled anything here (a drain cursor, or a segment
    with data; an empty spool may just have been opened by this very process)."""
    for directory in (spool / name, *spool.glob(f"{name}-[0-9]*")):
        if (directory / "cursor").exists():
            return True
        if any(seg.stat().st_size for seg in directory.glob("seg-*.spool")):
            return True
    return False


def _create_client_id(path: Path, client_id: str) -> None:
    """Write the id aside, then link it in place: readers never see a partial file, and of
    two processes starting at once, one wins and the other reads its id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    tmp.write_text(client_id + "\n", encoding="utf-8")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Merge YAML file, ``SCC_*`` environment variables and explicit overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        data.update(loaded)
    for key in Settings.model_fields:
        env = os.environ.get(f"SCC_{key.upper()}")
        if env is not None:
            data[key] = env
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Settings.model_validate(data)
