"""Notifications: dispatch of alert and work-order events to webhooks and e-mail with bounded
retries (``dispatch``), their templates and signatures, and the live event hub of the streams.

May import ``gateway.ingest`` and the layers below it; never alerting, work orders, storage,
provisioning, the API or the runtime (events reach it as plain dicts).
"""
