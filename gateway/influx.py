"""InfluxDB writers (v1 HTTP API and v2/v3 API via influxdb-client) and the spool drainer.

Errors are sorted the way Telegraf's influxdb_v2 output does it: retryable (network,
timeouts, 429, 5xx) keeps the data in the spool and backs off with jitter; a batch rejected
for a bad point (400) is split in halves until the bad lines are isolated, and only those go
to the dead-letter store.

The drainer never dies of a failure it can expect: InfluxDB errors, spool files that cannot
be read and a dead-letter store that cannot take a rejected line (disk full) all keep the
data spooled and back off. Its thread is supervised (:mod:`gateway.core.supervise`) against the
unexpected, and it tracks how long data has waited without a successful write, which
``/health/ready`` reports once it passes a bound.
"""

from __future__ import annotations

import base64
import http.client
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, cast

from gateway.core.supervise import SupervisedThread
from gateway.spool import Chunk, Spool

log = logging.getLogger(__name__)


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


@dataclass(slots=True)
class DrainStats:
    """What the drainer has done, for metrics and the demo printout."""

    written_lines: int = 0
    write_requests: int = 0
    retries: int = 0
    rejected_lines: int = 0
    last_error: str = ""
    last_batch_lines: int = 0
    last_batch_seconds: float = 0.0
    #: Monotonic time of the last successful write (or of the start).
    last_ok_at: float = 0.0
    #: Monotonic time since which data waits in the spool (None: drained).
    pending_since: float | None = None


RejectSink = Callable[[bytes, str], None]


class Drainer:
    """Moves spooled line protocol to InfluxDB in order, from a thread of its own."""

    def __init__(
        self,
        spool: Spool,
        writer: LineWriter | Callable[[], LineWriter],
        on_reject: RejectSink,
        max_request_bytes: int = 1 << 20,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 5.0,
        connections: int = 1,
    ) -> None:
        self.spool = spool
        # One writer (and so one HTTP connection) per concurrent request.
        if callable(writer) and not hasattr(writer, "write"):
            self.writers = [writer() for _ in range(max(1, connections))]
        else:
            self.writers = [writer]  # type: ignore[list-item]
        self.writer = self.writers[0]
        self._pool = (
            ThreadPoolExecutor(len(self.writers) - 1, thread_name_prefix="influx-write")
            if len(self.writers) > 1
            else None
        )
        self.on_reject = on_reject
        self.max_request_bytes = max_request_bytes
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.stats = DrainStats(last_ok_at=time.monotonic())
        self._stop = threading.Event()
        self.thread = SupervisedThread("influx-drainer", self._run, self._stop)

    def start(self) -> None:
        """Start the drain thread."""
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop within ``timeout``; what is left stays spooled for the next start."""
        self._stop.set()
        self.thread.join(timeout)
        if self._pool is not None:
            # A request in flight ends with its connection, closed just below.
            self._pool.shutdown(wait=False, cancel_futures=True)
        for writer in self.writers:
            writer.close()

    def stalled_s(self, now: float | None = None) -> float:
        """How long data has waited without a successful write (0 while drained)."""
        pending = self.stats.pending_since
        if pending is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, now - max(pending, self.stats.last_ok_at))

    def drained(self) -> bool:
        """True when nothing is waiting in the spool."""
        return self.spool.depth_bytes() == 0

    def _run(self) -> None:
        delay = self.backoff_min_s
        while not self._stop.is_set():
            if not self.spool.wait_for_data(0.5):
                self.stats.pending_since = None
                continue
            if self.stats.pending_since is None:
                self.stats.pending_since = time.monotonic()
            try:
                self._drain_once()
            except (WriteError, OSError) as err:
                self.stats.retries += 1
                self.stats.last_error = str(err)
                log.warning("InfluxDB write failed, retrying in <= %.1f s: %s", delay, err)
                self._stop.wait(random.uniform(self.backoff_min_s, delay))
                delay = min(delay * 2, self.backoff_max_s)
                continue
            delay = self.backoff_min_s

    def _drain_once(self) -> None:
        chunks = self._read_chunks()
        if not chunks:
            return
        self._write_chunks(chunks)
        self.stats.last_ok_at = time.monotonic()
        # Committing the last chunk commits all before it; after a failure nothing is
        # committed and the whole group is sent again (points are idempotent).
        self.spool.commit(chunks[-1])

    def _read_chunks(self) -> list[Chunk]:
        chunks: list[Chunk] = []
        for _ in self.writers:
            chunk = self.spool.read(self.max_request_bytes, chunks[-1] if chunks else None)
            if chunk is None:
                break
            chunks.append(chunk)
        return chunks

    def _write_chunks(self, chunks: list[Chunk]) -> None:
        """Send the chunks concurrently, one per connection; raise the first failure."""
        started = time.perf_counter()
        bodies = [b"\n".join(chunk.records) for chunk in chunks]
        futures = []
        if self._pool is not None:
            futures = [
                self._pool.submit(self._write_splitting, body, writer)
                for body, writer in zip(bodies[1:], self.writers[1:], strict=False)
            ]
        errors: list[WriteError] = []
        try:
            if bodies[0]:
                self._write_splitting(bodies[0], self.writers[0])
        except WriteError as err:
            errors.append(err)
        for future in futures:
            try:
                future.result()
            except WriteError as err:
                errors.append(err)
        if errors:
            raise errors[0]
        self.stats.last_batch_seconds = time.perf_counter() - started
        self.stats.last_batch_lines = sum(body.count(b"\n") + 1 for body in bodies if body)

    def _write_splitting(self, body: bytes, writer: LineWriter) -> None:
        """Write; on a data error split in halves so only the bad lines are rejected."""
        if not body:  # a chunk of corrupt records only, already counted by the spool
            return
        try:
            writer.write(body)
            self.stats.write_requests += 1
            self.stats.written_lines += body.count(b"\n") + 1
            return
        except WriteError as err:
            if err.retryable:
                raise
            lines = body.split(b"\n")
            if len(lines) == 1:
                self._reject(body, err)
                return
        half = len(lines) // 2
        self._write_splitting(b"\n".join(lines[:half]), writer)
        self._write_splitting(b"\n".join(lines[half:]), writer)

    def _reject(self, line: bytes, err: WriteError) -> None:
        """Keep a line InfluxDB refuses as a dead letter; if the store fails (disk full),
        the chunk stays spooled and is sent again later, so the line is not lost."""
        try:
            self.on_reject(line, str(err))
        except Exception as store_err:
            raise WriteError(
                f"a rejected line could not be kept as a dead letter: {store_err}",
                retryable=True,
            ) from store_err
        self.stats.rejected_lines += 1
