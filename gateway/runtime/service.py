"""The running gateway: source → pipeline → (spool + dead letters) → ack; spool → InfluxDB.

Ordering and safety: batches are processed one after another on the event loop; their
persistence (spool append with fsync, dead-letter insert) runs on one worker thread so it
overlaps with processing the next batch, and acknowledgements are sent strictly in batch
order once the batch's persistence finished. A batch that cannot be persisted is never
acknowledged: the broker redelivers it.

Shutdown is bounded by ``shutdown_timeout_s`` whatever state the spool or database is in:
each step gets what is left of that budget, and what is not acknowledged by then stays in
the broker's session. Readiness (:mod:`gateway.runtime.readiness`) covers every part ingest needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.alerting.rulestage import RuleStage
from gateway.core.clock import Clock, SystemClock
from gateway.core.config import Settings
from gateway.core.gctune import tune_for_service
from gateway.core.metrics import Sample, influx_lines
from gateway.core.supervise import SupervisedThread
from gateway.ingest.pipeline import BatchResult, Pipeline, Rejected, registry_lookup
from gateway.notify.dispatch import Dispatcher
from gateway.notify.live import EventHub
from gateway.registry.store import DeviceInfo, Registry
from gateway.runtime.fleetstats import fleet_lines
from gateway.runtime.metrics import Counters, gateway_samples
from gateway.runtime.partition import owned_partitions
from gateway.runtime.persist import Persister, PersistJob
from gateway.runtime.readiness import IngestParts, Report, check
from gateway.runtime.schema import make_engine
from gateway.runtime.wiring import ensure_database, make_writer, notification_channels
from gateway.runtime.workers import (
    DRAIN_TIMEOUT_S,
    WORKER_MAX_UNACKED_BATCHES,
    PartitionedRuleStage,
    RuleConsumer,
    all_of,
    forward,
    rule_consumer_options,
    shared_source_options,
)
from gateway.sources.mqtt import wire as mqtt_wire
from gateway.sources.mqtt.receipts import Receipts
from gateway.sources.mqtt.source import RECEIVE_STEP_NS, Batch, MqttSource, SourceOptions
from gateway.storage.deadletter import DeadLetterStore
from gateway.storage.drainer import Drainer
from gateway.storage.influx import LineWriter
from gateway.storage.spool import Spool, SpoolFullError

log = logging.getLogger(__name__)

MAX_UNACKED_BATCHES = 4


class Gateway:
    """Wires the parts together; ``run()`` until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine | None = None,
        writer: LineWriter | None = None,
        clock: Clock | None = None,
    ):
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine or make_engine(settings.database_url)
        self.registry = Registry(self.engine)
        self.dead_letters = DeadLetterStore(self.engine, settings.dead_letter_max_bytes)
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes, fsync=settings.spool_fsync)
        self.counters = Counters()
        self.drainer = Drainer(
            self.spool,
            writer or (lambda: make_writer(settings)),
            self._on_influx_reject,
            max_request_bytes=settings.influx_max_request_bytes,
            connections=settings.influx_connections,
        )
        snapshot = self.registry.device_infos()
        self._snapshot = snapshot  # kept current by device_changed
        self.pipeline = Pipeline(
            registry_lookup(snapshot, self._lookup_one),
            settings.max_payload_bytes,
            device_rate_per_s=settings.device_rate_per_s,
            device_burst=settings.device_burst,
            ts_max_skew_s=settings.ts_max_skew_s,
            ts_max_age_s=settings.ts_max_age_s,
            device_backlog_s=settings.device_backlog_s,
        )
        options = SourceOptions(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            topic_filters=(settings.mqtt_topic_filter,),
            qos=settings.mqtt_qos,
            connect=mqtt_wire.ConnectOptions(
                client_id=settings.client_id,
                receive_maximum=settings.receive_maximum,
                username=settings.mqtt_username,
                password=settings.mqtt_password,
            ),
            batch_max=settings.batch_max,
            linger_s=settings.linger_ms / 1000,
            urgent_linger_s=settings.event_linger_ms / 1000,
            max_payload_bytes=settings.max_payload_bytes,
            max_buffered_bytes=settings.mqtt_max_buffered_bytes,
        )
        if settings.worker_mode:
            options = shared_source_options(settings, options)
        self.receipts = Receipts(
            settings.receipts_path, RECEIVE_STEP_NS, settings.receive_maximum, settings.spool_fsync
        )
        self.source = MqttSource(options, receipts=self.receipts)
        self._stopping = asyncio.Event()
        self._stop_deadline = math.inf  # monotonic time by which run() must return
        self.clock: Clock = clock or SystemClock()
        self.hub = EventHub()
        self.dispatcher = Dispatcher(notification_channels(settings))
        self.rule_consumer: RuleConsumer | None = None
        if settings.worker_mode:
            # Rules run where affinity holds: on the partitions this worker owns.
            owned = owned_partitions(
                settings.rule_partitions, settings.workers, settings.worker_index
            )
            self.rules: RuleStage = PartitionedRuleStage(
                self.engine, self.clock, settings.rules_dir, snapshot, self._publish,
                partitions=settings.rule_partitions, owned=owned,
            )  # fmt: skip
        else:
            self.rules = RuleStage(
                self.engine, self.clock, settings.rules_dir, snapshot, self._publish
            )
        # A device's backlog may start no earlier than its newest reading the engine applied.
        self.pipeline.limits.latest = self.rules.engine.latest_reading
        self.persister = Persister(
            self.spool, self.dead_letters, self.rules, before_spool=self.receipts.flush
        )
        if isinstance(self.rules, PartitionedRuleStage):
            self.rule_consumer = RuleConsumer(
                rule_consumer_options(settings, self.rules.owned),
                self.rules,
                self.persister,
                registry_lookup(snapshot, self._lookup_one),
            )

    def _publish(self, event: dict[str, Any]) -> None:
        self.hub.publish(event)
        self.dispatcher.publish(event)

    def _lookup_one(self, device_id: str) -> DeviceInfo | None:
        return self.registry.device_infos([device_id]).get(device_id)

    def _on_influx_reject(self, line: bytes, why: str) -> None:
        """A line InfluxDB refused even alone: keep it as a dead letter (drainer thread)."""
        item = Rejected(time.time_ns(), "influxdb", None, "influx_rejected", why, line)
        self.dead_letters.add_many([item])
        self.counters.dead_letters["influx_rejected"] += 1

    # -- main loop ---------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until stopped; on return everything acknowledged is in the spool."""
        await asyncio.to_thread(ensure_database, self.drainer.writer)
        loop = asyncio.get_running_loop()
        self.hub.bind(loop)
        self.dispatcher.start()
        self.persister.start()
        self.drainer.start()
        if self.settings.gc_freeze:
            tune_for_service()  # start-up built the snapshot and rule state: freeze them
        rules_task = None
        if self.rule_consumer is not None:  # subscribed first: forwards need a subscriber
            rules_task = asyncio.create_task(self.rule_consumer.run(self._stopping))
        await self.source.start()
        unacked: deque[tuple[asyncio.Future[None], Batch | None]] = deque()
        self._unacked = unacked
        # a forward's PUBACK adds a broker round trip to each batch: keep more in flight
        max_unacked = WORKER_MAX_UNACKED_BATCHES if self.rule_consumer else MAX_UNACKED_BATCHES
        tasks = [
            asyncio.create_task(self._stats_loop()),
            asyncio.create_task(self._every(self.settings.rules_tick_s, self._tick)),
            asyncio.create_task(self._every(self.settings.sla_check_s, self._check_sla)),
            asyncio.create_task(self._every(5.0, self._reload_rules)),
        ]
        api = None
        if self.settings.api_port:
            from gateway.runtime.webserver import make_server

            api = make_server(self)
            tasks.append(asyncio.create_task(self._serve_api(api)))
        try:
            while not self._stopping.is_set():
                batch = await self.source.next_batch(timeout=0.2)
                await self._ack_ready(unacked, block=batch is None and bool(unacked))
                if batch is None:
                    continue
                self._handle(batch)
                while len(unacked) >= max_unacked and not self._stopping.is_set():
                    await self._ack_ready(unacked, block=True)
            await self._ack_remaining(unacked)
        finally:
            await self._shutdown(api, tasks, rules_task)

    def _left(self, cap: float = math.inf) -> float:
        """Seconds left of the shutdown budget (at most ``cap``)."""
        return max(0.0, min(cap, self._stop_deadline - time.monotonic()))

    async def _ack_remaining(
        self, unacked: deque[tuple[asyncio.Future[None], Batch | None]]
    ) -> None:
        """Acknowledge what becomes durable in the first half of the budget; nothing when
        the persister is failing (it would not finish, and the broker keeps the rest)."""
        until = time.monotonic() + self._left(self.settings.shutdown_timeout_s / 2)
        if self.rule_consumer:  # forwards may never be answered (broker gone)
            until = min(until, time.monotonic() + DRAIN_TIMEOUT_S)
        while unacked and time.monotonic() < until and self.persister.problem() is None:
            await self._ack_ready(unacked, block=True)
        if unacked:
            log.warning(
                "stopping with %d batches unacknowledged (the broker keeps them)", len(unacked)
            )

    async def _shutdown(
        self, api: Any, tasks: list[asyncio.Task[None]], rules_task: asyncio.Task[None] | None
    ) -> None:
        """Stop every part within what is left of the budget."""
        self._stop_deadline = min(
            self._stop_deadline, time.monotonic() + self.settings.shutdown_timeout_s
        )
        if api is not None:
            api.should_exit = True
            await asyncio.wait([tasks.pop()], timeout=self._left(5.0))
        if rules_task is not None:  # it acknowledges what the persister committed
            tasks.append(await self._rules_drained(rules_task))
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), self._left(1.0) + 0.1
        )
        await asyncio.wait_for(self.source.stop(), self._left(2.0) + 0.1)
        self.hub.close()
        # Threads: each call is bounded; the threads are daemons, so one stuck in the
        # kernel (a hung disk) does not hold up the exit.
        await self._in_thread(self.persister.stop, self._left())
        await self._in_thread(self.drainer.stop, self._left())
        await self._in_thread(self.spool.close, self._left(1.0))
        await self._in_thread(self.dispatcher.close, self._left(5.0))
        log.info("stopped")

    async def _in_thread(self, action: Callable[[float], object], budget: float) -> None:
        # A plain daemon thread, not the loop's executor: asyncio.run() would wait for it.
        done = asyncio.get_running_loop().create_future()

        def run() -> None:
            try:
                action(budget)
            except Exception:
                log.exception("shutdown step %s failed", getattr(action, "__qualname__", action))
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be gone by then
                    done.get_loop().call_soon_threadsafe(_set_done, done)

        threading.Thread(target=run, name="shutdown-step", daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), budget + 0.5)

    def _handle(self, batch: Batch) -> None:
        result = self._process(batch)
        if self.rule_consumer is not None:
            self._forward(result, batch)
            return
        outcome = self.rules.observe(result.accepted, batch.received_ns)
        self._submit(PersistJob(result.line_bytes(), result.rejected, outcome), batch)

    async def _rules_drained(self, rules_task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._stopping.set()
        await asyncio.wait([rules_task], timeout=self._left(DRAIN_TIMEOUT_S + 5))
        return rules_task

    def _submit(self, job: PersistJob, batch: Batch | None = None) -> None:
        """Queue a job on the persist thread; a batch is acknowledged once its job is done."""
        self._unacked.append((asyncio.wrap_future(self.persister.submit(job)), batch))

    def _forward(self, result: BatchResult, batch: Batch) -> None:
        """Worker mode: persist points and dead letters, forward readings to their rule
        partitions; the batch is acknowledged once both are done."""
        persisted = asyncio.wrap_future(
            self.persister.submit(PersistJob(result.line_bytes(), result.rejected, None))
        )
        forwards = forward(
            self.source, result.accepted, self.settings.share_group, self.settings.rule_partitions
        )
        self._unacked.append((all_of([persisted, *forwards]), batch))

    async def _every(self, interval_s: float, action: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                action()
            except Exception:
                log.exception("periodic task %s failed", getattr(action, "__name__", action))

    def _tick(self) -> None:
        outcome = self.rules.tick(time.time_ns())
        if outcome:
            self._submit(PersistJob(b"", [], outcome))

    async def _serve_api(self, api: Any) -> None:
        """Serve the API; if it cannot start (port taken), say so and keep ingesting."""
        try:
            await api.serve()
        except (SystemExit, OSError) as err:
            log.error(
                "API not served on %s:%s (%s); ingest goes on",
                self.settings.api_host,
                self.settings.api_port,
                err,
            )

    def device_changed(self, device_id: str) -> None:
        """The registry changed for a device (API): drop cached routes and tags (on the loop)."""
        info = self._lookup_one(device_id)
        if info is None:
            self._snapshot.pop(device_id, None)
        else:
            self._snapshot[device_id] = info
        self.pipeline.invalidate(device_id)
        self.rules.device_changed(device_id, info)

    def reload_rules_now(self) -> None:
        """Reload the site rules at once (the API calls this after changing them)."""
        outcome = self.rules.reload()
        if outcome:
            self._submit(PersistJob(b"", [], outcome))

    def _reload_rules(self) -> None:
        outcome = self.rules.reload_if_changed()
        if outcome:
            self._submit(PersistJob(b"", [], outcome))

    def _check_sla(self) -> None:
        if self.settings.worker_index:
            return  # one worker escalates for all (they share the database)
        self._submit(PersistJob(b"", [], None, check_sla=True))

    def stop(self) -> None:
        """Ask ``run()`` to finish within ``shutdown_timeout_s`` (safe from signal handlers
        on the loop)."""
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stopping.is_set()

    # -- health ------------------------------------------------------------------------
    @property
    def threads(self) -> list[SupervisedThread]:
        """The supervised threads of ingest."""
        return [*self.persister.threads, self.drainer.thread]

    def readiness(self) -> Report:
        """Whether every part ingest needs works, with the reason for each that does not."""
        sessions: dict[str, Any] = {"mqtt": self.source}
        if self.rule_consumer is not None:
            sessions["mqtt_rules"] = self.rule_consumer.source
        return check(
            IngestParts(
                sessions=sessions,
                broker=f"{self.settings.mqtt_host}:{self.settings.mqtt_port}",
                persister=self.persister,
                spool=self.spool,
                drainer=self.drainer,
                threads=self.threads,
                influx_stall_s=self.settings.influx_stall_s,
            )
        )

    def _process(self, batch: Batch) -> BatchResult:
        started = time.perf_counter()
        result = self.pipeline.process(batch)
        counters = self.counters
        counters.messages.update(result.messages_by_kind)
        counters.points += len(result.lines)
        counters.batches += 1
        for item in result.rejected:
            counters.dead_letters[item.reason] += 1
        counters.last_batch_size = len(batch)
        counters.last_batch_process_s = time.perf_counter() - started
        return result

    async def _ack_ready(
        self, unacked: deque[tuple[asyncio.Future[None], Batch | None]], block: bool
    ) -> None:
        if block and unacked:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(unacked[0][0]), 0.5)
        while unacked and unacked[0][0].done():
            fut, batch = unacked.popleft()
            if fut.exception() is None and batch is not None:
                self.source.ack(batch)
                self.counters.acked_batches += 1
            elif (
                batch is not None
                and batch.generation == self.source.generation
                and not self._stopping.is_set()
            ):
                # Not made durable (a persist failure that was not retried, or a forward
                # the broker refused) on a live connection: reconnect, so that the batch
                # comes again rather than staying unacknowledged for good.
                log.warning("batch not acknowledged (%s); reconnecting", fut.exception())
                self.source.drop_connection()

    # -- statistics ----------------------------------------------------------------------
    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_interval_s)
            now = time.time_ns()
            lines = self.stats_lines(now)
            try:
                # fleet, alert and work-order snapshots for the dashboards (SQL: off the loop;
                # with several workers sharing the database, worker 0 writes them)
                if not self.settings.worker_index:
                    lines += await asyncio.to_thread(fleet_lines, self.engine, now)
                await asyncio.to_thread(self.spool.append, "\n".join(lines).encode(), 1.0)
            except (SpoolFullError, OSError, SQLAlchemyError) as err:
                log.warning("gateway_stats not spooled: %s", err)

    def samples(self) -> list[Sample]:
        """Every counter and gauge of the gateway (for /metrics and gateway_stats)."""
        return gateway_samples(self)

    def stats_lines(self, ts: int) -> list[str]:
        """``gateway_stats`` points for InfluxDB."""
        name = self.settings.name
        if self.settings.worker_mode:
            name = f"{name}-{self.settings.worker_index}"
        return influx_lines(self.samples(), name, ts)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def exit_watchdog(seconds: float) -> None:
    """Exit the process if it is still alive ``seconds`` from now (the CLI arms this on
    SIGTERM). Everything acknowledged is durable already, so a forced exit loses nothing;
    it only guards the shutdown bound against a thread stuck in the kernel."""

    def expire() -> None:
        log.error("shutdown took over %.0f s; exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
