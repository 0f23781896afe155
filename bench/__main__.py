"""``python -m bench`` (``make bench``): the whole suite, under 7 minutes on 2 cores.

In order: end-to-end ingest against two baselines (``e2e``), alert and storage latency
under background load (``latency``), one process against two sharing the subscription
(``scale``), and a million registered devices (``million``). ``python -m bench NAME ...``
runs only the parts named.
"""

import sys
import time
from collections.abc import Callable

PARTS = ("e2e", "latency", "scale", "million")


def _part(name: str) -> Callable[[], int]:
    if name == "e2e":
        from bench import e2e

        return e2e.main
    if name == "latency":
        from bench import alert_latency

        return alert_latency.main
    if name == "scale":
        from bench import scale

        return scale.main
    from bench import million

    return lambda: million.main([])


def main(argv: list[str]) -> int:
    """Run the named parts (all by default); non-zero if any failed."""
    names = argv or list(PARTS)
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(PARTS)}")
        return 2
    status = 0
    started = time.monotonic()
    for index, name in enumerate(names):
        if index:
            print()
        print(f"=== {name} ===", flush=True)
        status |= _part(name)()
    print(f"\nbenchmarks done in {(time.monotonic() - started) / 60:.1f} min")
    return status


sys.exit(main(sys.argv[1:]))
