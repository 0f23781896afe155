"""Work orders: where an order is routed (``routing``: the lowest node with a responsible
team), its lifecycle with SLA timers and escalation, and the work-order tables.

May import ``gateway.ingest`` and the layers below it; never alerting (an alert is read
through ``models.RaisingAlert``), storage, notify, provisioning, the API or the runtime.
"""
