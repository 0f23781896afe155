"""Device kinds: one folder per kind, listed here in one explicit tuple.

Adding a kind means adding its folder and its name to ``KINDS``; nothing is registered by
import side effects.
"""

from __future__ import annotations

import importlib
from functools import cache

from devices.base import DeviceKind

KINDS: tuple[str, ...] = ("smoke", "throw_camera", "bin", "manhole")


@cache
def load_kind(name: str) -> DeviceKind:
    """The DeviceKind of one folder; KeyError for a name not in ``KINDS``."""
    if name not in KINDS:
        raise KeyError(f"unknown device kind {name!r}; known: {', '.join(KINDS)}")
    module = importlib.import_module(f"devices.{name}")
    kind: DeviceKind = module.KIND
    return kind


def all_kinds() -> dict[str, DeviceKind]:
    """Every installed kind by name, in ``KINDS`` order."""
    return {name: load_kind(name) for name in KINDS}
