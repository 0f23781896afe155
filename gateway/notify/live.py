"""Server-sent events: a hub that fans gateway events out to live web pages.

:meth:`EventHub.publish` may be called from any thread and never blocks: it encodes the
event once, gives it an id ``<epoch>-<seq>``, keeps it in a ring buffer and schedules the
fan-out on the hub's event loop (``call_soon_threadsafe``). Every subscriber owns a bounded
``asyncio.Queue``; a slow subscriber loses its oldest events, counted and announced to it by
an SSE comment line, and never slows anybody else.

A reconnecting browser sends ``Last-Event-ID``; the hub replays what followed it from the
ring buffer. The epoch changes when the process restarts, so an id from an earlier run
replays the whole buffer. A comment line says so when events between were already gone.

The hub knows nothing of HTTP frameworks; with FastAPI/Starlette::

    StreamingResponse(
        hub.stream(accept=scope_filter, last_event_id=request.headers.get("last-event-id")),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

log = logging.getLogger(__name__)

Event = Mapping[str, Any]
EventFilter = Callable[[Event], bool]

SSE_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_HINT: Final = b"retry: 3000\n\n"
KEEPALIVE: Final = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: int
    event: Event
    frame: bytes


def format_frame(event_id: str, kind: str, data: bytes) -> bytes:
    """One SSE frame: ``id:``, ``event:`` and ``data:`` lines and a blank line."""
    kind = " ".join(kind.split()) or "message"  # a line break would end the field
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), kind.encode(), data)


class Subscription:
    """One subscriber: a bounded queue the hub fills on its loop, plus what it lost."""

    def __init__(self, hub: EventHub, accept: EventFilter | None, maxsize: int) -> None:
        # Bounded by offer() to ``maxsize`` events; the closing None always fits on top.
        self.queue: asyncio.Queue[_Entry | None] = asyncio.Queue()
        self.maxsize = maxsize
        self.dropped = 0
        self.gap = False  # Last-Event-ID replay could not cover everything missed
        self._hub = hub
        self._accept = accept
        self._after = 0  # events up to this seq came through the backlog (or were before us)
        self._backlog: list[_Entry] = []
        self.closing: bytes | None = None  # the last comment, when stopped

    def wants(self, event: Event) -> bool:
        """Apply the subscriber's filter; a filter that raises counts as "no"."""
        if self._accept is None:
            return True
        try:
            return bool(self._accept(event))
        except Exception:
            log.exception("SSE filter raised; event %r not sent", event.get("type"))
            return False

    def offer(self, entry: _Entry) -> None:
        """Queue ``entry`` if wanted, dropping the oldest queued one when full (loop only)."""
        if entry.seq <= self._after or not self.wants(entry.event):
            return
        if self.queue.qsize() >= self.maxsize:
            self.queue.get_nowait()
            self.dropped += 1
            self._hub.dropped += 1
        self.queue.put_nowait(entry)

    def end(self) -> None:
        """Make :meth:`frames` finish after what is queued (loop only)."""
        self.queue.put_nowait(None)

    def stop(self, reason: str) -> None:
        """End :meth:`frames` now, dropping what is queued, with a last comment saying why
        (loop only): the subscriber may no longer see these events."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.closing = b": stream closed: %s\n\n" % " ".join(reason.split()).encode()
        self.queue.put_nowait(None)
        self.close()

    def close(self) -> None:
        """Unsubscribe from the hub (loop only)."""
        self._hub._subscribers.discard(self)

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """SSE bytes: a retry hint, the replay, then live events and idle keep-alives.

        Ends when the hub closes; unsubscribes when it ends or the consumer stops.
        """
        try:
            yield RETRY_HINT
            if self.gap:
                yield b": replay incomplete, some earlier events are no longer kept\n\n"
            backlog, self._backlog = self._backlog, []
            for entry in backlog:
                if self.closing is not None:
                    break  # stopped during the replay: the loop below says why
                yield entry.frame
            reported = 0
            while True:  # bounded by the hub closing or the consumer leaving
                try:
                    item = await asyncio.wait_for(self.queue.get(), self._hub.keepalive_s)
                except TimeoutError:
                    yield KEEPALIVE
                    continue
                if self.dropped > reported:
                    yield b": dropped %d events\n\n" % (self.dropped - reported)
                    reported = self.dropped
                if item is None:
                    if self.closing is not None:
                        yield self.closing
                    return
                yield item.frame
        finally:
            self.close()


class EventHub:
    """Fan-out of gateway events to SSE subscribers, with ``Last-Event-ID`` replay."""

    def __init__(
        self,
        *,
        replay_size: int = 1000,
        queue_size: int = 256,
        keepalive_s: float = 15.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if replay_size < 1 or queue_size < 1 or keepalive_s <= 0:
            raise ValueError("replay_size, queue_size and keepalive_s must be positive")
        self.epoch = secrets.token_hex(4)
        self.keepalive_s = keepalive_s
        self.dropped = 0  # events lost by slow subscribers, all time
        self._queue_size = queue_size
        self._lock = threading.Lock()  # guards _seq, _ring, _loop, _closed
        self._seq = 0
        self._ring: deque[_Entry] = deque(maxlen=replay_size)
        self._loop = loop
        self._closed = False
        self._subscribers: set[Subscription] = set()  # touched on the loop only

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the event loop that serves subscribers (else the first subscriber's)."""
        with self._lock:
            self._loop = loop

    def publish(self, event: Event) -> str | None:
        """Record and fan out ``event``; any thread, never blocks. Returns its SSE id."""
        event = dict(event)
        try:
            data = orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as err:
            log.warning("SSE: event %r not serialisable, not sent: %s", event.get("type"), err)
            return None
        kind = str(event.get("type") or "message")
        with self._lock:
            self._seq += 1
            event_id = f"{self.epoch}-{self._seq}"
            entry = _Entry(self._seq, event, format_frame(event_id, kind, data))
            self._ring.append(entry)
            # Scheduling under the lock keeps fan-out in id order across publishing threads.
            if self._loop is not None and not self._closed:
                try:
                    self._loop.call_soon_threadsafe(self._fan_out, entry)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    log.debug("SSE: loop closed, event %s kept for replay only", event_id)
        return event_id

    def subscribe(
        self, accept: EventFilter | None = None, last_event_id: str | None = None
    ) -> Subscription:
        """A new subscriber, with the replay after ``last_event_id``; call on the loop."""
        loop = asyncio.get_running_loop()
        sub = Subscription(self, accept, self._queue_size)
        with self._lock:
            if self._loop is None:
                self._loop = loop
            elif self._loop is not loop:
                raise RuntimeError("EventHub is bound to another event loop")
            after, sub.gap = self._replay_start(last_event_id)
            candidates = [e for e in self._ring if e.seq > after]
            sub._after = self._seq
            closed = self._closed
        sub._backlog = [e for e in candidates if sub.wants(e.event)]
        if closed:
            sub.end()
        else:
            self._subscribers.add(sub)
        return sub

    async def stream(
        self, accept: EventFilter | None = None, last_event_id: str | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Subscribe and yield SSE bytes until the hub closes or the consumer stops."""
        async with contextlib.aclosing(self.subscribe(accept, last_event_id).frames()) as frames:
            async for frame in frames:
                yield frame

    def close(self) -> None:
        """End every stream (after what it has queued); later subscribers end at once."""
        with self._lock:
            self._closed = True
            loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._end_all()
        else:
            with contextlib.suppress(RuntimeError):  # loop already closed: nothing to end
                loop.call_soon_threadsafe(self._end_all)

    def stats(self) -> dict[str, int]:
        """Counters for metrics: published, subscribers, dropped, buffered (replayable)."""
        with self._lock:
            return {
                "published": self._seq,
                "subscribers": len(self._subscribers),
                "dropped": self.dropped,
                "buffered": len(self._ring),
            }

    def _replay_start(self, last_event_id: str | None) -> tuple[int, bool]:
        """The seq after which to replay, and whether events in between are gone (locked)."""
        if not last_event_id:
            return self._seq, False  # a new client: live events only
        epoch, _, seq_text = last_event_id.strip().rpartition("-")
        oldest = self._ring[0].seq if self._ring else self._seq + 1
        if epoch != self.epoch or not seq_text.isdigit():
            return 0, oldest > 1  # an id from an earlier run: all we hold is news
        seq = int(seq_text)
        if seq >= self._seq:
            return self._seq, False
        return seq, seq + 1 < oldest

    def _fan_out(self, entry: _Entry) -> None:
        for sub in list(self._subscribers):
            sub.offer(entry)

    def _end_all(self) -> None:
        for sub in list(self._subscribers):
            sub.end()
        self._subscribers.clear()
