"""The device-id namespace, kept apart from the broker names the gateway uses itself.

A device id is at once the registry key, the MQTT topic segment (``scc/v1/<id>/…``), the
device's broker user name and the only client id that login may connect with, and an
InfluxDB tag value. So it is strict ASCII: 1-128 of ``A-Z a-z 0-9 _ . : -`` starting with a
letter or digit. That rules out everything MQTT gives a meaning to in topics (``+ # /``,
NUL, a leading ``$``), whitespace, and Unicode look-alikes of reserved names.

Reserved, compared case-insensitively (Mosquitto's names are case-sensitive, but a
``SCC-Gateway`` device beside the ``scc-gateway`` login only misleads people):

- ``scc`` alone or followed by ``- _ . :``: the gateway's own logins and client ids
  (``scc-gateway``, ``scc-gateway-<name>``, its worker ids, ``scc-dynsec-admin``, the
  admin connection's ``scc-dynsec-…``);
- the names a deployment configured: the gateway's broker login, the dynamic-security
  admin login, and the gateway's client id with every id derived from it (``<id>-…``).

This module is pure (no I/O): the registry, the API and the provisioner all ask it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.core.config import Settings

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")  # use with fullmatch
DEVICE_ID_RULE = (
    "1-128 of A-Z a-z 0-9 _ . : - starting with a letter or digit "
    "(it is the device's MQTT topic segment, user name and client id)"
)
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
_RESERVED_STEM = "scc"
_RESERVED_SEPARATORS = frozenset("-_.:")


@dataclass(frozen=True, slots=True)
class ReservedNames:
    """Broker names of one deployment that no device may take (casefolded)."""

    names: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()

    @classmethod
    def of(cls, logins: Iterable[str | None], client_ids: Iterable[str] = ()) -> ReservedNames:
        """Logins are reserved as they are; a client id also as the stem of ``<id>-…``."""
        ids = [cid for cid in client_ids if cid]
        names = {name.casefold() for name in (*logins, *ids) if name}
        return cls(frozenset(names), frozenset(f"{cid.casefold()}-" for cid in ids))

    def __or__(self, other: ReservedNames) -> ReservedNames:
        """Both sets of names."""
        return ReservedNames(self.names | other.names, self.prefixes | other.prefixes)

    def clash(self, device_id: str) -> str | None:
        """The configured name ``device_id`` would take, if any."""
        folded = device_id.casefold()
        if folded in self.names:
            return device_id
        return next((p + "…" for p in sorted(self.prefixes) if folded.startswith(p)), None)


NO_CONFIGURED_NAMES = ReservedNames()


def reserved_for(settings: Settings) -> ReservedNames:
    """The configured broker names of a deployment: its logins and its client id."""
    return ReservedNames.of(
        (settings.mqtt_username, settings.mqtt_admin_username), (settings.client_id,)
    )


def is_reserved_stem(name: str) -> bool:
    """Whether ``name`` is ``scc`` or starts with ``scc`` and a separator, in any case."""
    folded = name.casefold()
    if not folded.startswith(_RESERVED_STEM):
        return False
    rest = folded[len(_RESERVED_STEM) :]
    return not rest or rest[0] in _RESERVED_SEPARATORS


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    code = f"U+{ord(char):04X}"
    return f"{char!r} ({code} {name})" if name else f"{code}"


def _pattern_problem(device_id: str) -> str | None:
    if not device_id:
        return "device_id is empty; it must be " + DEVICE_ID_RULE
    if len(device_id) > 128:
        return f"device_id is {len(device_id)} characters long; it must be " + DEVICE_ID_RULE
    bad = next((i for i, c in enumerate(device_id) if c not in _ALLOWED), None)
    if bad is not None:
        what = _describe(device_id[bad])
        return f"device_id {device_id!r} has {what} at position {bad + 1}; it must be " + (
            DEVICE_ID_RULE
        )
    if not DEVICE_ID_RE.fullmatch(device_id):
        return f"device_id {device_id!r} must start with a letter or digit: " + DEVICE_ID_RULE
    return None


def device_id_problem(device_id: str, reserved: ReservedNames = NO_CONFIGURED_NAMES) -> str | None:
    """Why ``device_id`` cannot name a device, or None when it can."""
    problem = _pattern_problem(device_id)
    if problem is not None:
        return problem
    if is_reserved_stem(device_id):
        return (
            f"device_id {device_id!r} is reserved: ids starting with 'scc' and one of - _ . : "
            "(in any case) name the gateway's own broker logins and client ids"
        )
    clash = reserved.clash(device_id)
    if clash is not None:
        return (
            f"device_id {device_id!r} is reserved: it is (or derives from) {clash!r}, a broker "
            "login or client id of this gateway"
        )
    return None
