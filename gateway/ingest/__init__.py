"""Where a message becomes a point: decode, validate, enrich from the registry, per-device
time and rate limits, line protocol, and the rejections that become dead letters.

May import ``gateway.sources`` (the batch interface), ``gateway.registry``, ``gateway.core``
and ``devices``.
"""
