"""The load generator counts every PUBACK, however the stream is split."""

from __future__ import annotations

import asyncio
import random

from bench.loadgen import _count_acks


def _count(chunks: list[bytes]) -> int:
    async def main() -> int:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        acked = [0]
        await _count_acks(reader, acked)
        return acked[0]

    return asyncio.run(main())


def _split(stream: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(stream)), 20))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def test_plain_acks_split_anywhere_are_all_counted() -> None:
    # packet ids whose bytes look like PUBACK heads and lengths (0x40, 0x02) included
    stream = b"".join(b"\x40\x02" + n.to_bytes(2, "big") for n in range(1, 3000))
    rng = random.Random(7)
    for _ in range(20):
        assert _count(_split(stream, rng)) == 2999


def test_acks_with_reason_codes_and_other_packets_are_walked() -> None:
    plain = b"\x40\x02\x00\x01"
    with_reason = b"\x40\x03\x00\x02\x10"  # "no matching subscribers"
    ping = b"\xd0\x00"
    stream = plain * 5 + with_reason + ping + plain * 7 + with_reason
    rng = random.Random(3)
    for _ in range(20):
        assert _count(_split(stream, rng)) == 5 + 1 + 7 + 1
