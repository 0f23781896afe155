"""The request/response channel to Mosquitto's dynamic-security plugin, as its admin.

Commands go as JSON to ``$CONTROL/dynamic-security/v1``; the plugin answers on
``$CONTROL/dynamic-security/v1/response`` with ``{"responses": [{"command": ...,
"error": ..., "data": ..., "correlationData": ...}]}`` (no ``error`` key on success).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

logger = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"


class DynsecError(RuntimeError):
    """The broker could not be reached, or refused a dynamic-security command."""


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

    @property
    def username(self) -> str:
        """The admin login this client uses."""
        return self._username

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
