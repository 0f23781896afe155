"""Shared machinery below every stage: settings, clocks, the database base, metric samples,
line protocol, the one backoff policy, GC tuning and supervised threads.

May import ``devices`` only (nothing else of ``gateway``, ``rules`` or ``simulators``).
"""
