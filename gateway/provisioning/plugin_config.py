"""The plugin's own file: a first ``dynamic-security.json`` with one admin client.

The file stores PBKDF2-HMAC-SHA512 hashes (base64, 12-byte salt, as ``mosquitto_ctrl dynsec
init`` writes them), so it is generated here without needing ``mosquitto_ctrl``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

ADMIN_ROLE = "admin"
_HASH_ITERATIONS = 101  # what mosquitto_ctrl and the plugin use; secrets here are random


def acl(acltype: str, topic: str, allow: bool = True) -> dict[str, Any]:
    """One ACL entry of a role."""
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
        acl("publishClientSend", "$CONTROL/dynamic-security/#"),
        acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
        acl("subscribePattern", "$CONTROL/dynamic-security/#"),
        acl("unsubscribePattern", "#"),
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
