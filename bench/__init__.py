"""Benchmarks: figures printed by ``python -m bench`` (``make bench``), never asserted by tests."""
