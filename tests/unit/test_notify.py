"""Notifications: webhook bodies and signatures, retries, dispatcher routing, SSE hub."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from gateway.notify.dispatch import (
    Channel,
    ChannelFilter,
    Dispatcher,
    EmailNotifier,
    NotifyError,
    NotifySkipped,
    RetryPolicy,
    WebhookNotifier,
    verify_signature,
)
from gateway.notify.live import KEEPALIVE, RETRY_HINT, EventHub, Subscription
from gateway.notify.templates import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    email_recipients,
    render_subject,
)
from gateway.services.base import free_port

ALERT: dict[str, Any] = {
    "type": "alert.firing",
    "at": "2026-11-28T10:00:00+00:00",
    "alert_id": 3,
    "rule_id": "smoke.fire_alarm",
    "title": "火警 / Fire alarm",
    "severity": "critical",
    "device_id": "smoke-B3-2-1001",
    "message": "smoke 0.41 ≥ 0.15",
    "node": "G1",
    "path": "ST1/SQ1/G1/C2/B3/B3-2",
    "recipients": [{"name": "王伟", "role": "grid_head", "email": "a@example.org"}],
}
NOW = 1_800_000_000.0
FAST = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05, max_total_s=5)


def event(kind: str, severity: str = "warning", **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "at": "2026-11-28T10:00:00+00:00",
        "title": kind,
        "severity": severity,
        "message": "m",
        **extra,
    }


# --- a local webhook receiver ---------------------------------------------------------


@dataclass
class Hook:
    """Records POSTs; answers from ``script`` in order, then with ``default``."""

    url: str = ""
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    default: tuple[int, dict[str, str], bytes] = (200, {}, b'{"errcode": 0, "code": 0}')
    delay_s: float = 0.0

    def answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((path, headers, body))
        return self.script.pop(0) if self.script else self.default


@pytest.fixture
def hook() -> Iterator[Hook]:
    rec = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, answer = rec.answer(self.path, headers, body)
            time.sleep(rec.delay_s)
            try:
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- webhook bodies and signatures -----------------------------------------------------


def test_generic_body_is_the_event_and_signature_verifies(hook: Hook) -> None:
    WebhookNotifier(f"{hook.url}/in", secret="s3cret", clock=lambda: NOW).send(ALERT)
    path, headers, body = hook.requests[0]
    assert path == "/in" and orjson.loads(body) == ALERT
    assert headers["content-type"].startswith("application/json")
    stamp, signature = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
    assert stamp == str(int(NOW)) and signature.startswith("sha256=")
    assert verify_signature("s3cret", stamp, body, signature, now=NOW + 10)


@pytest.mark.parametrize(
    ("secret", "stamp", "body", "signature_of", "now"),
    [
        ("wrong", "1800000000", b"{}", b"{}", NOW),  # other secret
        ("s3cret", "1800000000", b'{"x":1}', b"{}", NOW),  # tampered body
        ("s3cret", "1800000000", b"{}", b"{}", NOW + 301),  # too old
        ("s3cret", "18e8", b"{}", b"{}", NOW),  # malformed timestamp
    ],
)
def test_verify_signature_rejects(
    secret: str, stamp: str, body: bytes, signature_of: bytes, now: float
) -> None:
    from gateway.notify.templates import sign_body

    signature = sign_body("s3cret", int(NOW), signature_of)
    assert not verify_signature(secret, stamp, body, signature, max_age_s=300, now=now)
    assert not verify_signature("s3cret", str(int(NOW)), b"{}", "sha256=é", now=NOW)


def _b64_hmac(key: str, msg: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), msg.encode(), hashlib.sha256).digest()).decode()


@pytest.mark.parametrize("template", ["wecom", "dingtalk", "feishu"])
def test_chat_templates_shape_and_signing(hook: Hook, template: Any) -> None:
    notifier = WebhookNotifier(
        f"{hook.url}/bot?access_token=t0k", "SECx", template, clock=lambda: NOW
    )
    notifier.send(ALERT)
    path, headers, body = hook.requests[0]
    sent = orjson.loads(body)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert query["access_token"] == ["t0k"]
    if template == "wecom":
        assert sent["msgtype"] == "markdown" and set(sent) == {"msgtype", "markdown"}
        text = sent["markdown"]["content"]
        assert len(text.encode()) <= 4096 and '<font color="warning">' in text
        stamp, sig = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
        assert verify_signature("SECx", stamp, body, sig, now=NOW)
    elif template == "dingtalk":
        assert sent["msgtype"] == "markdown" and sent["markdown"]["title"]
        text = sent["markdown"]["text"]
        stamp_ms = int(NOW * 1000)
        assert query["timestamp"] == [str(stamp_ms)]
        assert query["sign"] == [_b64_hmac("SECx", f"{stamp_ms}\nSECx")]
    else:
        assert sent["msg_type"] == "text"
        text = sent["content"]["text"]
        assert sent["timestamp"] == str(int(NOW))
        assert sent["sign"] == _b64_hmac(f"{int(NOW)}\nSECx", "")
    for shown in (
        "火警 / Fire alarm",
        "smoke-B3-2-1001",
        "ST1/SQ1/G1/C2/B3/B3-2",
        "≥ 0.15",
        "2026-11-28",
    ):
        assert shown in text
    assert "CRITICAL" in text and "a@example.org" not in text


@pytest.mark.parametrize(
    ("template", "status", "answer", "retryable"),
    [
        ("generic", 200, b"", None),
        ("generic", 204, b"", None),
        ("generic", 500, b"", True),
        ("generic", 503, b"", True),
        ("generic", 429, b"", True),
        ("generic", 408, b"", True),
        ("generic", 400, b"", False),
        ("generic", 401, b"", False),
        ("generic", 404, b"", False),
        ("wecom", 200, b'{"errcode": 0, "errmsg": "ok"}', None),
        ("wecom", 200, b'{"errcode": 45009, "errmsg": "api freq out of limit"}', True),
        ("wecom", 200, b'{"errcode": 93000, "errmsg": "invalid webhook url"}', False),
        ("dingtalk", 200, b'{"errcode": 130101, "errmsg": "send too fast"}', True),
        ("dingtalk", 200, b'{"errcode": 310000, "errmsg": "sign not match"}', False),
        ("feishu", 400, b'{"code": 11232, "msg": "frequency limited"}', True),
        ("feishu", 200, b'{"code": 19021, "msg": "sign match fail"}', False),
        ("feishu", 200, b'{"code": 0, "msg": "success"}', None),
    ],
)
def test_status_classification(
    hook: Hook, template: Any, status: int, answer: bytes, retryable: bool | None
) -> None:
    hook.script.append((status, {"Retry-After": "7"}, answer))
    notifier = WebhookNotifier(hook.url, "k", template)
    if retryable is None:
        notifier.send(ALERT)
        return
    with pytest.raises(NotifyError) as caught:
        notifier.send(ALERT)
    assert caught.value.retryable is retryable
    if retryable:
        assert caught.value.retry_after == 7.0


def test_connection_refused_and_timeout_are_retryable(hook: Hook) -> None:
    with pytest.raises(NotifyError) as refused:
        WebhookNotifier(f"http://127.0.0.1:{free_port()}/x", timeout=2).send(ALERT)
    hook.delay_s = 1.0
    with pytest.raises(NotifyError) as slow:
        WebhookNotifier(hook.url, timeout=0.2).send(ALERT)
    assert refused.value.retryable and slow.value.retryable


# --- dispatcher ------------------------------------------------------------------------


def dispatch_one(notifier: WebhookNotifier, policy: RetryPolicy = FAST) -> dict[str, int]:
    dispatcher = Dispatcher([Channel("hook", notifier)], policy, random.Random(1))
    with dispatcher:
        dispatcher.publish(ALERT)
    return dispatcher.stats()["hook"]


def test_retries_500_and_429_then_succeeds(hook: Hook) -> None:
    hook.script += [(500, {}, b""), (429, {"Retry-After": "0"}, b"")]
    stats = dispatch_one(WebhookNotifier(hook.url, "k"))
    assert (stats["sent"], stats["retried"], stats["failed"], len(hook.requests)) == (1, 2, 0, 3)


def test_no_retry_on_400_and_bounded_attempts(hook: Hook) -> None:
    hook.script.append((400, {}, b"bad"))
    assert dispatch_one(WebhookNotifier(hook.url))["failed"] == 1
    assert len(hook.requests) == 1
    hook.default = (503, {}, b"")
    stats = dispatch_one(WebhookNotifier(hook.url), RetryPolicy(3, 0.01, 0.02, 5))
    assert (stats["failed"], stats["retried"], len(hook.requests)) == (1, 2, 4)


@pytest.mark.parametrize(
    ("attempt", "retry_after", "low", "high"),
    [
        (1, None, 0.5, 1.0),
        (3, None, 2.0, 4.0),
        (20, None, 30.0, 60.0),
        (1, 10.0, 10.0, 10.0),
        (1, 999.0, 120.0, 120.0),
    ],
)
def test_backoff_is_jittered_exponential_and_capped(
    attempt: int, retry_after: float | None, low: float, high: float
) -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=60, retry_after_cap_s=120)
    rng = random.Random(7)
    for _ in range(20):
        assert low <= policy.delay(attempt, retry_after, rng) <= high


class Recorder:
    def __init__(self, fail: Exception | None = None, hold: threading.Event | None = None):
        self.events: list[dict[str, Any]] = []
        self.entered = threading.Event()
        self.fail, self.hold = fail, hold

    def send(self, event: Any) -> None:
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(10)
        if self.fail is not None:
            raise self.fail
        self.events.append(event)


def test_filter_by_type_and_severity() -> None:
    every, fire, orders = Recorder(), Recorder(), Recorder()
    dispatcher = Dispatcher(
        [
            Channel("every", every),
            Channel("fire", fire, ChannelFilter(frozenset({"alert.*"}), "critical")),
            Channel("orders", orders, ChannelFilter(frozenset({"workorder.escalated"}), "major")),
        ]
    )
    with dispatcher:
        for kind, severity in [
            ("alert.firing", "critical"),
            ("alert.firing", "warning"),
            ("alert.resolved", "critical"),
            ("workorder.escalated", "major"),
            ("workorder.escalated", "info"),
            ("workorder.opened", "critical"),
        ]:
            dispatcher.publish(event(kind, severity))
        dispatcher.publish({"type": "workorder.transition", "order_id": 1})  # no severity: info
    assert len(every.events) == 7
    assert [(e["type"], e["severity"]) for e in fire.events] == [
        ("alert.firing", "critical"),
        ("alert.resolved", "critical"),
    ]
    assert [(e["type"], e["severity"]) for e in orders.events] == [("workorder.escalated", "major")]


@pytest.mark.parametrize(
    "bad",
    [
        {"min_severity": "high"},
        {"types": frozenset({"alert*"})},
        {"types": frozenset({"*.firing"})},
    ],
)
def test_filter_rejects_bad_configuration(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ChannelFilter(**bad)


def test_full_queue_drops_and_counts_without_blocking() -> None:
    hold = threading.Event()
    slow = Recorder(hold=hold)
    dispatcher = Dispatcher([Channel("slow", slow, queue_size=2)], FAST)
    dispatcher.start()
    dispatcher.publish(event("alert.firing", n=0))
    assert slow.entered.wait(5)  # the worker holds event 0; the queue is empty again
    for n in range(1, 10):
        dispatcher.publish(event("alert.firing", n=n))  # returns although the worker is stuck
    assert dispatcher.stats()["slow"] == {
        "sent": 0,
        "failed": 0,
        "retried": 0,
        "dropped": 7,
        "skipped": 0,
        "queued": 2,
    }
    hold.set()
    assert dispatcher.close(5) == 0
    assert [e["n"] for e in slow.events] == [0, 1, 2]
    assert dispatcher.stats()["slow"]["sent"] == 3


def test_close_drains_queue_then_refuses_new_events() -> None:
    rec = Recorder()
    dispatcher = Dispatcher([Channel("rec", rec)])
    for n in range(50):
        dispatcher.publish(event("alert.firing", n=n))
    dispatcher.start()
    assert dispatcher.close(timeout=10) == 0
    assert [e["n"] for e in rec.events] == list(range(50))
    dispatcher.publish(event("alert.firing"))
    assert dispatcher.stats()["rec"]["dropped"] == 1


def test_close_gives_up_at_its_deadline() -> None:
    hold = threading.Event()
    stuck = Recorder(hold=hold)
    dispatcher = Dispatcher([Channel("stuck", stuck)])
    dispatcher.start()
    for n in range(5):
        dispatcher.publish(event("alert.firing", n=n))
    assert stuck.entered.wait(5)
    assert dispatcher.close(timeout=0.2) == 4
    assert dispatcher.stats()["stuck"]["dropped"] == 4
    hold.set()


@pytest.mark.parametrize(
    ("error", "counter"),
    [
        (NotifySkipped("nobody"), "skipped"),
        (RuntimeError("bug"), "failed"),
        (NotifyError("gone", retryable=False), "failed"),
    ],
)
def test_worker_counts_skips_and_survives_bugs(error: Exception, counter: str) -> None:
    rec = Recorder(fail=error)
    dispatcher = Dispatcher([Channel("x", rec)], FAST)
    with dispatcher:
        dispatcher.publish(ALERT)
        dispatcher.publish(ALERT)
    assert dispatcher.stats()["x"][counter] == 2


# --- e-mail rendering (delivery is tested against aiosmtpd in tests/integration) --------


@pytest.mark.parametrize(
    ("changes", "subject"),
    [
        ({}, "[CRITICAL] 火警 / Fire alarm — smoke-B3-2-1001"),
        (
            {"type": "alert.resolved"},
            "[CRITICAL] 已恢复 Resolved: 火警 / Fire alarm — smoke-B3-2-1001",
        ),
        (
            {"type": "workorder.escalated", "device_id": None, "order_id": 12, "severity": "major"},
            "[MAJOR] 升级 Escalated: 火警 / Fire alarm — #12",
        ),
        ({"title": "line\r\nbreak", "severity": None}, "[INFO] line break — smoke-B3-2-1001"),
    ],
)
def test_subject(changes: dict[str, Any], subject: str) -> None:
    assert render_subject({**ALERT, **changes}) == subject


def test_recipients_need_a_valid_address_and_are_deduplicated() -> None:
    people = [
        {"name": "A", "email": "a@example.org"},
        {"name": "A2", "email": "A@example.org"},
        {"name": "B"},
        {"name": "C", "email": "not an address"},
        "junk",
        {"name": "李", "email": "li@example.org"},
    ]
    found = email_recipients({**ALERT, "recipients": people})
    assert [(a.display_name, a.addr_spec) for a in found] == [
        ("A", "a@example.org"),
        ("李", "li@example.org"),
    ]
    with pytest.raises(NotifySkipped):
        EmailNotifier("127.0.0.1", free_port()).send({**ALERT, "recipients": people[2:3]})


# --- SSE hub ---------------------------------------------------------------------------


def fields(frame: bytes) -> dict[str, str]:
    lines = [ln.partition(": ") for ln in frame.decode().splitlines() if ln and ln[0] != ":"]
    return {name: value for name, _, value in lines}


async def take(frames: AsyncGenerator[bytes, None], n: int) -> list[bytes]:
    return [await asyncio.wait_for(anext(frames), 5) for _ in range(n)]


def test_sse_frame_format() -> None:
    async def main() -> None:
        hub = EventHub()
        frames = hub.subscribe().frames()
        event_id = hub.publish(ALERT)
        hint, frame = await take(frames, 2)
        assert hint == RETRY_HINT and frame.endswith(b"\n\n")
        got = fields(frame)
        assert got["id"] == event_id and event_id.startswith(f"{hub.epoch}-")
        assert got["event"] == "alert.firing" and orjson.loads(got["data"]) == ALERT
        await frames.aclose()
        assert hub.stats()["subscribers"] == 0

    asyncio.run(main())


def test_slow_subscriber_loses_oldest_and_is_told() -> None:
    async def main() -> None:
        hub = EventHub(queue_size=3)
        sub: Subscription = hub.subscribe()
        fast = hub.subscribe()
        for n in range(10):
            hub.publish(event("alert.firing", n=n))
        await asyncio.sleep(0.01)
        assert (sub.dropped, fast.dropped, hub.stats()["dropped"]) == (7, 7, 14)
        hub.close()
        got = [frame async for frame in sub.frames()]
        assert got[0] == RETRY_HINT and got[1] == b": dropped 7 events\n\n"
        assert [orjson.loads(fields(f)["data"])["n"] for f in got[2:]] == [7, 8, 9]

    asyncio.run(main())


def test_last_event_id_replay() -> None:
    async def main() -> None:
        hub = EventHub(replay_size=4)
        ids = [hub.publish(event("alert.firing", n=n)) for n in range(6)]  # keeps n = 2..5

        def replayed(last: str | None) -> tuple[bool, list[int]]:
            sub = hub.subscribe(last_event_id=last)
            sub.close()
            return sub.gap, [orjson.loads(fields(e.frame)["data"])["n"] for e in sub._backlog]

        assert replayed(ids[3]) == (False, [4, 5])
        assert replayed(ids[1]) == (False, [2, 3, 4, 5])
        assert replayed(ids[0]) == (True, [2, 3, 4, 5])  # event 1 is gone
        assert replayed("0badc0de-3") == (True, [2, 3, 4, 5])  # an id from an earlier run
        assert replayed(ids[5]) == (False, []) and replayed(None) == (False, [])
        frames = hub.subscribe(last_event_id=ids[4]).frames()
        live = hub.publish(event("alert.resolved", n=6))
        got = await take(frames, 3)
        assert [fields(f).get("id") for f in got] == [None, ids[5], live]
        await frames.aclose()

    asyncio.run(main())


def test_publish_from_other_threads_keeps_order_and_loses_nothing() -> None:
    async def main() -> None:
        hub = EventHub(queue_size=1000)
        frames = hub.subscribe(accept=lambda e: e["severity"] != "info").frames()

        def publisher(t: int) -> None:
            for n in range(50):
                hub.publish(
                    event("alert.firing", severity="info" if n % 10 == 0 else "major", t=t, n=n)
                )

        threads = [threading.Thread(target=publisher, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        got = await take(frames, 1 + 4 * 45)
        for thread in threads:
            thread.join(5)
        seqs = [int(fields(f)["id"].rpartition("-")[2]) for f in got[1:]]
        assert seqs == sorted(seqs) and len(set(seqs)) == 180
        await frames.aclose()

    asyncio.run(main())


def test_keepalive_and_close_end_streams() -> None:
    async def main() -> None:
        hub = EventHub(keepalive_s=0.05)
        frames = hub.stream(accept=lambda e: 1 / 0 > 0)  # a raising filter hides events
        assert await take(frames, 2) == [RETRY_HINT, KEEPALIVE]
        hub.publish(ALERT)
        assert await take(frames, 1) == [KEEPALIVE]
        await asyncio.to_thread(hub.close)  # from another thread
        assert [f async for f in frames] == []
        late = hub.subscribe().frames()
        assert [f async for f in late] == [RETRY_HINT]

    asyncio.run(main())
