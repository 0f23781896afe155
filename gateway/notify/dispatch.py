"""Deliver alert and work-order events to people: chat-bot webhooks and e-mail.

The ingest path calls :meth:`Dispatcher.publish`, which only filters and enqueues: every
channel owns a bounded queue and a worker thread, a full queue counts the event as dropped
instead of blocking, and a slow or dead endpoint delays only its own channel. Workers retry
retryable failures with jittered exponential backoff, bounded in attempts and total time.

Webhook bodies and signatures (generic ``X-SCC-Signature`` HMAC headers, DingTalk's and
Feishu's own schemes) are built by :func:`gateway.notify.templates.webhook_request`.
"""

from __future__ import annotations

import http.client
import logging
import queue
import random
import smtplib
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.core.backoff import Backoff
from gateway.notify.templates import (
    RATE_LIMIT_CODES,
    TEMPLATES,
    ChannelFilter,
    Event,
    Template,
    bot_answer_code,
    build_email,
    retry_after_seconds,
    verify_signature,
    webhook_request,
)

__all__ = [
    "Channel",
    "ChannelFilter",
    "Dispatcher",
    "EmailNotifier",
    "Notifier",
    "NotifyError",
    "NotifySkipped",
    "RetryPolicy",
    "WebhookNotifier",
    "verify_signature",
]

log = logging.getLogger(__name__)

COUNTERS: Final = ("sent", "failed", "retried", "dropped", "skipped")
_IDLE_POLL_S: Final = 0.2
_MAX_RESPONSE_BYTES: Final = 64 * 1024
_RETRY_STATUS: Final = frozenset({408, 425, 429})


class NotifyError(Exception):
    """A delivery failed; ``retryable`` tells whether trying again later may succeed."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class NotifySkipped(Exception):  # noqa: N818 - a signal to count, not an error
    """The event holds nothing for this channel (e.g. no e-mail recipient); not a failure."""


class Notifier(Protocol):
    """Delivers one event, synchronously, on a dispatcher worker thread."""

    def send(self, event: Event) -> None:
        """Deliver ``event``; raise :class:`NotifyError` or :class:`NotifySkipped`."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries: attempts, exponential backoff with jitter, total time per event."""

    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_total_s: float = 300.0
    retry_after_cap_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or min(self.base_delay_s, self.max_total_s) <= 0:
            raise ValueError("max_attempts >= 1 and positive delays are required")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed ``attempt`` (1-based); Retry-After (capped) is a floor."""
        # "equal jitter": spread, but never instant
        wait = Backoff(self.base_delay_s, self.max_delay_s, "equal").delay(attempt, rng)
        if retry_after is not None:
            wait = max(wait, min(max(retry_after, 0.0), self.retry_after_cap_s))
        return wait


@dataclass(frozen=True, slots=True)
class Channel:
    """A named destination: a notifier, the events it wants, and its queue size."""

    name: str
    notifier: Notifier
    filter: ChannelFilter = field(default_factory=ChannelFilter)
    queue_size: int = 1000


@dataclass(slots=True)
class _Worker:
    channel: Channel
    queue: queue.Queue[dict[str, Any]]
    counts: dict[str, int]
    thread: threading.Thread | None = None


class Dispatcher:
    """Routes events to channels, each with a bounded queue, a worker thread and counters."""

    def __init__(
        self,
        channels: Sequence[Channel],
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate channel names in {names}")
        self.policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # guards the counters
        self._workers = [
            _Worker(c, queue.Queue(maxsize=c.queue_size), dict.fromkeys(COUNTERS, 0))
            for c in channels
        ]
        self._closing = threading.Event()
        self._deadline: float | None = None

    def __enter__(self) -> Dispatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start one worker thread per channel (idempotent)."""
        for worker in self._workers:
            if worker.thread is None and not self._closing.is_set():
                name = f"notify-{worker.channel.name}"
                worker.thread = threading.Thread(target=self._run, args=(worker,), name=name)
                worker.thread.daemon = True  # a hung endpoint must not hold up process exit
                worker.thread.start()

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every channel that wants it. Never blocks; full queues drop."""
        copy = dict(event)  # later changes by the caller must not reach the workers
        for worker in self._workers:
            if not worker.channel.filter.accepts(copy):
                continue
            try:
                if self._closing.is_set():
                    raise queue.Full
                worker.queue.put_nowait(copy)
            except queue.Full:
                dropped = self._count(worker, "dropped")
                if dropped == 1 or dropped % 1000 == 0:
                    log.warning("notify %s: queue full, %d dropped", worker.channel.name, dropped)

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per channel: sent, failed, retried, dropped, skipped (plus ``queued``)."""
        with self._lock:
            return {w.channel.name: {**w.counts, "queued": w.queue.qsize()} for w in self._workers}

    def close(self, timeout: float = 10.0) -> int:
        """Stop accepting events and deliver what is queued until ``timeout`` seconds pass.

        Returns how many queued events were abandoned (also counted as dropped).
        """
        if not self._closing.is_set():
            self._deadline = time.monotonic() + max(0.0, timeout)
            self._closing.set()
        deadline = self._deadline or time.monotonic()
        for worker in self._workers:
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - time.monotonic()))
        abandoned = 0
        for worker in self._workers:
            left = _discard_all(worker.queue)
            if left:
                self._count(worker, "dropped", left)
                log.warning("notify %s: %d events abandoned at close", worker.channel.name, left)
            abandoned += left
        return abandoned

    def _count(self, worker: _Worker, name: str, n: int = 1) -> int:
        with self._lock:
            worker.counts[name] += n
            return worker.counts[name]

    def _run(self, worker: _Worker) -> None:
        # Runs until close(): then drains the queue until it is empty or the deadline passes.
        while True:
            if self._closing.is_set():
                if time.monotonic() >= (self._deadline or 0.0):
                    return
                try:
                    event = worker.queue.get_nowait()
                except queue.Empty:
                    return
            else:
                try:
                    event = worker.queue.get(timeout=_IDLE_POLL_S)
                except queue.Empty:
                    continue
            self._deliver(worker, event)

    def _deliver(self, worker: _Worker, event: Event) -> None:
        name, kind, started = worker.channel.name, event.get("type"), time.monotonic()
        for attempt in range(1, self.policy.max_attempts + 1):
            try:
                worker.channel.notifier.send(event)
            except NotifySkipped as skip:
                log.debug("notify %s: skipped %s: %s", name, kind, skip)
                self._count(worker, "skipped")
            except NotifyError as err:
                if self._retry_later(err, attempt, started):
                    self._count(worker, "retried")
                    continue
                log.warning("notify %s: gave up on %s at attempt %d: %s", name, kind, attempt, err)
                self._count(worker, "failed")
            except Exception:  # a notifier bug must not kill the worker
                log.exception("notify %s: notifier raised unexpectedly", name)
                self._count(worker, "failed")
            else:
                log.debug("notify %s: sent %s", name, kind)
                self._count(worker, "sent")
            return

    def _retry_later(self, err: NotifyError, attempt: int, started: float) -> bool:
        """Wait out the backoff and return True if ``err`` deserves another attempt."""
        if not err.retryable or attempt >= self.policy.max_attempts:
            return False
        delay = self.policy.delay(attempt, err.retry_after, self._rng)
        if time.monotonic() - started + delay > self.policy.max_total_s:
            return False
        log.debug("notify attempt %d failed (%s), retrying in %.2fs", attempt, err, delay)
        return self._backoff(delay)

    def _backoff(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when close()'s deadline would pass first."""
        wake_at = time.monotonic() + seconds
        if self._deadline is not None and wake_at > self._deadline:
            return False
        if self._closing.wait(seconds):  # close() was called while we slept
            if self._deadline is not None and wake_at > self._deadline:
                return False
            time.sleep(max(0.0, wake_at - time.monotonic()))
        return True


class WebhookNotifier:
    """POSTs events as JSON to a webhook: generic (the event) or a chat-bot template."""

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        template: Template = "generic",
        timeout: float = 10.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._parts = urllib.parse.urlsplit(url)
        if self._parts.scheme not in ("http", "https") or not self._parts.hostname:
            raise ValueError("webhook url must be http(s)://host/...")
        if template not in TEMPLATES:
            raise ValueError(f"template {template!r} not in {TEMPLATES}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.template, self.timeout = template, timeout
        self._secret = secret or None
        self._clock = clock
        self._tls = ssl.create_default_context() if self._parts.scheme == "https" else None

    def __repr__(self) -> str:
        # The URL path/query often carries the bot token: show the host only.
        return f"WebhookNotifier({self._parts.hostname}, template={self.template!r})"

    def build_request(self, event: Event) -> tuple[str, bytes, dict[str, str]]:
        """Request target (path and query), JSON body and headers for ``event``, signed."""
        try:
            params, body, headers = webhook_request(
                event, self.template, self._secret, self._clock()
            )
        except TypeError as err:
            raise NotifyError(f"event not serialisable: {err}", retryable=False) from err
        query = "&".join(q for q in (self._parts.query, urllib.parse.urlencode(params)) if q)
        return (self._parts.path or "/") + (f"?{query}" if query else ""), body, headers

    def send(self, event: Event) -> None:
        """POST one event; connection errors, timeouts, 408/429/5xx and bot rate limits retry."""
        target, body, headers = self.build_request(event)
        host, port = self._parts.hostname or "", self._parts.port
        conn: http.client.HTTPConnection
        if self._tls is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            status, answer = response.status, response.read(_MAX_RESPONSE_BYTES)
            retry_after = retry_after_seconds(response.headers, time.time())
        except ssl.SSLCertVerificationError as err:
            raise NotifyError(f"{self!r}: {err}", retryable=False) from err
        except (OSError, http.client.HTTPException) as err:
            raise NotifyError(f"{self!r}: {type(err).__name__}: {err}", retryable=True) from err
        finally:
            conn.close()
        code = None if self.template == "generic" else bot_answer_code(answer)
        what = f"{self!r}: HTTP {status}" + (f", code {code}" if code else "")
        if code in RATE_LIMIT_CODES or status in _RETRY_STATUS or status >= 500:
            raise NotifyError(what, retryable=True, retry_after=retry_after)
        if not 200 <= status < 300 or code:
            raise NotifyError(f"{what}: {answer[:200]!r}", retryable=False)


class EmailNotifier:
    """Sends one plain-text UTF-8 e-mail per event to the event's recipients, via SMTP."""

    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "scc-gateway@localhost",
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
        *,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if "@" not in sender:
            raise ValueError(f"sender {sender!r} is not an e-mail address")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.host, self.port, self.sender = host, port, sender
        self.timeout, self.starttls = timeout, starttls
        self._username, self._password = username, password
        self._tls = tls_context

    def __repr__(self) -> str:
        return f"EmailNotifier({self.host}:{self.port})"

    def send(self, event: Event) -> None:
        """Deliver ``event``; :class:`NotifySkipped` when no recipient has an address."""
        msg = build_email(event, self.sender)
        if msg is None:
            raise NotifySkipped("no recipient with an e-mail address")
        to = [str(addr.addr_spec) for addr in msg["To"].addresses]
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self._tls or ssl.create_default_context())
                if self._username is not None and self._password is not None:
                    smtp.login(self._username, self._password)
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=to)
        except smtplib.SMTPRecipientsRefused as err:
            transient = all(400 <= code < 500 for code, _ in err.recipients.values())
            raise NotifyError(f"{self!r}: all recipients refused", retryable=transient) from err
        except smtplib.SMTPResponseException as err:
            raise NotifyError(
                f"{self!r}: {err.smtp_code} {err.smtp_error!r}",
                retryable=400 <= err.smtp_code < 500,
            ) from err
        except smtplib.SMTPNotSupportedError as err:
            raise NotifyError(f"{self!r}: {err}", retryable=False) from err
        except (smtplib.SMTPException, OSError) as err:
            raise NotifyError(f"{self!r}: {type(err).__name__}: {err}", retryable=True) from err
        if refused:
            log.warning("%r: some recipients refused: %s", self, sorted(refused))


def _discard_all(items: queue.Queue[dict[str, Any]]) -> int:
    """Empty ``items`` without blocking; return how many were taken."""
    taken = 0
    for _ in range(items.qsize()):
        try:
            items.get_nowait()
        except queue.Empty:
            break
        taken += 1
    return taken
