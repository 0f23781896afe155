"""Rules → alerts: the rule stage that runs the rules engine over accepted readings, the alert
lifecycle (pending → firing → resolved, ack) and the alert tables.

May import ``gateway.workorders`` (a firing alert opens an order), ``gateway.ingest`` and the
layers below, ``rules`` and ``devices``; never storage, notify, the API or the runtime.
"""
