"""InfluxDB writers: the v1 HTTP API, and the v2/v3 API via influxdb-client.

Errors are sorted the way Telegraf's influxdb_v2 output does it: retryable (network,
timeouts, 429, 5xx) or not (a 400 means the data itself is bad); the drainer
(:mod:`gateway.storage.drainer`) keeps retryable failures spooled and isolates the bad lines.
"""

from __future__ import annotations

import base64
import http.client
import urllib.parse
from dataclasses import dataclass
from typing import Protocol, cast


class WriteError(Exception):
    """A write failed; ``retryable`` says whether sending the same data again may succeed."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def classify(status: int, body: str) -> WriteError:
    """Map an HTTP failure to retryable or not (a 400 means the data itself is bad)."""
    text = body.strip()[:300]
    if status in (400, 413, 422):
        return WriteError(f"HTTP {status}: {text}", retryable=False, status=status)
    return WriteError(f"HTTP {status}: {text}", retryable=True, status=status)


class LineWriter(Protocol):
    """Writes newline-separated line protocol (nanosecond precision)."""

    def write(self, body: bytes) -> None:
        """Store the lines or raise WriteError."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class V1Target:
    """InfluxDB 1.x: database, retention policy, optional user/password."""

    url: str = "http://127.0.0.1:8086"
    database: str = "scc"
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0


class V1Writer:
    """POST /write?db=..&rp=..&precision=ns over one kept-alive HTTP connection."""

    def __init__(self, target: V1Target) -> None:
        self.target = target
        parsed = urllib.parse.urlsplit(target.url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 8086
        params = {"db": target.database, "precision": "ns"}
        if target.retention_policy:
            params["rp"] = target.retention_policy
        self._path = f"{parsed.path.rstrip('/')}/write?{urllib.parse.urlencode(params)}"
        self._query_path = f"{parsed.path.rstrip('/')}/query"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if target.username is not None:
            token = f"{target.username}:{target.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._conn: http.client.HTTPConnection | None = None

    def write(self, body: bytes) -> None:
        """Send one request; raise WriteError on any failure.

        A missing database (InfluxDB was down when the gateway started, or it was dropped)
        is created, and the write is reported retryable so the drainer sends it again.
        """
        status, text = self._post(self._path, body, self._headers)
        if status == 204:
            return
        if status == 404 and "database not found" in text:
            created, detail = self.create_database()
            raise WriteError(
                f"database {self.target.database} was missing; "
                f"CREATE DATABASE answered HTTP {created} {detail[:200]}",
                retryable=True,
                status=status,
            )
        raise classify(status, text)

    def create_database(self) -> tuple[int, str]:
        """``CREATE DATABASE`` (a no-op when it exists); returns HTTP status and body."""
        query = f'CREATE DATABASE "{self.target.database}"'
        form = urllib.parse.urlencode({"q": query}).encode()
        headers = {**self._headers, "Content-Type": "application/x-www-form-urlencoded"}
        return self._post(self._query_path, form, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.target.timeout_s
                )
            self._conn.request("POST", path, body=body, headers=headers)
            response = self._conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise WriteError(f"InfluxDB unreachable: {err}", retryable=True) from err

    def close(self) -> None:
        """Drop the connection (it is reopened on the next write)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True, slots=True)
class V2Target:
    """InfluxDB 2.x / 3.x: org, bucket and token."""

    url: str
    org: str
    bucket: str
    token: str
    timeout_s: float = 10.0


class V2Writer:
    """Writes through influxdb-client's synchronous WriteApi (POST /api/v2/write)."""

    def __init__(self, target: V2Target) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.domain.write_precision import WritePrecision

        self.target = target
        self._precision = cast(WritePrecision, WritePrecision.NS)
        self._client = InfluxDBClient(
            url=target.url,
            token=target.token,
            org=target.org,
            timeout=int(target.timeout_s * 1000),
            enable_gzip=False,
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> None:
        """Send one request; raise WriteError on any failure."""
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._api.write(
                bucket=self.target.bucket,
                org=self.target.org,
                record=body,
                write_precision=self._precision,
            )
        except ApiException as err:
            raise classify(int(err.status or 0), str(err.body or err.reason)) from err
        except (OSError, HTTPError) as err:
            raise WriteError(f"InfluxDB unreachable: {err}", retryable=True) from err

    def close(self) -> None:
        """Close the client."""
        self._client.close()  # type: ignore[no-untyped-call]
