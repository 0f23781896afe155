"""An unexpected exception in an MQTT session ends that session, never the source."""

from __future__ import annotations

import asyncio

from gateway.sources.mqtt.session import MqttSession, SourceOptions


class _Buggy(MqttSession):
    """Its first two sessions fail with a bug (after subscribing), the third connects."""

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        self.calls = 0
        self.cleared_between: list[bool] = []

    async def _session(self) -> None:
        self.calls += 1
        self.cleared_between.append(not self.connected.is_set())
        self.connected.set()
        if self.calls <= 2:
            raise KeyError("a bug of ours")
        self._stopping = True


def test_a_bug_in_a_session_is_counted_and_the_source_connects_again() -> None:
    async def main() -> _Buggy:
        source = _Buggy(SourceOptions(reconnect_min_s=0.01, reconnect_max_s=0.02))
        await asyncio.wait_for(source._run(), 5)
        return source

    source = asyncio.run(main())
    assert source.calls == 3
    assert source.session_errors == 2
    assert source.cleared_between == [True, True, True]  # readiness saw it down each time
    assert not source.connected.is_set()
