"""Per-device MQTT credentials through Mosquitto's dynamic-security plugin.

The plugin is driven by JSON commands published to ``$CONTROL/dynamic-security/v1``;
it answers on ``$CONTROL/dynamic-security/v1/response`` with
``{"responses": [{"command": ..., "error": ..., "correlationData": ...}]}`` (no
``error`` key on success). Facts checked against Debian's Mosquitto 2.0.11:

- ACL topics are matched literally: ``%u``/``%c`` are *not* substituted in dynsec
  ACLs (a role allowing ``scc/v1/%u/#`` lets ``dev1`` publish on ``scc/v1/%u/x`` only).
  So every device gets a role of its own, ``device-<id>``.
- The config file stores PBKDF2-HMAC-SHA512 hashes (base64, 12-byte salt, as
  ``mosquitto_ctrl dynsec init`` writes them), so the initial file with the admin
  client is generated here without needing ``mosquitto_ctrl``.
- ``deleteClient`` disconnects sessions using those credentials at once.

Passwords are generated here, returned once and never stored by us.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
DEVICE_TOPIC_KINDS = ("telemetry", "event", "status")
GATEWAY_ROLE = "scc-gateway"
ADMIN_ROLE = "admin"
_HASH_ITERATIONS = 101  # what mosquitto_ctrl and the plugin use; secrets here are random
_NOT_FOUND_ERRORS = ("Client not found", "Role not found")

Acl = dict[str, Any]


class DynsecError(RuntimeError):
    """The broker could not be reached, or refused a dynamic-security command."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A device's MQTT login, returned once at registration."""

    username: str
    password: str = field(repr=False)
    publish_topics: tuple[str, ...]
    command_topic: str


class Provisioner(Protocol):
    """Creates and revokes broker credentials for devices."""

    def create(self, device_id: str) -> Credentials:
        """(Re)create the device's client with a fresh password; return it once."""
        ...

    def revoke(self, device_id: str) -> None:
        """Delete the device's client and role (a no-op when there are none)."""
        ...

    def ensure_gateway_role(self, username: str, password: str) -> None:
        """Create or update the gateway's client and role (subscribe and read scc/v1/#)."""
        ...


def device_topics(device_id: str) -> tuple[tuple[str, ...], str]:
    """The topics a device may publish on, and its command topic."""
    base = f"scc/v1/{device_id}"
    return tuple(f"{base}/{kind}" for kind in DEVICE_TOPIC_KINDS), f"{base}/command"


def device_acls(device_id: str) -> list[Acl]:
    """ACLs of ``device-<id>``: publish its own topics, read only its command topic."""
    publish, command = device_topics(device_id)
    acls: list[Acl] = [_acl("publishClientSend", topic) for topic in publish]
    acls += [_acl("subscribeLiteral", command), _acl("publishClientReceive", command)]
    return acls


def gateway_acls() -> list[Acl]:
    """ACLs of the gateway: subscribe to and receive every device topic, publish commands
    and dead-letter replays; in worker mode, forward readings to the rule partitions."""
    return [
        _acl(acltype, topic)
        for topic in ("scc/v1/#", "scc/internal/#")
        for acltype in (
            "subscribePattern",
            "publishClientReceive",
            "publishClientSend",
            "unsubscribePattern",
        )
    ]


def _acl(acltype: str, topic: str, allow: bool = True) -> Acl:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": allow}


def hash_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's stored form of a password: PBKDF2-HMAC-SHA512, base64 fields."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _HASH_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _HASH_ITERATIONS,
    }


def initial_config(admin_username: str, admin_password: str) -> dict[str, Any]:
    """A first ``dynamic-security.json``: one admin client, deny-by-default ACLs.

    Same shape as ``mosquitto_ctrl dynsec init`` writes, except that
    ``publishClientReceive`` defaults to deny too, so a client only ever receives what a
    role grants it.
    """
    admin_acls = [
        _acl("publishClientSend", "$CONTROL/dynamic-security/#"),
        _acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
        _acl("subscribePattern", "$CONTROL/dynamic-security/#"),
        _acl("unsubscribePattern", "#"),
    ]
    client: dict[str, Any] = {"username": admin_username, "textName": "scc dynsec admin"}
    client |= hash_password(admin_password)
    client["roles"] = [{"rolename": ADMIN_ROLE}]
    return {
        "clients": [client],
        "roles": [{"rolename": ADMIN_ROLE, "acls": admin_acls}],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


def write_initial_config(path: Path, admin_username: str, admin_password: str) -> None:
    """Write :func:`initial_config` to ``path`` readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(initial_config(admin_username, admin_password), indent=2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


class DynsecClient:
    """Request/response over MQTT with the plugin, as an admin client (thread-safe).

    Nothing connects until :meth:`connect` (or the first :meth:`call`).
    """

    def __init__(
        self, host: str, port: int, username: str, password: str, *, timeout: float = 5.0
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._username, self._password = username, password
        self._client: Any = None
        self._ready = threading.Event()
        self._refused: str | None = None
        self._pending: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Connect, subscribe to the response topic and wait until both are done."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
                try:
                    self._client.connect(self.host, self.port, keepalive=30)
                except OSError as err:
                    self._client = None
                    raise DynsecError(f"broker {self.host}:{self.port}: {err}") from err
                self._client.loop_start()
        deadline = time.monotonic() + self.timeout
        while not self._ready.wait(0.05):
            if self._refused or time.monotonic() > deadline:
                reason = self._refused or f"no answer within {self.timeout:.0f} s"
                self.close()
                raise DynsecError(
                    f"dynamic-security admin login to {self.host}:{self.port}: {reason}"
                )

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        with self._lock:
            client, self._client = self._client, None
            self._ready.clear()
            self._refused = None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def call(self, commands: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Send commands in one message; return their responses in the same order."""
        if not self._ready.is_set():
            self.connect()
        futures: list[Future[dict[str, Any]]] = []
        payload = []
        for command in commands:
            correlation = uuid.uuid4().hex
            future: Future[dict[str, Any]] = Future()
            with self._lock:
                self._pending[correlation] = future
            futures.append(future)
            payload.append({**command, "correlationData": correlation})
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": payload}), qos=1)
        try:
            return [future.result(self.timeout) for future in futures]
        except FutureTimeout as err:
            names = ", ".join(str(c.get("command")) for c in commands)
            raise DynsecError(
                f"no dynamic-security response to {names} within {self.timeout:.0f} s"
            ) from err
        finally:
            with self._lock:
                for item in payload:
                    self._pending.pop(item["correlationData"], None)

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"scc-dynsec-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(self._username, self._password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = lambda *_args: self._ready.clear()  # paho reconnects by itself
        return client

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused = f"refused: {reason}"
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            self._refused = f"may not subscribe to {RESPONSE_TOPIC}: {reasons[0]}"
            return
        self._ready.set()

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable dynamic-security response %r", message.payload[:200])
            return
        for response in responses:
            with self._lock:
                future = self._pending.pop(str(response.get("correlationData")), None)
            if future is not None and not future.done():
                future.set_result(response)


class DynsecProvisioner:
    """:class:`Provisioner` backed by the dynamic-security plugin of a running broker."""

    def __init__(self, client: DynsecClient) -> None:
        self.client = client

    @classmethod
    def connect(
        cls, host: str, port: int, username: str, password: str, *, timeout: float = 5.0
    ) -> DynsecProvisioner:
        """A provisioner with its own admin connection (opened on first use)."""
        return cls(DynsecClient(host, port, username, password, timeout=timeout))

    def create(self, device_id: str) -> Credentials:
        """Replace any earlier client and role of the device; return the new login."""
        password = secrets.token_urlsafe(24)
        role = f"device-{device_id}"
        self._run(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": role},
                {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "textname": f"scc device {device_id}",
                    "roles": [{"rolename": role, "priority": 0}],
                },
            ]
        )
        publish, command = device_topics(device_id)
        logger.info("provisioned broker credentials for %s", device_id)
        return Credentials(device_id, password, publish, command)

    def revoke(self, device_id: str) -> None:
        """Delete the client (disconnecting it) and its role."""
        self._run(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": f"device-{device_id}"},
            ]
        )
        logger.info("revoked broker credentials of %s", device_id)

    def ensure_gateway_role(self, username: str, password: str) -> None:
        """Create (or reset) the gateway's role and client with ``password``."""
        self._run(
            [
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": GATEWAY_ROLE},
                {"command": "createRole", "rolename": GATEWAY_ROLE, "acls": gateway_acls()},
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "textname": "scc gateway",
                    "roles": [{"rolename": GATEWAY_ROLE, "priority": 0}],
                },
            ]
        )

    def close(self) -> None:
        """Close the admin connection."""
        self.client.close()

    def _run(self, commands: list[dict[str, Any]]) -> None:
        for command, response in zip(commands, self.client.call(commands), strict=True):
            error = response.get("error")
            if error and not (
                command["command"].startswith("delete") and error in _NOT_FOUND_ERRORS
            ):
                raise DynsecError(f"dynamic-security {command['command']} refused: {error}")
