"""The running gateway's counters and gauges as metric samples (``/metrics`` and the
``gateway_stats`` points): one walk over its parts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from gateway.alerting.rulestage import RuleStage
from gateway.core.metrics import Sample
from gateway.core.supervise import SupervisedThread
from gateway.runtime.persist import Persister
from gateway.runtime.readiness import Report
from gateway.runtime.workers import RuleConsumer
from gateway.sources.mqtt.source import MqttSource
from gateway.storage.deadletter import DeadLetterStore
from gateway.storage.drainer import Drainer
from gateway.storage.spool import Spool


@dataclass(slots=True)
class Counters:
    """Cumulative counts since start (exported as gateway_stats and /metrics)."""

    messages: Counter[str] = field(default_factory=Counter)
    points: int = 0
    batches: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    acked_batches: int = 0
    last_batch_size: int = 0
    last_batch_process_s: float = 0.0


class MeteredGateway(Protocol):
    """The parts of a running gateway its metrics are read from (``runtime.service.Gateway``
    is one; this module does not import it, which imports this one)."""

    @property
    def counters(self) -> Counters: ...
    @property
    def drainer(self) -> Drainer: ...
    @property
    def persister(self) -> Persister: ...
    @property
    def rules(self) -> RuleStage: ...
    @property
    def spool(self) -> Spool: ...
    @property
    def source(self) -> MqttSource: ...
    @property
    def dead_letters(self) -> DeadLetterStore: ...
    @property
    def threads(self) -> list[SupervisedThread]: ...
    @property
    def rule_consumer(self) -> RuleConsumer | None: ...
    def readiness(self) -> Report:
        """Whether every part ingest needs works."""
        ...


def gateway_samples(gw: MeteredGateway) -> list[Sample]:
    """Every counter and gauge of the gateway (for /metrics and gateway_stats)."""
    c = gw.counters
    d = gw.drainer.stats
    out = [
        Sample("scc_messages_total", n, (("kind", k),), help="valid messages by device kind")
        for k, n in sorted(c.messages.items())
    ]
    out += [
        Sample("scc_dead_letters_total", n, (("reason", r),), help="rejected messages by reason")
        for r, n in sorted(c.dead_letters.items())
    ]
    out += [
        Sample("scc_points_total", c.points, help="points spooled for InfluxDB"),
        Sample("scc_batches_total", c.batches, help="batches processed"),
        Sample("scc_acked_batches_total", c.acked_batches, help="batches acknowledged"),
        Sample("scc_persist_retries_total", gw.persister.retries, help="persist retries"),
        Sample("scc_persist_groups_total", gw.persister.groups, help="group commits"),
        Sample("scc_persist_group_jobs", gw.persister.last_group_jobs, kind="gauge"),
        Sample("scc_persist_commit_seconds", gw.persister.last_commit_s, kind="gauge"),
        Sample("scc_rules_eval_seconds", gw.rules.last_eval_s, kind="gauge"),
        Sample("scc_rule_transitions_total", gw.rules.transitions_total),
        Sample("scc_batch_size", c.last_batch_size, kind="gauge", help="last batch size"),
        Sample("scc_batch_process_seconds", c.last_batch_process_s, kind="gauge"),
        Sample(
            "scc_spool_bytes",
            gw.spool.depth_bytes(),
            kind="gauge",
            help="not yet in InfluxDB",
        ),
        Sample("scc_spool_full_waits_total", gw.spool.full_waits, help="appends that waited"),
        Sample(
            "scc_spool_append_errors_total",
            gw.spool.append_errors,
            help="spool appends that failed (none of their bytes kept, not acknowledged)",
        ),
        Sample("scc_spool_cursor_errors_total", gw.spool.cursor_errors),
        Sample(
            "scc_spool_quarantined_bytes_total",
            gw.spool.quarantined_bytes,
            help="unreadable spool bytes moved to quarantine/",
        ),
        Sample("scc_influx_stalled_seconds", gw.drainer.stalled_s(), kind="gauge"),
        Sample("scc_ready", int(gw.readiness().ready), kind="gauge", help="/health/ready"),
        Sample("scc_influx_written_lines_total", d.written_lines),
        Sample("scc_influx_write_requests_total", d.write_requests),
        Sample("scc_influx_write_retries_total", d.retries),
        Sample("scc_influx_rejected_lines_total", d.rejected_lines),
        Sample("scc_influx_write_batch_lines", d.last_batch_lines, kind="gauge"),
        Sample("scc_influx_write_batch_seconds", d.last_batch_seconds, kind="gauge"),
        Sample("scc_mqtt_reconnects_total", gw.source.reconnects),
        Sample(
            "scc_mqtt_takeovers_total",
            gw.source.takeovers,
            help="connections ended because another client used our client id",
        ),
        Sample(
            "scc_mqtt_sessions_lost_total",
            gw.source.sessions_lost,
            help="connects that found no session of ours at the broker",
        ),
        Sample(
            "scc_mqtt_session_errors_total",
            gw.source.session_errors,
            help="MQTT sessions ended by an unexpected exception (then reconnected)",
        ),
        Sample(
            "scc_mqtt_byte_pauses_total",
            gw.source.byte_pauses,
            help="socket reads paused by the buffered-bytes budget",
        ),
        Sample(
            "scc_dead_letter_bytes",
            gw.dead_letters.held_bytes(),
            kind="gauge",
            help="bytes held by the dead-letter store (bound: dead_letter_max_bytes)",
        ),
    ]
    out += [
        Sample(
            "scc_mqtt_refused_total",
            n,
            (("reason", reason),),
            help="deliveries refused by the MQTT source (kept as dead letters)",
        )
        for reason, n in sorted(gw.source.refused.items())
    ]
    out += [
        Sample(
            "scc_dead_letters_pruned_total",
            n,
            (("reason", reason),),
            help="dead letters removed to keep the store within its bound",
        )
        for reason, n in sorted(gw.dead_letters.pruned.items())
    ]
    out += [
        Sample(
            "scc_thread_restarts_total",
            thread.restarts,
            (("thread", thread.name),),
            help="unexpected exceptions that restarted a thread",
        )
        for thread in gw.threads
    ]
    if gw.rule_consumer is not None:
        rc = gw.rule_consumer
        out += [
            Sample("scc_forwards_acked_total", gw.source.publishes, help="rule forwards"),
            Sample("scc_forwarded_readings_total", rc.readings, help="readings evaluated"),
            Sample("scc_forwards_rejected_total", rc.rejected),
            Sample("scc_rule_batches_acked_total", rc.acked_batches),
        ]
    return out
