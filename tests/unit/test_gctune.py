"""The gateway process's garbage-collector settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.core import gctune


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_start_up_objects_are_frozen_and_collections_are_rare() -> None:
    survivor = [{"device": n} for n in range(1000)]  # start-up state, e.g. the registry
    gctune.tune_for_service()
    assert gc.get_freeze_count() >= len(survivor)
    assert gc.get_threshold() == (
        gctune.YOUNG_THRESHOLD,
        gctune.MIDDLE_THRESHOLD,
        gctune.OLD_THRESHOLD,
    )
    assert gc.get_threshold()[0] > 700  # the default collects every 700 allocations


@pytest.mark.usefixtures("restore_gc")
def test_cyclic_garbage_made_later_is_still_collected() -> None:
    gctune.tune_for_service()

    class Node:
        def __init__(self) -> None:
            self.peer: Node | None = None

    first, second = Node(), Node()
    first.peer, second.peer = second, first
    alive = len(gc.get_objects())
    del first, second
    assert gc.collect() >= 2
    assert len(gc.get_objects()) <= alive
