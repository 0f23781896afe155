"""E-mail notifications against a real SMTP server (aiosmtpd) on a free loopback port."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.notify.dispatch import Channel, Dispatcher, EmailNotifier, NotifyError
from gateway.services.base import free_port

pytestmark = pytest.mark.integration

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
    "recipients": [
        {"name": "王伟", "role": "grid_head", "email": "wang.wei@grid.example"},
        {"name": "Li Na", "role": "grid_member", "email": "li.na@grid.example"},
        {"name": "张敏", "role": "building_head"},  # no address: not mailed
    ],
}


@dataclass
class Mailbox:
    """aiosmtpd handler: keeps every accepted message; refuses ``@refused.example``."""

    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Mailbox]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


def test_alert_reaches_both_recipients_with_subject_and_utf8_body(
    smtp_server: tuple[int, Mailbox],
) -> None:
    port, mailbox = smtp_server
    EmailNotifier("127.0.0.1", port, sender="gateway@scc.example", timeout=5).send(ALERT)

    assert len(mailbox.received) == 1
    mail_from, rcpt_tos, message = mailbox.received[0]
    assert mail_from == "gateway@scc.example"
    assert rcpt_tos == ["wang.wei@grid.example", "li.na@grid.example"]
    assert message["Subject"] == "[CRITICAL] 火警 / Fire alarm — smoke-B3-2-1001"
    assert [a.display_name for a in message["To"].addresses] == ["王伟", "Li Na"]
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    body = message.get_content()
    for shown in (
        "火警 / Fire alarm",
        "smoke-B3-2-1001",
        "smoke 0.41 ≥ 0.15",
        "B3-2",
        "2026-11-28",
    ):
        assert shown in body
    assert "wang.wei@grid.example" not in body


def test_dispatcher_mails_and_counts_events_without_recipients(
    smtp_server: tuple[int, Mailbox],
) -> None:
    port, mailbox = smtp_server
    notifier = EmailNotifier("127.0.0.1", port, sender="gateway@scc.example", timeout=5)
    dispatcher = Dispatcher([Channel("mail", notifier)])
    with dispatcher:
        dispatcher.publish(ALERT)
        dispatcher.publish({"type": "workorder.transition", "order_id": 7, "state": "dispatched"})
    assert dispatcher.stats()["mail"] == {
        "sent": 1,
        "failed": 0,
        "retried": 0,
        "dropped": 0,
        "skipped": 1,
        "queued": 0,
    }
    assert len(mailbox.received) == 1


def test_refused_recipients(smtp_server: tuple[int, Mailbox]) -> None:
    port, mailbox = smtp_server
    notifier = EmailNotifier("127.0.0.1", port, sender="gateway@scc.example", timeout=5)
    some = [{"name": "ok", "email": "ok@grid.example"}, {"name": "x", "email": "x@refused.example"}]
    notifier.send({**ALERT, "recipients": some})  # partly refused: the others still get it
    assert mailbox.received[-1][1] == ["ok@grid.example"]
    with pytest.raises(NotifyError) as refused:
        notifier.send({**ALERT, "recipients": some[1:]})
    assert refused.value.retryable is False


def test_unreachable_server_is_retryable() -> None:
    with pytest.raises(NotifyError) as caught:
        EmailNotifier("127.0.0.1", free_port(), sender="gateway@scc.example", timeout=2).send(ALERT)
    assert caught.value.retryable is True
