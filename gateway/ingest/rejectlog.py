"""Logging of rejected messages without flooding the log (dead letters keep every one)."""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger("gateway.ingest.pipeline")  # the name operators know these lines by


class RejectedLike(Protocol):
    """What a log line needs of a rejection (``gateway.ingest.pipeline.Rejected``)."""

    @property
    def topic(self) -> str: ...
    @property
    def device_id(self) -> str | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...


class RateLimitedLog:
    """Logs rejections without flooding: the first per (reason, device), then once per
    ``interval_s`` with a count, and never more than ``max_lines`` lines per interval overall."""

    def __init__(
        self, interval_s: float = 60.0, max_lines: int = 20, max_keys: int = 10_000
    ) -> None:
        self.interval_s = interval_s
        self.max_lines = max_lines
        self.max_keys = max_keys
        self._last: dict[tuple[str, str | None], tuple[float, int]] = {}
        self._window_start = -1e18
        self._window_lines = 0
        self._window_dropped = 0

    def __call__(self, item: RejectedLike) -> None:
        key = (item.reason, item.device_id)
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-1e18, 0))
        if now - last < self.interval_s:
            self._last[key] = (last, suppressed + 1)
            return
        if now - self._window_start >= self.interval_s:
            if self._window_dropped:
                log.warning(
                    "%d more rejections were not logged (see dead letters)", self._window_dropped
                )
            self._window_start, self._window_lines, self._window_dropped = now, 0, 0
        if self._window_lines >= self.max_lines:
            self._window_dropped += 1
            return
        self._window_lines += 1
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = (now, 0)
        more = f" ({suppressed} more since last report)" if suppressed else ""
        log.warning(
            "rejected %s from %s on %s: %s%s",
            item.reason,
            item.device_id or "?",
            item.topic,
            item.detail,
            more,
        )
