"""The source interface: what a source hands out (batches of messages, and the messages it
refused itself) and what the running service asks of it (:class:`Source`). The MQTT source
(``gateway.sources.mqtt``) is the first one; an HTTP push, LoRaWAN or NATS source implements
the same and the pipeline does not notice.

What a retained message means to us: we subscribe with Retain As Published off, so the
broker clears the RETAIN flag on all it forwards live, including what it queued in our
session while we were away. A delivery with RETAIN set therefore comes from the broker's
retained store, sent because our subscription is new (Retain Handling 1: never on the
resubscription of a session the broker kept, so a plain restart gets none; but after the
session was lost or on the first start, every retained topic comes). It is a topic's last
retained message, of unknown age, most likely processed when it was published: ingesting it
again would store a point again (at a new receive time if it has no ``ts``) and could raise
an alert resolved long ago. So it is refused, kept as a dead letter ``retained`` (counted,
listed, and fed in by ``deadletter replay`` if it was in fact new).

Oversized messages (gateway.sources.mqtt.large) are refused the same way, as ``oversized``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

#: Message ``i`` of a batch was received at ``received_ns + i * RECEIVE_STEP_NS``, so that
#: readings without a device ``ts`` of one device in one batch are distinct points.
RECEIVE_STEP_NS = 1000

RETAINED_DETAIL = (
    "delivered from the broker's retained store (RETAIN flag): the topic's last retained "
    "message, of unknown age and most likely processed when it was published; not ingested "
    "(replay it if it is new)"
)


@dataclass(frozen=True, slots=True)
class Refused:
    """A message the source itself refuses (never decoded): kept as a dead letter."""

    position: int  # it arrived before message ``position`` of its batch
    topic: bytes
    mid: int
    reason: str  # "oversized" or "retained"
    detail: str
    payload: bytes  # the whole payload, or the first bytes of an oversized one


@dataclass(slots=True)
class Batch:
    """Messages received together; ``mids`` holds QoS 1 packet ids still to acknowledge
    (the refused messages' too), in the order they arrived."""

    topics: list[bytes]
    payloads: list[bytes]
    mids: list[int]
    generation: int
    received_ns: int
    refused: list[Refused] = field(default_factory=list)
    #: index -> receive time kept from the first delivery of a redelivered message
    fixed_ts: dict[int, int] | None = None
    nbytes: int = 0  # counted against ``max_buffered_bytes`` until acknowledged

    def __len__(self) -> int:
        return len(self.payloads)


def ack_order(mids: list[int], refused: list[Refused]) -> list[int]:
    """The packet ids to acknowledge, in arrival order (MQTT 4.6: PUBACKs go out in order)."""
    if not refused:
        return [m for m in mids if m]
    out: list[int] = []
    done = 0
    for item in refused:
        out.extend(m for m in mids[done : item.position] if m)
        done = item.position
        if item.mid:
            out.append(item.mid)
    out.extend(m for m in mids[done:] if m)
    return out


class Source(Protocol):
    """Messages in, acknowledgement out once a batch is durable (DESIGN.md: one small
    interface, so the pipeline does not care where messages come from)."""

    @property
    def generation(self) -> int:
        """Which connection the batches come from now; a batch of an earlier one (its
        ``generation``) is not acknowledged but delivered again by the other side."""
        ...

    async def start(self) -> None:
        """Begin receiving (connect, subscribe; reconnect on its own while running)."""
        ...

    async def next_batch(self, timeout: float | None = None) -> Batch | None:
        """The next batch, or None when none came within ``timeout`` seconds."""
        ...

    def ack(self, batch: Batch) -> None:
        """The batch (and the messages it refused) is durable: acknowledge it upstream."""
        ...

    def drop_connection(self) -> None:
        """End the current connection so that what is unacknowledged comes again."""
        ...

    async def stop(self) -> None:
        """Stop receiving; what is unacknowledged stays with the other side."""
        ...
