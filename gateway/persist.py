"""Group commit: one thread makes the work of many batches durable at once.

Under load, several batches wait while one is being fsynced. Taking them together means one
spool write and one fsync, one dead-letter insert and one rules transaction for the group,
so persistence keeps up with any rate and latency stays at about one commit. Each job's
future completes only after the whole group is durable; the caller acknowledges then.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from gateway.deadletter import DeadLetterStore
from gateway.pipeline import Rejected
from gateway.rulestage import Outcome, RuleStage
from gateway.spool import Spool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PersistJob:
    """Everything one batch (or timer) must make durable before it is acknowledged."""

    body: bytes
    rejected: list[Rejected]
    outcome: Outcome | None
    check_sla: bool = False


@dataclass(slots=True)
class _Group:
    """Jobs taken together, with what is still to do (a retry resumes where it failed)."""

    futures: list[Future[None]]
    bodies: list[bytes]
    rejected: list[Rejected]
    outcome: Outcome | None
    check_sla: bool
    alert_body: bytes = b""


def _merge(jobs: list[tuple[PersistJob, Future[None]]]) -> _Group:
    outcome: Outcome | None = None
    for job, _ in jobs:
        if job.outcome:
            outcome = outcome or Outcome()
            outcome.transitions += job.outcome.transitions
            outcome.dirty.update(job.outcome.dirty)  # later states win, in job order
    return _Group(
        futures=[future for _, future in jobs],
        bodies=[job.body for job, _ in jobs if job.body],
        rejected=[item for job, _ in jobs for item in job.rejected],
        outcome=outcome,
        check_sla=any(job.check_sla for job, _ in jobs),
    )


class Persister:
    """Owns the persist thread; ``submit`` returns a future done once the job is durable."""

    def __init__(
        self,
        spool: Spool,
        dead_letters: DeadLetterStore,
        rules: RuleStage,
        max_group: int = 64,
    ) -> None:
        self.spool = spool
        self.dead_letters = dead_letters
        self.rules = rules
        self.max_group = max_group
        self.retries = 0
        self.groups = 0
        self.last_group_jobs = 0
        self.last_commit_s = 0.0
        self._queue: queue.Queue[tuple[PersistJob, Future[None]] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="persist", daemon=True)

    def start(self) -> None:
        """Start the persist thread."""
        self._thread.start()

    def submit(self, job: PersistJob) -> Future[None]:
        """Queue a job; the future completes when it is durable (or fails at shutdown)."""
        future: Future[None] = Future()
        self._queue.put((job, future))
        return future

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _take(self) -> tuple[list[tuple[PersistJob, Future[None]]], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        jobs = [first]
        while len(jobs) < self.max_group:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return jobs, True
            jobs.append(item)
        return jobs, False

    def _run(self) -> None:
        done = False
        while not done:
            jobs, done = self._take()
            if not jobs:
                continue
            group = _merge(jobs)
            error = self._commit_with_retries(group, final=done)
            for future in group.futures:
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def _commit_with_retries(self, group: _Group, final: bool) -> Exception | None:
        """Commit; on failure wait and resume (never drop), unless we are shutting down."""
        for attempt in range(1, 1_000_000):
            try:
                started = time.perf_counter()
                self._commit(group)
                self.groups += 1
                self.last_group_jobs = len(group.futures)
                self.last_commit_s = time.perf_counter() - started
                return None
            except Exception as err:
                self.retries += 1
                log.error("cannot persist yet (%s); not acknowledging, retry %d", err, attempt)
                if final or self._stopping.is_set():
                    return err
                time.sleep(min(0.1 * attempt, 2.0))
        return RuntimeError("unreachable")

    def _commit(self, group: _Group) -> None:
        if group.rejected:
            self.dead_letters.add_many(group.rejected)
            group.rejected = []
        if group.outcome is not None:
            # Rules state first: if we crash before the spool write, the batch is redelivered
            # and the engine treats its readings as already seen (no double alerts).
            lines = self.rules.persist(group.outcome)
            group.outcome = None
            group.alert_body = "\n".join(lines).encode()
        if group.bodies or group.alert_body:
            self.spool.append_many([*group.bodies, group.alert_body])
            group.bodies, group.alert_body = [], b""
        if group.check_sla:
            self.rules.check_sla()
            group.check_sla = False
