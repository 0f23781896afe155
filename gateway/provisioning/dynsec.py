"""Per-device MQTT credentials through Mosquitto's dynamic-security plugin.

Facts checked against Debian's Mosquitto 2.0.11:

- ACL topics are matched literally: ``%u``/``%c`` are *not* substituted in dynsec
  ACLs (a role allowing ``scc/v1/%u/#`` lets ``dev1`` publish on ``scc/v1/%u/x`` only).
  So every device gets a role of its own, ``device-<id>``.
- ``createClient`` with ``clientid`` binds the login to that client id: a CONNECT with the
  right password and any other client id (or none) is refused "not authorized". Every
  device login is bound to its device id, so no device can connect as another client id —
  in particular not as the gateway's (``scc-…`` ids are no device's: see
  :mod:`gateway.registry.device_ids`) to take over its persistent session.
- ``createClient`` refuses an existing user name; ``getClient``/``getRole`` return
  ``textname``/``textdescription``. What the gateway creates carries a mark in
  ``textdescription``; it replaces or deletes only clients and roles with its mark (or the
  exact shape an earlier version created), never a login someone else made.
- The initial plugin file with the admin client is written by
  :mod:`gateway.provisioning.plugin_config`.
- ``deleteClient`` disconnects sessions using those credentials at once.
- ``deleteRole`` of a role some client still holds leaves that client pointing at freed
  memory (later answers carry garbage role names, or none comes): roles are reset in place
  with ``modifyRole`` and deleted only after the one client holding them.

Passwords are generated here, returned once and never stored by us.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.provisioning.client import CONTROL_TOPIC, RESPONSE_TOPIC, DynsecClient, DynsecError
from gateway.provisioning.plugin_config import (
    ADMIN_ROLE,
    acl,
    hash_password,
    initial_config,
    write_initial_config,
)
from gateway.registry.device_ids import NO_CONFIGURED_NAMES, ReservedNames, device_id_problem

__all__ = [  # re-exported: callers keep importing the plugin's pieces from here
    "ADMIN_ROLE",
    "CONTROL_TOPIC",
    "RESPONSE_TOPIC",
    "DynsecClient",
    "DynsecError",
    "hash_password",
    "initial_config",
    "write_initial_config",
]

logger = logging.getLogger(__name__)

DEVICE_TOPIC_KINDS = ("telemetry", "event", "status")
GATEWAY_ROLE = "scc-gateway"
#: ``textdescription`` of every client and role the gateway creates: its ownership mark.
DEVICE_MARK = "managed by smart-community-gateway: device login"
GATEWAY_MARK = "managed by smart-community-gateway: gateway login"
_NOT_FOUND_ERRORS = ("Client not found", "Role not found")

Acl = dict[str, Any]


class LoginConflictError(DynsecError):
    """The broker holds a client or role of that name which the gateway did not create."""


class ReservedLoginError(DynsecError):
    """The name is not a device's: invalid, or one of the gateway's own broker names."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A device's MQTT login, returned once at registration (``client_id`` is bound)."""

    username: str
    password: str = field(repr=False)
    publish_topics: tuple[str, ...]
    command_topic: str
    client_id: str = ""


class Provisioner(Protocol):
    """Creates and revokes broker credentials for devices."""

    def create(self, device_id: str) -> Credentials:
        """(Re)create the device's own client with a fresh password; return it once."""
        ...

    def revoke(self, device_id: str) -> None:
        """Delete the device's own client and role (a no-op when there are none)."""
        ...


def device_role(device_id: str) -> str:
    """The role holding a device's ACLs."""
    return f"device-{device_id}"


def device_topics(device_id: str) -> tuple[tuple[str, ...], str]:
    """The topics a device may publish on, and its command topic."""
    base = f"scc/v1/{device_id}"
    return tuple(f"{base}/{kind}" for kind in DEVICE_TOPIC_KINDS), f"{base}/command"


def device_acls(device_id: str) -> list[Acl]:
    """ACLs of ``device-<id>``: publish its own topics, read only its command topic."""
    publish, command = device_topics(device_id)
    acls: list[Acl] = [acl("publishClientSend", topic) for topic in publish]
    acls += [acl("subscribeLiteral", command), acl("publishClientReceive", command)]
    return acls


def gateway_acls() -> list[Acl]:
    """ACLs of the gateway: subscribe to and receive every device topic, publish commands
    and dead-letter replays; in worker mode, forward readings to the rule partitions."""
    return [
        acl(acltype, topic)
        for topic in ("scc/v1/#", "scc/internal/#")
        for acltype in (
            "subscribePattern",
            "publishClientReceive",
            "publishClientSend",
            "unsubscribePattern",
        )
    ]


def _find(response: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The ``client``/``role`` of a get response; None when the broker has none."""
    error = response.get("error")
    if error in _NOT_FOUND_ERRORS:
        return None
    if error:
        raise DynsecError(f"dynamic-security {response.get('command')} refused: {error}")
    found = (response.get("data") or {}).get(key)
    if not isinstance(found, dict):
        raise DynsecError(f"dynamic-security {response.get('command')}: no {key} in the answer")
    return found


def _acl_set(acls: object) -> frozenset[tuple[str, str, bool]]:
    items = acls if isinstance(acls, list) else []
    return frozenset(
        (str(a.get("acltype")), str(a.get("topic")), bool(a.get("allow")))
        for a in items
        if isinstance(a, dict)
    )


def _roles_of(client: Mapping[str, Any]) -> list[str]:
    roles = client.get("roles")
    return [str(r.get("rolename")) for r in roles if isinstance(r, dict)] if roles else []


def device_client_is_ours(device_id: str, client: Mapping[str, Any]) -> bool:
    """Whether a broker client of that user name is the device login the gateway made:
    our mark, or exactly what versions before the mark created (text name and own role)."""
    if client.get("textdescription") == DEVICE_MARK:
        return True
    return (
        "textdescription" not in client
        and client.get("textname") == f"scc device {device_id}"
        and _roles_of(client) == [device_role(device_id)]
    )


def device_role_is_ours(device_id: str, role: Mapping[str, Any]) -> bool:
    """Whether the ``device-<id>`` role is ours: our mark, or unmarked with exactly the
    device's ACLs (as versions before the mark created it)."""
    if role.get("textdescription") == DEVICE_MARK:
        return True
    return "textdescription" not in role and _acl_set(role.get("acls")) == _acl_set(
        device_acls(device_id)
    )


def gateway_client_is_ours(client: Mapping[str, Any]) -> bool:
    """Whether a client is the gateway login made here (marked, or as made before marks)."""
    if client.get("textdescription") == GATEWAY_MARK:
        return True
    return "textdescription" not in client and client.get("textname") == "scc gateway"


def gateway_role_is_ours(role: Mapping[str, Any]) -> bool:
    """Whether the ``scc-gateway`` role is ours (marked, or unmarked with exactly its ACLs)."""
    if role.get("textdescription") == GATEWAY_MARK:
        return True
    return "textdescription" not in role and _acl_set(role.get("acls")) == _acl_set(gateway_acls())


def _role_command(name: str, exists: bool, mark: str, acls: list[Acl]) -> dict[str, Any]:
    """Create the role, or reset an existing one of ours in place. Never delete and
    re-create a role other clients may hold: Mosquitto 2.0.11 leaves them pointing at freed
    memory (``getClient`` then answers garbage, seen here with the shared gateway role)."""
    command = "modifyRole" if exists else "createRole"
    return {"command": command, "rolename": name, "textdescription": mark, "acls": acls}


class DynsecProvisioner:
    """:class:`Provisioner` backed by the dynamic-security plugin of a running broker.

    ``reserved``: this deployment's own broker names (gateway login, client id); with the
    admin login and the ``scc-…`` names they are never provisioned, replaced or revoked.
    """

    def __init__(self, client: DynsecClient, reserved: ReservedNames = NO_CONFIGURED_NAMES) -> None:
        self.client = client
        self.reserved = reserved | ReservedNames.of((client.username,))

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        timeout: float = 5.0,
        reserved: ReservedNames = NO_CONFIGURED_NAMES,
    ) -> DynsecProvisioner:
        """A provisioner with its own admin connection (opened on first use)."""
        return cls(DynsecClient(host, port, username, password, timeout=timeout), reserved)

    def create(self, device_id: str) -> Credentials:
        """A fresh login bound to client id ``device_id``, replacing only an earlier one of
        ours (:class:`LoginConflictError` if the name is taken by anything else)."""
        client, role = self._existing(device_id)
        password = secrets.token_urlsafe(24)
        commands = self._deletions(device_id, client, None)
        commands += [
            _role_command(
                device_role(device_id), role is not None, DEVICE_MARK, device_acls(device_id)
            ),
            {
                "command": "createClient",
                "username": device_id,
                "password": password,
                "clientid": device_id,
                "textname": f"scc device {device_id}",
                "textdescription": DEVICE_MARK,
                "roles": [{"rolename": device_role(device_id), "priority": 0}],
            },
        ]
        self._run(commands)
        publish, command = device_topics(device_id)
        logger.info("provisioned broker credentials for %s", device_id)
        return Credentials(device_id, password, publish, command, device_id)

    def revoke(self, device_id: str) -> None:
        """Delete the device's own client (disconnecting it) and role; nothing else."""
        client, role = self._existing(device_id)
        commands = self._deletions(device_id, client, role)
        if commands:
            self._run(commands)
            logger.info("revoked broker credentials of %s", device_id)

    def ensure_gateway_role(
        self, username: str, password: str, client_id: str | None = None
    ) -> None:
        """Create (or reset) the gateway's role and client with ``password``; bound to
        ``client_id`` when given (leave it None for worker mode, whose processes connect
        with several ids). Refuses a name that is a device's or someone else's login."""
        client, role = self._existing_gateway(username)
        create: dict[str, Any] = {
            "command": "createClient",
            "username": username,
            "password": password,
            "textname": "scc gateway",
            "textdescription": GATEWAY_MARK,
            "roles": [{"rolename": GATEWAY_ROLE, "priority": 0}],
        }
        if client_id:
            create["clientid"] = client_id
        self._run(
            [
                *([{"command": "deleteClient", "username": username}] if client else []),
                _role_command(GATEWAY_ROLE, role is not None, GATEWAY_MARK, gateway_acls()),
                create,
            ]
        )

    def _existing_gateway(
        self, username: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The gateway's client and role on the broker, checked to be ours."""
        if username.casefold() == self.client.username.casefold():
            raise ReservedLoginError(f"{username!r} is the dynamic-security admin login")
        found = self.client.call(
            [
                {"command": "getClient", "username": username},
                {"command": "getRole", "rolename": GATEWAY_ROLE},
            ]
        )
        client, role = _find(found[0], "client"), _find(found[1], "role")
        if client is not None and not gateway_client_is_ours(client):
            raise LoginConflictError(
                f"broker login {username!r} exists and is not the gateway's; refusing to replace it"
            )
        if role is not None and not gateway_role_is_ours(role):
            raise LoginConflictError(f"broker role {GATEWAY_ROLE!r} exists and is not ours")
        return client, role

    def bind_device_logins(self, page: int = 500) -> list[str]:
        """Bind every device login of ours that has no client id yet (made by versions
        before the binding) to its device id; return their names. An upgrade step: those
        devices must connect with their device id as client id from then on."""
        bound: list[str] = []
        offset = 0
        while True:  # bounded: each page moves ``offset`` on; stops at the first short page
            answer = self.client.call(
                [{"command": "listClients", "verbose": True, "count": page, "offset": offset}]
            )[0]
            if answer.get("error"):
                raise DynsecError(f"dynamic-security listClients refused: {answer['error']}")
            found = [c for c in (answer.get("data") or {}).get("clients") or [] if c]
            todo = [
                str(c["username"])
                for c in found
                if not c.get("clientid") and device_client_is_ours(str(c["username"]), c)
            ]
            if todo:
                self._run([{"command": "setClientId", "username": u, "clientid": u} for u in todo])
                bound += todo
            if len(found) < page:
                return bound
            offset += page

    def close(self) -> None:
        """Close the admin connection."""
        self.client.close()

    def _existing(self, device_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The device's client and role on the broker, after checking the name is a
        device's and that whatever exists under it is ours."""
        problem = device_id_problem(device_id, self.reserved)
        if problem is not None:
            raise ReservedLoginError(problem)
        found = self.client.call(
            [
                {"command": "getClient", "username": device_id},
                {"command": "getRole", "rolename": device_role(device_id)},
            ]
        )
        client, role = _find(found[0], "client"), _find(found[1], "role")
        if client is not None and not device_client_is_ours(device_id, client):
            raise LoginConflictError(
                f"broker login {device_id!r} exists and was not created by this gateway; "
                "it is left as it is (choose another device id, or remove that login by hand)"
            )
        if role is not None and not device_role_is_ours(device_id, role):
            raise LoginConflictError(
                f"broker role {device_role(device_id)!r} exists and was not created by this "
                "gateway; it is left as it is"
            )
        return client, role

    @staticmethod
    def _deletions(
        device_id: str, client: dict[str, Any] | None, role: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        commands: list[dict[str, Any]] = []
        if client is not None:
            commands.append({"command": "deleteClient", "username": device_id})
        if role is not None:
            commands.append({"command": "deleteRole", "rolename": device_role(device_id)})
        return commands

    def _run(self, commands: list[dict[str, Any]]) -> None:
        for command, response in zip(commands, self.client.call(commands), strict=True):
            error = response.get("error")
            if error and not (
                command["command"].startswith("delete") and error in _NOT_FOUND_ERRORS
            ):
                raise DynsecError(f"dynamic-security {command['command']} refused: {error}")
