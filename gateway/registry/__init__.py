"""The registry: the hierarchy (street → … → unit), its staff and the registered devices,
their tables, loading and lookups, and the device-id rule.

May import ``gateway.core`` and ``devices``.
"""
