"""Sinks: the durable spool, the InfluxDB writers and the drainer between them, and the
dead-letter store. New sinks go here.

May import ``gateway.ingest`` and the layers below it; never alerting, API or runtime.
"""
