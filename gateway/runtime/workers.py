"""Worker mode: the two stages of a gateway that shares its subscription with others.

Stateless stage (``forward``): a batch from the shared subscription is decoded and written
as usual; its valid readings go to their rule partitions (see ``gateway.runtime.partition``). The
batch is acknowledged once its points and dead letters are durable *and* the broker has
acknowledged every forward.

Stateful stage (``RuleConsumer``): a second connection with a persistent session of its own
subscribes to the partitions this worker owns, runs the rules on what arrives and
acknowledges a forward message only after the rules' outcome (state, alerts, work orders)
is committed by the persister. A crash in between makes the broker deliver it again; the
engine ignores readings not newer than the last one it applied, so that is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from gateway.alerting.rulestage import Event, Outcome, RuleStage
from gateway.core.clock import Clock
from gateway.core.config import Settings
from gateway.ingest.pipeline import Accepted
from gateway.registry.store import DeviceInfo
from gateway.runtime.partition import (
    Forwarded,
    ForwardError,
    decode_forward,
    encode_forwards,
    partition_of,
    partition_topic,
)
from gateway.runtime.persist import Persister, PersistJob
from gateway.sources.mqtt.source import Batch, MqttSource, SourceOptions
from gateway.sources.mqtt.wire import ConnectOptions
from rules import Observation

log = logging.getLogger(__name__)

MAX_UNACKED_RULE_BATCHES = 4
# Device batches of a worker awaiting acknowledgement (the single process keeps 4): each
# waits for a broker round trip on top of its commit. Measured with bench.scale: 4 → about
# half the single-process rate, 16 → on par. Memory stays bounded by the Receive Maximum.
WORKER_MAX_UNACKED_BATCHES = 16
DRAIN_TIMEOUT_S = 30.0


class PartitionedRuleStage(RuleStage):
    """A RuleStage that knows only the devices of the partitions its worker owns.

    At start-up it registers (for absence) and restores the saved state of owned devices
    only, so a worker never raises "offline" for a device it is not responsible for.
    """

    def __init__(
        self,
        db: Engine,
        clock: Clock,
        site_dir: Path | None,
        devices: Mapping[str, DeviceInfo],
        publish: Callable[[Event], None],
        *,
        partitions: int,
        owned: Iterable[int],
    ) -> None:
        self.partitions = partitions
        self.owned = frozenset(owned)
        mine = {d: info for d, info in devices.items() if self.owns(d)}
        super().__init__(db, clock, site_dir, mine, publish)

    def owns(self, key: str) -> bool:
        """Whether a device id (or a count rule's group key) belongs to this worker."""
        return partition_of(key, self.partitions) in self.owned

    def device_changed(self, device_id: str, info: DeviceInfo | None) -> None:
        """Registry changes of other workers' devices are theirs to apply."""
        if self.owns(device_id):
            super().device_changed(device_id, info)

    def _saved_states(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        # Every worker reads the one shared table; each keeps the keys of its partitions.
        return (row for row in super()._saved_states() if self.owns(row[1]))

    def observe_forwarded(
        self, readings: Sequence[tuple[DeviceInfo, Forwarded]], received_ns: int
    ) -> Outcome:
        """Evaluate forwarded readings, exactly as ``observe`` does local ones."""
        started = time.perf_counter()
        observations = []
        place = self.place
        for info, item in readings:
            if item.values is None:  # status message: activity only
                self.engine.seen(info.device_id, info.kind, item.ts_ns)
                continue
            observations.append(
                Observation(info.device_id, info.kind, item.ts_ns, item.values, place(info))
            )
        transitions = self.engine.evaluate(observations, received_ns)
        self.last_eval_s = time.perf_counter() - started
        return self._outcome(transitions)


def forward(
    source: MqttSource, accepted: Iterable[Accepted], group: str, partitions: int
) -> list[asyncio.Future[None]]:
    """Publish a batch's readings to their partitions; one future per forward message.

    A partition nobody subscribes to yet (its worker never started, so the broker holds no
    session for it) would swallow the message: that counts as a failed forward, so the
    batch is delivered again later instead of being acknowledged.
    """
    return [
        source.publish(partition_topic(group, part), payload, require_subscriber=True)
        for part, payload in encode_forwards(accepted, partitions).items()
    ]


def all_of(futures: Sequence[asyncio.Future[None]]) -> asyncio.Future[None]:
    """A future done when all are; it fails with the first failure (every one retrieved)."""
    loop = asyncio.get_running_loop()
    combined: asyncio.Future[None] = loop.create_future()
    pending = len(futures)
    errors: list[BaseException] = []

    def done(future: asyncio.Future[None]) -> None:
        nonlocal pending
        pending -= 1
        error = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if error is not None:
            errors.append(error)
        if pending == 0 and not combined.done():
            if errors:
                combined.set_exception(errors[0])
            else:
                combined.set_result(None)

    if not futures:
        combined.set_result(None)
    for future in futures:
        future.add_done_callback(done)
    return combined


class RuleConsumer:
    """Consumes the owned rule partitions: forwards in, rules, commit, then PUBACK."""

    def __init__(
        self,
        options: SourceOptions,
        rules: PartitionedRuleStage,
        persister: Persister,
        lookup: Callable[[str], DeviceInfo | None],
    ) -> None:
        self.source = MqttSource(options)
        self.rules = rules
        self.persister = persister
        self._lookup = lookup
        self.readings = 0
        self.rejected = 0
        self.acked_batches = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set, then acknowledge what was committed."""
        await self.source.start()
        unacked: deque[tuple[asyncio.Future[None], Batch]] = deque()
        try:
            while not stopping.is_set():
                batch = await self.source.next_batch(timeout=0.2)
                await self._ack_ready(unacked, block=batch is None and bool(unacked))
                if batch is None:
                    continue
                outcome = self.evaluate(batch)
                job = PersistJob(b"", [], outcome or None)
                unacked.append((asyncio.wrap_future(self.persister.submit(job)), batch))
                while len(unacked) >= MAX_UNACKED_RULE_BATCHES:
                    await self._ack_ready(unacked, block=True)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while unacked and time.monotonic() < deadline:
                await self._ack_ready(unacked, block=True)
        finally:
            await self.source.stop()

    def evaluate(self, batch: Batch) -> Outcome:
        """Decode a batch of forward messages and run the rules on its readings."""
        readings: list[tuple[DeviceInfo, Forwarded]] = []
        for topic, payload in zip(batch.topics, batch.payloads, strict=True):
            try:
                rows = decode_forward(payload)
            except ForwardError as err:
                # Only gateways publish here; a bad message is a bug, not data to retry.
                log.error("dropping forward on %s: %s", topic.decode("utf-8", "replace"), err)
                self.rejected += 1
                continue
            for row in rows:
                info = self._lookup(row.device_id)
                if info is None or not self.rules.owns(row.device_id):
                    log.warning("forwarded reading of %s is not ours to evaluate", row.device_id)
                    self.rejected += 1
                    continue
                readings.append((info, row))
        self.readings += len(readings)
        return self.rules.observe_forwarded(readings, batch.received_ns)

    async def _ack_ready(
        self, unacked: deque[tuple[asyncio.Future[None], Batch]], block: bool
    ) -> None:
        if block and unacked:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(unacked[0][0]), 0.5)
        while unacked and unacked[0][0].done():
            future, batch = unacked.popleft()
            if future.exception() is None:
                self.source.ack(batch)
                self.acked_batches += 1


def shared_source_options(settings: Settings, options: SourceOptions) -> SourceOptions:
    """The device subscription of a worker: shared, with a session of its own.

    The connection is never paused: it also carries the PUBACKs of our forwards, which the
    batches waiting to be acknowledged depend on (pausing it would deadlock). Memory stays
    bounded all the same: at QoS 1 the broker keeps at most our Receive Maximum messages
    unacknowledged, and every queued batch holds at least one of them.
    """
    return replace(
        options,
        max_queued_batches=options.connect.receive_maximum + 1,
        topic_filters=tuple(f"$share/{settings.share_group}/{f}" for f in options.topic_filters),
        connect=replace(options.connect, client_id=f"{settings.client_id}-{settings.worker_index}"),
    )


def rule_consumer_options(settings: Settings, owned: Iterable[int]) -> SourceOptions:
    """The partition subscription of a worker: its own persistent session, QoS 1."""
    return SourceOptions(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        topic_filters=tuple(partition_topic(settings.share_group, p) for p in sorted(owned)),
        qos=1,
        connect=ConnectOptions(
            client_id=f"{settings.client_id}-rules-{settings.worker_index}",
            receive_maximum=settings.receive_maximum,
            username=settings.mqtt_username,
            password=settings.mqtt_password,
        ),
        batch_max=settings.batch_max,
        linger_s=settings.linger_ms / 1000,
    )
