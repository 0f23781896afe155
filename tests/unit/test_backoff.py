"""The one backoff policy (gateway.core.backoff) and the figures each retry loop keeps."""

from __future__ import annotations

import random

import pytest

from gateway.alerting.alerts import LOCKED_BACKOFF
from gateway.core.backoff import Backoff, Jitter, Retry
from gateway.runtime.persist import RETRY_BACKOFF


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RETRY_BACKOFF, [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]),  # persister
        (Backoff(0.5, 30.0), [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]),  # supervised threads
        (LOCKED_BACKOFF, [0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0]),  # alert rows, locked
    ],
)
def test_without_jitter_the_wait_doubles_up_to_the_ceiling(
    policy: Backoff, expected: list[float]
) -> None:
    got = [policy.delay(attempt) for attempt in range(1, len(expected) + 1)]
    assert got == pytest.approx(expected)


def lowest(jitter: Jitter, ceiling: float, first: float) -> float:
    """The least wait each jitter may draw."""
    return {"full": 0.0, "equal": ceiling / 2}.get(jitter, first)


@pytest.mark.parametrize("jitter", ["full", "equal", "above_first"])
def test_jitter_draws_within_its_range(jitter: Jitter) -> None:
    policy = Backoff(0.2, 5.0, jitter)
    rng = random.Random(3)
    for attempt in range(1, 12):
        ceiling = policy.ceiling(attempt)
        low = lowest(jitter, ceiling, 0.2)
        draws = [policy.delay(attempt, rng) for _ in range(50)]
        assert all(low <= d <= ceiling for d in draws), (attempt, min(draws), max(draws))
        assert max(draws) - min(draws) >= (ceiling - low) / 4, "no spread"


def test_a_huge_attempt_number_is_the_ceiling_not_an_overflow() -> None:
    assert Backoff(0.1, 2.0).delay(1 << 62) == 2.0


@pytest.mark.parametrize(("first", "most"), [(-1.0, 1.0), (2.0, 1.0)])
def test_nonsense_figures_are_refused(first: float, most: float) -> None:
    with pytest.raises(ValueError, match="first_s <= max_s"):
        Backoff(first, most)


def test_retry_counts_failures_and_starts_over_after_success() -> None:
    retry = Retry(Backoff(1.0, 8.0))
    assert [retry.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert retry.ceiling == 8.0
    retry.reset()
    assert retry.next_delay() == 1.0
