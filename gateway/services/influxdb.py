"""A local InfluxDB 1.x server for development, demos and tests, and the InfluxQL HTTP helpers
(stdlib only) that tests and the CLI use."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gateway.services.base import (
    LOOPBACK,
    START_TIMEOUT,
    ManagedProcess,
    ServerConfig,
    ServiceError,
    free_port,
)


def probe_influxdb(port: int, timeout: float = 1.0) -> bool:
    """Return True when ``GET /ping`` on 127.0.0.1:``port`` answers 204."""
    try:
        with _opener().open(f"http://{LOOPBACK}:{port}/ping", timeout=timeout) as resp:
            return int(resp.status) == 204
    except (OSError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class InfluxConfig(ServerConfig):
    """A loopback InfluxDB 1.x server (Debian's ``influxd``)."""

    bind_port: int  # RPC/backup service; its default 8088 would collide between servers
    max_body_size: int = 0  # 0 = unlimited, so large batches are never refused

    name: ClassVar[str] = "influxdb"
    binary: ClassVar[str] = "influxd"
    scheme: ClassVar[str] = "http"
    # INFLUXDB_HTTP_BIND_ADDRESS and friends override the config file in influxd 1.x.
    drop_env_prefixes: ClassVar[tuple[str, ...]] = ("INFLUXDB_",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.bind_port < 65536 or self.bind_port == self.port:
            raise ValueError(f"influxdb: bind_port {self.bind_port} must be a free, other port")

    def render(self) -> str:
        """Render ``influxd.conf`` (TOML)."""
        meta, data, wal = (json.dumps(str(self.state_dir / d)) for d in ("meta", "data", "wal"))
        return f"""# Written by gateway.services on every start; edits are overwritten.
# Upstream spells the phone-home switch reporting-disabled, Debian's build
# reporting-enabled; each build ignores the key it does not know.
reporting-disabled = true
reporting-enabled = false
bind-address = "{LOOPBACK}:{self.bind_port}"

[meta]
  dir = {meta}

[data]
  dir = {data}
  wal-dir = {wal}
  wal-fsync-delay = "0s"
  query-log-enabled = false
  # Every device is a series with its own device_id value: 1.x would refuse a tag's
  # 100,001st value and a database's 1,000,001st series (a district has a million devices).
  max-series-per-database = 0
  max-values-per-tag = 0

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{LOOPBACK}:{self.port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  max-body-size = {self.max_body_size}

[logging]
  level = "info"
  suppress-logo = true

[continuous_queries]
  enabled = false
"""

    def prepare(self) -> None:
        """Create meta/data/wal directories and write the configuration."""
        super().prepare()
        for sub in ("meta", "data", "wal"):
            (self.state_dir / sub).mkdir(exist_ok=True)

    def argv(self, binary: str) -> list[str]:
        """``influxd run -config <config>`` (logs go to stderr in 1.x, captured to a file)."""
        return [binary, "run", "-config", str(self.config_path)]

    def probe(self, timeout: float = 1.0) -> bool:
        """``GET /ping`` answers 204."""
        return probe_influxdb(self.port, timeout)


def start_influxdb(
    state_dir: Path | str, port: int | None = None, *, timeout: float = START_TIMEOUT
) -> ManagedProcess:
    """Start InfluxDB in ``state_dir`` on ``port`` (a free one if None) and wait for it."""
    port = port or free_port()
    bind_port = free_port()
    while bind_port == port:
        bind_port = free_port()
    config = InfluxConfig(port=port, state_dir=Path(state_dir), bind_port=bind_port)
    proc = ManagedProcess(config)
    proc.start(timeout)
    return proc


def _opener() -> urllib.request.OpenerDirector:
    # Never route loopback traffic through an http_proxy from the environment.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def influx_query(url: str, query: str, *, db: str | None = None, timeout: float = 10.0) -> Any:
    """POST an InfluxQL ``query`` to ``url``/query and return the decoded JSON.

    Raises :class:`ServiceError` if the server reports an error for any statement.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    form = {"q": query} | ({"db": db} if db else {})
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url.rstrip("/") + "/query", data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    try:
        with _opener().open(request, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        raise ServiceError(f"InfluxDB {url} refused {query!r}: {err.code} {detail}") from err
    except (OSError, ValueError) as err:
        raise ServiceError(f"InfluxDB {url} failed on {query!r}: {err}") from err
    errors = [r["error"] for r in body.get("results", []) if "error" in r]
    if "error" in body or errors:
        raise ServiceError(f"InfluxDB {url} refused {query!r}: {body.get('error') or errors}")
    return body


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def create_influx_database(url: str, name: str, *, timeout: float = 10.0) -> None:
    """``CREATE DATABASE "name"`` (a no-op if it exists)."""
    influx_query(url, f"CREATE DATABASE {_quote_ident(name)}", timeout=timeout)


def drop_influx_database(url: str, name: str, *, timeout: float = 10.0) -> None:
    """``DROP DATABASE "name"`` (a no-op if it does not exist)."""
    influx_query(url, f"DROP DATABASE {_quote_ident(name)}", timeout=timeout)
