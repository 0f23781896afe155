"""Wire formats of notifications: readable texts, chat-bot bodies, signatures, e-mails.

Events are plain mappings from the alert / work-order layer. Only ``type``, ``at``,
``title``, ``severity``, ``message`` and ``recipients`` are read by name; every other key
is rendered generically (a few common ones get a bilingual label), so new event kinds need
no change here. ``recipients`` is never shown in chat messages (it holds e-mail addresses).

Chat bodies follow the shapes the bots accept:

- WeCom (企业微信) group bot: ``{"msgtype": "markdown", "markdown": {"content": ...}}``
  (content at most 4096 bytes);
- DingTalk (钉钉) custom robot: ``{"msgtype": "markdown", "markdown": {"title", "text"}}``;
- Feishu (飞书) custom bot: ``{"msg_type": "text", "content": {"text": ...}}``
  (``timestamp`` and ``sign`` are added by the notifier when a secret is set).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.utils import formatdate, make_msgid, parsedate_to_datetime
from typing import Any, Final, Literal

import orjson

log = logging.getLogger(__name__)

Event = Mapping[str, Any]
Template = Literal["generic", "wecom", "dingtalk", "feishu"]
TEMPLATES: Final = ("generic", "wecom", "dingtalk", "feishu")

SEVERITIES: Final = ("info", "warning", "major", "critical")
SEVERITY_RANK: Final = {name: rank for rank, name in enumerate(SEVERITIES)}

_SEVERITY_LABEL: Final = {
    "critical": "紧急 CRITICAL",
    "major": "重要 MAJOR",
    "warning": "警告 WARNING",
    "info": "提示 INFO",
}
# WeCom markdown knows three font colours: info (green), comment (grey), warning (orange-red).
_WECOM_COLOUR: Final = {"critical": "warning", "major": "warning", "warning": "comment"}

_TYPE_LABEL: Final = {
    "alert.pending": "告警待定 / Alert pending",
    "alert.firing": "告警 / Alert firing",
    "alert.resolved": "告警恢复 / Alert resolved",
    "alert.acknowledged": "告警已确认 / Alert acknowledged",
    "workorder.opened": "新工单 / Work order opened",
    "workorder.occurrence": "工单重复发生 / Work order occurrence",
    "workorder.escalated": "工单升级 / Work order escalated",
    "workorder.transition": "工单状态变更 / Work order updated",
    "workorder.rated": "工单评价 / Work order rated",
}
# Short prefixes for e-mail subjects; a firing alert needs none.
_SUBJECT_PREFIX: Final = {
    "alert.pending": "待定 Pending: ",
    "alert.resolved": "已恢复 Resolved: ",
    "alert.acknowledged": "已确认 Acknowledged: ",
    "workorder.opened": "工单 Work order: ",
    "workorder.occurrence": "再次发生 Again: ",
    "workorder.escalated": "升级 Escalated: ",
    "workorder.transition": "工单更新 Updated: ",
    "workorder.rated": "评价 Rated: ",
}
_FIELD_LABEL: Final = {
    "device_id": "设备 Device",
    "path": "位置 Place",
    "node": "网格节点 Node",
    "owner_node": "负责节点 Owner",
    "state": "状态 State",
    "order_id": "工单 Order",
    "alert_id": "告警 Alert",
    "rule_id": "规则 Rule",
}
_SHOWN_FIRST: Final = frozenset({"type", "at", "title", "severity", "message", "recipients"})

WECOM_MAX_BYTES: Final = 4096
TEXT_MAX_BYTES: Final = 4000


def severity_of(event: Event) -> str:
    """The event's severity, normalised; missing or unknown severities count as ``info``."""
    raw = event.get("severity")
    name = raw.strip().lower() if isinstance(raw, str) else ""
    return name if name in SEVERITY_RANK else "info"


def one_line(value: object) -> str:
    """A value as a single line of text (no CR/LF, so safe in headers and list items)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list, tuple)):
        text = orjson.dumps(value, default=str).decode()
    else:
        text = str(value)
    return " ".join(text.split())


def clip_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` so its UTF-8 encoding fits ``max_bytes``, marking the cut with an ellipsis."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes - 3)].decode(errors="ignore") + "…"


def _fields(event: Event) -> list[tuple[str, str]]:
    """(label, value) pairs in display order: the fixed head, then everything else."""
    pairs = [("级别 Severity", _SEVERITY_LABEL[severity_of(event)])]
    if event.get("title"):
        pairs.append(("标题 Title", one_line(event["title"])))
    for key, value in event.items():
        if key in _SHOWN_FIRST or value is None or value == "":
            continue
        pairs.append((_FIELD_LABEL.get(key, str(key)), one_line(value)))
    if event.get("message"):
        pairs.append(("内容 Message", one_line(event["message"])))
    if event.get("at"):
        pairs.append(("时间 Time", one_line(event["at"])))
    return pairs


def heading(event: Event) -> str:
    """A one-line heading: the event kind and its title."""
    kind = str(event.get("type", "event"))
    label = _TYPE_LABEL.get(kind, kind)
    title = one_line(event.get("title", ""))
    return f"{label} · {title}" if title else label


def render_text(event: Event) -> str:
    """A plain, readable bilingual text of the event (e-mail bodies, text chat messages)."""
    lines = [f"【{heading(event)}】"]
    lines += [f"{label}: {value}" for label, value in _fields(event)]
    return "\n".join(lines) + "\n"


def render_markdown(event: Event, *, wecom: bool = False) -> str:
    """The event as chat markdown: a heading, then one bold-labelled line per field.

    WeCom breaks lines at ``\\n`` and colours the severity; DingTalk needs a blank line.
    """
    severity = severity_of(event)
    lines = [f"### {heading(event)}"]
    for index, (label, value) in enumerate(_fields(event)):
        shown = value
        if wecom and index == 0:  # the severity line
            shown = f'<font color="{_WECOM_COLOUR.get(severity, "info")}">{value}</font>'
        lines.append(f"> **{label}**: {shown}" if wecom else f"- **{label}**: {shown}")
    return ("\n" if wecom else "\n\n").join(lines)


def render_subject(event: Event) -> str:
    """An e-mail subject such as ``[CRITICAL] 火警 / Fire alarm — smoke-B3-2-1001``."""
    kind = str(event.get("type", ""))
    title = one_line(event.get("title") or _TYPE_LABEL.get(kind, kind or "event"))
    subject = f"[{severity_of(event).upper()}] {_SUBJECT_PREFIX.get(kind, '')}{title}"
    device = event.get("device_id")
    if device:
        subject += f" — {one_line(device)}"
    elif event.get("order_id") is not None:
        subject += f" — #{one_line(event['order_id'])}"
    return clip_utf8(subject, 900)


def chat_body(event: Event, template: Template) -> dict[str, Any]:
    """The JSON body a chat bot accepts for ``template`` (not for ``generic``)."""
    if template == "wecom":
        content = clip_utf8(render_markdown(event, wecom=True), WECOM_MAX_BYTES)
        return {"msgtype": "markdown", "markdown": {"content": content}}
    if template == "dingtalk":
        text = clip_utf8(render_markdown(event), TEXT_MAX_BYTES)
        return {"msgtype": "markdown", "markdown": {"title": heading(event), "text": text}}
    if template == "feishu":
        text = clip_utf8(render_text(event), TEXT_MAX_BYTES)
        return {"msg_type": "text", "content": {"text": text}}
    raise ValueError(f"no chat body for template {template!r}")


# --- routing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelFilter:
    """Which events a channel wants: event types and a minimum severity.

    ``types`` holds exact types (``alert.firing``) or prefixes (``workorder.*``); empty
    means every type. Events without a known severity count as ``info``.
    """

    types: frozenset[str] = frozenset()
    min_severity: str = "info"

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", frozenset(self.types))
        if self.min_severity not in SEVERITY_RANK:
            raise ValueError(f"min_severity {self.min_severity!r} not in {list(SEVERITY_RANK)}")
        for kind in self.types:
            if "*" in kind[:-1] or (kind.endswith("*") and not kind.endswith(".*")):
                raise ValueError(f"event type pattern {kind!r}: only a trailing '.*' is allowed")

    def accepts(self, event: Event) -> bool:
        """True if ``event`` passes the severity floor and the type list."""
        if SEVERITY_RANK[severity_of(event)] < SEVERITY_RANK[self.min_severity]:
            return False
        if not self.types:
            return True
        kind = str(event.get("type", ""))
        return kind in self.types or any(
            p.endswith(".*") and kind.startswith(p[:-1]) for p in self.types
        )


# --- signatures -------------------------------------------------------------------------

SIGNATURE_HEADER: Final = "X-SCC-Signature"
TIMESTAMP_HEADER: Final = "X-SCC-Timestamp"


def sign_body(secret: str, timestamp: int, body: bytes) -> str:
    """Generic signature: ``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes,
    signature: str,
    max_age_s: float = 300.0,
    *,
    now: float | None = None,
) -> bool:
    """Check a generic webhook signature for a receiver (constant-time, replay window).

    ``timestamp`` and ``signature`` are the ``X-SCC-Timestamp`` and ``X-SCC-Signature``
    header values, ``body`` the raw request body. False when the timestamp is malformed or
    more than ``max_age_s`` away from ``now`` (default: the current time), or the
    signature does not match.
    """
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > max_age_s:
        return False
    expected = sign_body(secret, stamp, body).encode()
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot ``sign``: base64(HMAC-SHA256(key=secret, msg="<ts ms>\\n<secret>")).

    The caller URL-encodes it into the query next to ``timestamp``.
    """
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu bot ``sign``: base64(HMAC-SHA256(key="<ts s>\\n<secret>", msg=b"")).

    Note the key/message order differs from DingTalk's; Feishu documents it this way.
    """
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


# --- e-mail -----------------------------------------------------------------------------


def email_recipients(event: Event) -> list[Address]:
    """The event's recipients with a valid e-mail address, deduplicated, in order."""
    found: list[Address] = []
    seen: set[str] = set()
    raw = event.get("recipients")
    for person in raw if isinstance(raw, list) else []:
        if not isinstance(person, Mapping):
            continue
        addr = person.get("email")
        if not isinstance(addr, str) or not addr.strip():
            continue
        try:
            address = Address(display_name=one_line(person.get("name") or ""), addr_spec=addr)
        except (ValueError, IndexError, HeaderParseError):
            log.warning("skipping malformed e-mail address %r", addr)
            continue
        if address.addr_spec.lower() not in seen:
            seen.add(address.addr_spec.lower())
            found.append(address)
    return found


def build_email(event: Event, sender: str) -> EmailMessage | None:
    """One plain-text UTF-8 message for all of the event's recipients; None if it has none."""
    recipients = email_recipients(event)
    if not recipients:
        return None
    msg = EmailMessage()
    msg["Subject"] = render_subject(event)
    msg["From"] = sender
    msg["To"] = recipients
    msg["Date"] = formatdate(usegmt=True)
    # An explicit domain keeps make_msgid from a (possibly slow) getfqdn() lookup.
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    msg["X-SCC-Event-Type"] = one_line(event.get("type", "event"))
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies, please
    msg.set_content(render_text(event), charset="utf-8")
    return msg


# --- webhooks ---------------------------------------------------------------------------

# Bot "sending too fast" codes, answered in the JSON body (with HTTP 200, or 400 by Feishu):
# WeCom 45009, DingTalk 130101, Feishu 11232.
RATE_LIMIT_CODES: Final = frozenset({45009, 130101, 11232})


def webhook_request(
    event: Event, template: Template, secret: str | None, now: float
) -> tuple[dict[str, str], bytes, dict[str, str]]:
    """Extra query parameters, JSON body and headers of a webhook POST, signed if ``secret``.

    - ``generic``, ``wecom``: headers ``X-SCC-Timestamp: <unix s>`` and ``X-SCC-Signature:
      sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` (see :func:`verify_signature`;
      WeCom has no signing of its own, the URL ``key`` is its credential).
    - ``dingtalk``: query ``timestamp=<unix ms>&sign=<url-encoded base64 HMAC-SHA256(key=secret,
      msg="<timestamp>\\n<secret>")>``, DingTalk's scheme.
    - ``feishu``: body fields ``timestamp`` (unix s, string) and ``sign`` = base64
      HMAC-SHA256(key="<timestamp>\\n<secret>", msg=b""), Feishu's scheme.

    Raises TypeError when the event cannot be serialised.
    """
    payload = dict(event) if template == "generic" else chat_body(event, template)
    params: dict[str, str] = {}
    if secret and template == "feishu":
        payload["timestamp"] = str(int(now))
        payload["sign"] = feishu_sign(secret, int(now))
    elif secret and template == "dingtalk":
        stamp_ms = int(now * 1000)
        params = {"timestamp": str(stamp_ms), "sign": dingtalk_sign(secret, stamp_ms)}
    body = orjson.dumps(payload, default=str)
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "scc-gateway"}
    if secret and template in ("generic", "wecom"):
        headers[TIMESTAMP_HEADER] = str(int(now))
        headers[SIGNATURE_HEADER] = sign_body(secret, int(now), body)
    return params, body, headers


def retry_after_seconds(headers: Message, now: float) -> float | None:
    """Seconds from ``Retry-After`` (delta or HTTP date) or Feishu's ratelimit-reset header."""
    value = str(headers.get("Retry-After") or headers.get("x-ogw-ratelimit-reset") or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now) if when.tzinfo is not None else None


def bot_answer_code(text: bytes) -> int | None:
    """The application status code in a chat bot's JSON answer (0 = ok), if there is one."""
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(answer, dict):
        for key in ("errcode", "code", "StatusCode"):
            if isinstance(answer.get(key), int):
                return int(answer[key])
    return None
