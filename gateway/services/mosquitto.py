"""A local Mosquitto broker (optionally with the dynamic-security plugin) for development,
demos and tests."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gateway.services.base import (
    LOOPBACK,
    START_TIMEOUT,
    BinaryNotFoundError,
    ManagedProcess,
    ServerConfig,
    free_port,
)

_MIB = 1024 * 1024


def find_dynsec_plugin() -> str:
    """Locate ``mosquitto_dynamic_security.so`` (Debian puts it under the multiarch dir)."""
    candidates = [
        *sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")),
        Path("/usr/lib/mosquitto_dynamic_security.so"),
        Path("/usr/local/lib/mosquitto_dynamic_security.so"),
    ]
    for path in candidates:
        if path.is_file():
            return str(path)
    raise BinaryNotFoundError(
        "the Mosquitto dynamic-security plugin (mosquitto_dynamic_security.so) is not installed"
    )


def probe_mqtt(port: int, timeout: float = 1.0) -> bool:
    """Do an MQTT 3.1.1 CONNECT/CONNACK round trip; any CONNACK means the broker answers."""
    client_id = f"scc-probe-{secrets.token_hex(4)}".encode()
    # Protocol name "MQTT", level 4, clean session, keep-alive 10 s.
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(bytes([0x10, len(body)]) + body)
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            if reply[:2] != b"\x20\x02":
                return False
            if reply[3] == 0:
                sock.sendall(b"\xe0\x00")  # DISCONNECT, so no will and no log noise
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class MosquittoConfig(ServerConfig):
    """A loopback Mosquitto 2.0 broker whose persistent sessions survive restarts."""

    persistence: bool = True
    allow_anonymous: bool = True  # until the broker moves to dynamic security
    max_inflight_messages: int = 1000
    # Deep per-client queues: a persistent session holds the backlog while the gateway is down.
    max_queued_messages: int = 1_000_000
    # The only packet limit on the way to the gateway (it advertises none): above it a
    # publisher is refused (MQTT 5: DISCONNECT 0x95); below it, every message reaches us
    # and one over max_payload_bytes becomes an oversized dead letter (README, Limits).
    max_packet_size: int = 16 * _MIB
    autosave_interval: int = 30
    #: Opt-in: anonymous access off, logins and ACLs from the dynamic-security plugin.
    dynsec: bool = False

    name: ClassVar[str] = "mosquitto"
    binary: ClassVar[str] = "mosquitto"
    scheme: ClassVar[str] = "mqtt"

    @property
    def broker_log_path(self) -> Path:
        """Mosquitto's own log (``log_dest file``)."""
        return self.state_dir / "broker.log"

    @property
    def log_paths(self) -> tuple[Path, ...]:
        """Broker log first, then stdout/stderr (start-up errors land there)."""
        return (self.broker_log_path, self.output_path)

    @property
    def dynsec_config_path(self) -> Path:
        """The plugin's own state (clients, roles, ACLs), kept across restarts."""
        return self.state_dir / "dynamic-security.json"

    @property
    def dynsec_admin_path(self) -> Path:
        """The plugin admin's login (mode 0600), written with the first config."""
        return self.state_dir / "dynsec-admin.json"

    def dynsec_admin(self) -> tuple[str, str]:
        """``(username, password)`` of the dynamic-security admin client."""
        data = json.loads(self.dynsec_admin_path.read_text(encoding="utf-8"))
        return str(data["username"]), str(data["password"])

    def prepare(self) -> None:
        """Write the config; in dynsec mode also the first plugin file and admin login."""
        super().prepare()
        if self.dynsec and not self.dynsec_config_path.exists():
            from gateway.provisioning.dynsec import write_initial_config

            username, password = "scc-dynsec-admin", secrets.token_urlsafe(24)
            fd = os.open(self.dynsec_admin_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"username": username, "password": password}, handle)
            write_initial_config(self.dynsec_config_path, username, password)

    def _dynsec_lines(self) -> list[str]:
        if not self.dynsec:
            return []
        return [
            f"plugin {find_dynsec_plugin()}",
            f"plugin_opt_config_file {self.dynsec_config_path}",
        ]

    def render(self) -> str:
        """Render ``mosquitto.conf``."""
        on_off = {True: "true", False: "false"}
        # Running as root, mosquitto would drop to user "mosquitto", which cannot write the
        # state directory; naming the current user keeps it as is.
        user = pwd.getpwuid(os.getuid()).pw_name
        return "\n".join(
            [
                "# Written by gateway.services on every start; edits are overwritten.",
                "per_listener_settings false",
                f"listener {self.port} {LOOPBACK}",
                f"allow_anonymous {on_off[self.allow_anonymous and not self.dynsec]}",
                *self._dynsec_lines(),
                f"persistence {on_off[self.persistence]}",
                f"persistence_location {self.state_dir}/",
                "persistence_file mosquitto.db",
                f"autosave_interval {self.autosave_interval}",
                f"max_inflight_messages {self.max_inflight_messages}",
                f"max_queued_messages {self.max_queued_messages}",
                f"max_packet_size {self.max_packet_size}",
                "# persistent_client_expiration is left unset: persistent sessions never expire.",
                f"log_dest file {self.broker_log_path}",
                *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
                "connection_messages true",
                "log_timestamp true",
                "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                f"user {user}",
                "",
            ]
        )

    def argv(self, binary: str) -> list[str]:
        """``mosquitto -c <config>``."""
        return [binary, "-c", str(self.config_path)]

    def probe(self, timeout: float = 1.0) -> bool:
        """MQTT CONNECT/CONNACK round trip."""
        return probe_mqtt(self.port, timeout)


def start_mosquitto(
    state_dir: Path | str,
    port: int | None = None,
    *,
    timeout: float = START_TIMEOUT,
    dynsec: bool = False,
) -> ManagedProcess:
    """Start a broker in ``state_dir`` on ``port`` (a free one if None) and wait for it.

    ``dynsec=True``: no anonymous access; the admin login is ``config.dynsec_admin()``.
    """
    config = MosquittoConfig(port=port or free_port(), state_dir=Path(state_dir), dynsec=dynsec)
    proc = ManagedProcess(config)
    proc.start(timeout)
    return proc
