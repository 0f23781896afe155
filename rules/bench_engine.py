"""Micro-benchmark of the rules engine: ``python -m rules.bench_engine``.

1. ``evaluate``: batches of 5,000 observations of mixed kinds (smoke, throw_camera, bin,
   manhole) from a fleet of 200,000 devices with the default rules; about 0.5 % of the
   readings trigger something. Prints µs per observation (median batch).
2. Absence tracking for 1,000,000 devices: memory held by the engine (tracemalloc; the
   device id strings themselves are created beforehand, as a registry would hold them) and
   the time of one ``tick`` over all of them.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable

from rules.engine import Engine, Observation
from rules.loader import load_rules

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
KINDS = ("smoke", "throw_camera", "bin", "manhole")
Values = dict[str, object]


def _smoke(rng: random.Random, hot: bool) -> Values:
    if hot:
        return {"state": "alarm", "smoke": 0.3, "temperature": 40.0}
    return {"state": "normal", "smoke": 0.02, "temperature": 22.0, "battery": 80.0}


def _camera(rng: random.Random, hot: bool) -> Values:
    if hot:
        return {"event": "throw", "confidence": 0.9, "floor_estimate": 12, "facade": "N"}
    return {"event": "heartbeat", "facade": "N", "fw": "1.2.0"}


def _bin(rng: random.Random, hot: bool) -> Values:
    fill = 97.0 if hot else rng.uniform(5, 70)
    temperature = 20.0 + rng.random()
    return {"distance": 900, "fill": fill, "temperature": temperature, "position": "normal"}


def _manhole(rng: random.Random, hot: bool) -> Values:
    tilt = 30.0 if hot else rng.uniform(0, 2)
    return {"tilt": tilt, "state": "normal", "water_gap": 150.0, "battery": 90.0}


MAKERS: dict[str, Callable[[random.Random, bool], Values]] = {
    "smoke": _smoke,
    "throw_camera": _camera,
    "bin": _bin,
    "manhole": _manhole,
}


def make_batches(devices: int, batches: int, size: int, seed: int = 7) -> list[list[Observation]]:
    """Batches of mixed-kind observations with increasing times."""
    rng = random.Random(seed)
    ids = [f"{KINDS[i % 4]}-{i:07d}" for i in range(devices)]
    tags = {"street": "S1", "community": "C1", "grid": "G1", "building": "B1"}
    out = []
    for number in range(batches):
        batch = []
        for slot in range(size):
            device = rng.randrange(devices)
            kind = KINDS[device % 4]
            ts = T0 + (number * size + slot) * 1_000_000
            values = MAKERS[kind](rng, rng.random() < 0.005)
            batch.append(Observation(ids[device], kind, ts, values, tags))
        out.append(batch)
    return out


def bench_evaluate(batches: int, size: int) -> None:
    """µs per observation of ``evaluate`` with the default rules."""
    engine = Engine(load_rules(None), {})
    devices = 200_000
    for number in range(devices):  # registration, as the gateway does at start-up
        engine.seen(f"{KINDS[number % 4]}-{number:07d}", KINDS[number % 4], T0 - NS)
    data = make_batches(devices, batches, size)
    for batch in data[:10]:
        engine.evaluate(batch)
    timings = []
    transitions = 0
    for batch in data[10:]:
        start = time.perf_counter()
        transitions += len(engine.evaluate(batch))
        timings.append(time.perf_counter() - start)
    median, best = statistics.median(timings), min(timings)
    print(f"evaluate: {size} observations per batch, {len(timings)} batches, default rules")
    print(f"  median {median * 1e3:.2f} ms per batch = {median / size * 1e6:.2f} µs/observation")
    print(f"  best   {best * 1e3:.2f} ms per batch = {best / size * 1e6:.2f} µs/observation")
    print(f"  ≈ {size / median:,.0f} observations/s on one core; {transitions} transitions")


def bench_absence(devices: int) -> None:
    """Memory of absence tracking for many devices, and the cost of one tick."""
    ids = [f"{KINDS[i % 4]}-{i:07d}" for i in range(devices)]
    gc.collect()
    tracemalloc.start()
    engine = Engine(load_rules(None), {})
    for number, device_id in enumerate(ids):
        engine.seen(device_id, KINDS[number % 4], T0 + number)
    gc.collect()
    registered, _ = tracemalloc.get_traced_memory()
    rng = random.Random(3)
    for start in range(0, devices, 5000):  # one reading each: every rule's arrays grow
        batch = [
            Observation(ids[i], KINDS[i % 4], T0 + NS + i, MAKERS[KINDS[i % 4]](rng, False), {})
            for i in range(start, min(start + 5000, devices))
        ]
        engine.evaluate(batch)
    del batch
    gc.collect()
    active, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"absence: {devices:,} devices (device id strings not counted)")
    per_device = registered / devices
    print(f"  registered with seen(): {registered / 2**20:.1f} MiB = {per_device:.0f} B/device")
    print(
        f"  after one reading each (all rules' state allocated): {active / 2**20:.1f} MiB"
        f" = {active / devices:.0f} B/device"
    )
    start_time = time.perf_counter()
    fired = engine.tick(T0 + 60 * NS)
    quiet = time.perf_counter() - start_time
    print(f"  tick with nobody due: {quiet * 1e3:.1f} ms ({len(fired)} transitions)")
    start_time = time.perf_counter()
    fired = engine.tick(T0 + 3 * 86_400 * NS)
    storm = time.perf_counter() - start_time
    print(f"  tick with all {len(fired):,} devices going offline: {storm:.2f} s")


def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--devices", type=int, default=1_000_000)
    args = parser.parse_args()
    bench_evaluate(args.batches, args.size)
    bench_absence(args.devices)


if __name__ == "__main__":
    main()
