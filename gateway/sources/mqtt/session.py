"""Keeping one MQTT connection up: connect, subscribe, keep alive, reconnect with backoff.

The base of the MQTT source (gateway.sources.mqtt.source), which adds what is done with the
messages.
A connection that got as far as its subscription resets the backoff, whatever ended it, and
one that lasted a while is tried again at once (a takeover of our client id by another client
then costs a moment). CONNACK and SUBACK are awaited together with the end of the connection, so
a refused or dropped connection leaves no future with an exception nobody retrieves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.core.backoff import Backoff, Retry
from gateway.sources.mqtt import wire
from gateway.sources.mqtt.protocol import Connection

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: A connection that lasted this long is tried again at once when it ends.
STABLE_SESSION_S = 1.0


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Where and how the gateway subscribes."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic_filters: tuple[str, ...] = ("scc/v1/+/+",)
    qos: int = 1
    connect: wire.ConnectOptions = field(
        default_factory=lambda: wire.ConnectOptions(client_id="scc-gateway")
    )
    batch_max: int = 5000
    linger_s: float = 0.02
    # A message on a topic ending so (an alarm, a fault) seals its batch after this much
    # instead: events are rare and somebody waits for them; telemetry can wait for company.
    urgent_suffixes: tuple[bytes, ...] = (b"/event",)
    urgent_linger_s: float = 0.0
    max_queued_batches: int = 8
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    connect_timeout_s: float = 10.0
    retain_handling: int = wire.RETAIN_ON_NEW_SUBSCRIPTION
    #: Longer payloads are refused as oversized and never buffered whole; by default there
    #: is no limit of our own (internal forwards), the device subscription sets one.
    max_payload_bytes: int = wire.MAX_REMAINING_LENGTH
    max_buffered_bytes: int = 64 << 20  # unacknowledged bytes before reading pauses


class MqttSession:
    """Connects, subscribes and reconnects; subclasses handle what the connection reads."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self._proto: Connection | None = None
        self._generation = 0
        self._stopping = False
        self._session_ok = False  # the current connection got as far as its subscription
        self._subscribed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.takeovers = 0  # DISCONNECTs "session taken over": our client id used elsewhere
        self.sessions_lost = 0  # connects that found no session of ours at the broker
        self.session_errors = 0  # sessions ended by an unexpected exception (a bug)

    # -- hooks -------------------------------------------------------------------------
    def _connection(self) -> Connection:
        """A protocol object for a new connection."""
        raise NotImplementedError

    def _connection_started(self) -> None:
        """A new connection is up (before CONNECT)."""

    def _connection_ended(self) -> None:
        """The connection is gone."""

    def _subscribed(self, connack: wire.Connack, transport: asyncio.Transport) -> None:
        """The subscription is in place."""

    def _session_lost(self) -> None:
        """The broker had no session for us."""

    def _on_event(self, name: str) -> None:
        """A lifecycle event (``reconnect``)."""

    @property
    def _paused(self) -> bool:
        """Whether reading is paused on purpose (the broker's silence is then expected)."""
        return False

    def _on_disconnect(self, reason: int) -> None:
        why = wire.DISCONNECT_REASONS.get(reason, "unknown reason")
        if reason == wire.SESSION_TAKEN_OVER:
            self.takeovers += 1
            log.error(
                "broker sent DISCONNECT 0x%02x (%s: %s)",
                reason,
                why,
                self.options.connect.client_id,
            )
        else:
            log.warning("broker sent DISCONNECT (reason 0x%02x: %s)", reason, why)

    @property
    def generation(self) -> int:
        """Number of the current connection (a batch of an older one cannot be acked)."""
        return self._generation

    def drop_connection(self) -> None:
        """Close the connection (it is re-established): unacknowledged messages come again."""
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    # -- connection lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._task = asyncio.create_task(self._run(), name="mqtt-source")

    async def wait_connected(self, timeout: float) -> None:
        """Wait for the first successful subscription; TimeoutError otherwise."""
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def stop(self) -> None:
        """Disconnect cleanly; unacknowledged messages stay with the broker's session."""
        self._stopping = True
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.write(wire.DISCONNECT_NORMAL)
            proto.transport.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        opts = self.options
        # Full jitter keeps a fleet of gateways from reconnecting in lockstep.
        retry = Retry(Backoff(opts.reconnect_min_s, opts.reconnect_max_s, jitter="full"))
        while not self._stopping:
            self._session_ok = False
            try:
                await self._session()
            except (OSError, ConnectionError, TimeoutError, wire.ProtocolError) as err:
                log.warning("MQTT %s:%s: %s", opts.host, opts.port, err)
            except Exception:
                # A bug of ours must not end ingest for good (nor leave ``connected`` set
                # for readiness): say so with the traceback, count it, connect again.
                self.session_errors += 1
                self._session_ok = False
                log.exception("MQTT session failed unexpectedly; reconnecting")
            self.connected.clear()
            if self._stopping:
                break
            if self._session_ok:
                # The connection worked: whatever ended it (a broker restart, a takeover of
                # our client id), start the backoff afresh rather than where it last was,
                # and after a stable one try again at once: if another client took our id,
                # what devices publish goes to it or nowhere while it holds it (Mosquitto
                # 2.0 closes a taken-over connection without saying so). Not after a short
                # one: two clients taking one id from each other would spin.
                retry.reset()
            wait = retry.next_delay()
            if self._session_ok and time.monotonic() - self._subscribed_at >= STABLE_SESSION_S:
                wait = 0.0
            await asyncio.sleep(wait)
            self.reconnects += 1
            self._on_event("reconnect")

    async def _session(self) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(self._connection, opts.host, opts.port),
            opts.connect_timeout_s,
        )
        assert isinstance(proto, Connection)
        transport = proto.transport
        assert transport is not None
        # Messages of the previous connection that were not acknowledged will be redelivered.
        self._generation += 1
        self._connection_started()
        self._proto = proto
        try:
            await self._subscribe(proto, transport)
            self._session_ok = True
            self._subscribed_at = time.monotonic()
            self.connected.set()
            await self._keepalive(proto)
        finally:
            transport.close()
            self._connection_ended()
            self._proto = None

    async def _subscribe(self, proto: Connection, transport: asyncio.Transport) -> None:
        opts = self.options
        transport.write(wire.connect_packet(opts.connect))
        connack = await self._answer(proto, proto.connack, "CONNACK")
        if connack.reason_code != 0:
            why = wire.CONNACK_REASONS.get(connack.reason_code, "refused")
            raise ConnectionError(f"broker refused connection: {why}")
        if not connack.session_present:
            self._on_new_session()
        packet = wire.subscribe_packet(1, list(opts.topic_filters), opts.qos, opts.retain_handling)
        transport.write(packet)
        codes = await self._answer(proto, proto.suback, "SUBACK")
        if any(code >= 0x80 for code in codes):
            raise ConnectionError(f"broker refused subscription: codes {codes}")
        limit = connack.maximum_packet_size
        log.info(
            "subscribed to %s on %s:%s (session present: %s; broker accepts packets up to %s)",
            ",".join(opts.topic_filters),
            opts.host,
            opts.port,
            connack.session_present,
            "any size" if limit is None else f"{limit} bytes",
        )
        self._subscribed(connack, transport)

    def _on_new_session(self) -> None:
        """The broker kept no session for us: what it had queued for us is gone."""
        self._session_lost()
        if self._generation > 1:
            self.sessions_lost += 1
            log.warning(
                "broker has no session for client id %s any more (expired, or wiped by a "
                "client that connected with our id and a clean start): messages it had "
                "queued for us are lost",
                self.options.connect.client_id,
            )

    async def _answer(self, proto: Connection, future: asyncio.Future[_T], what: str) -> _T:
        """Wait for ``future`` or the end of the connection, whichever comes first."""
        timeout = self.options.connect_timeout_s
        waiters: set[asyncio.Future[Any]] = {future, proto.closed}
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            return future.result()
        if proto.closed.done():
            raise ConnectionError(f"connection closed by the broker before {what}")
        raise TimeoutError(f"no {what} within {timeout:g} s")

    async def _keepalive(self, proto: Connection) -> None:
        keepalive = self.options.connect.keepalive_s or 60
        transport = proto.transport
        assert transport is not None
        while not proto.closed.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.closed), keepalive / 2)
            if proto.closed.done():
                break
            idle = time.monotonic() - proto.last_rx
            if idle > keepalive * 1.5 and not self._paused:
                raise ConnectionError(f"no traffic from broker for {idle:.0f} s")
            transport.write(wire.PINGREQ)
        raise ConnectionError("connection closed by broker")
