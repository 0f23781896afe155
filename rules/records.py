"""What goes into the engine (observations) and what comes out (transitions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

State = Literal["pending", "firing", "resolved"]


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 4x as much to build, per message
class Observation:
    """One valid reading of one device (read-only by convention).

    ``values`` holds the reading's fields (a field that is None or missing is absent; it
    may be the reading's own attribute dict, so it is never modified); ``tags`` the
    hierarchy codes (street, community, grid, compound, building, unit) and the model,
    usually shared by every device of the same place (never modified either).
    """

    device_id: str
    kind: str
    ts_ns: int
    values: Mapping[str, object]
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of one alert, for the alert layer.

    One alert exists per (rule, device), or per (rule, group) for count rules. ``firing``
    with ``repeat=True`` reports a further triggering reading while the alert already fires
    (the alert layer counts occurrences); every other transition is an edge. ``resolved``
    after ``pending`` means the alert never fired and can be dropped.
    """

    rule_id: str
    device_id: str
    kind: str
    state: State
    severity: str
    ts_ns: int
    values: Mapping[str, object]
    group: str | None
    message: str
    repeat: bool = False
