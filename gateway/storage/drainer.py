"""The spool drainer: moves spooled line protocol to InfluxDB through the writers of
:mod:`gateway.storage.influx`, in order, from a thread of its own.

Retryable failures keep the data in the spool and back off with jitter; a batch rejected for
a bad point (400) is split in halves until the bad lines are isolated, and only those go to
the dead-letter store. The drainer never dies of a failure it can expect: InfluxDB errors,
spool files that cannot be read and a dead-letter store that cannot take a rejected line
(disk full) all keep the data spooled and back off. Its thread is supervised
(:mod:`gateway.core.supervise`) against the unexpected, and it tracks how long data has waited
without a successful write, which ``/health/ready`` reports once it passes a bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.core.backoff import Backoff, Retry
from gateway.core.supervise import SupervisedThread
from gateway.storage.influx import LineWriter, WriteError
from gateway.storage.spool import Chunk, Spool

log = logging.getLogger(__name__)


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
        retry = Retry(Backoff(self.backoff_min_s, self.backoff_max_s, jitter="above_first"))
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
                wait = retry.next_delay()
                log.warning("InfluxDB write failed, retrying in <= %.1f s: %s", retry.ceiling, err)
                self._stop.wait(wait)
                continue
            retry.reset()

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
