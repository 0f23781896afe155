"""The running service: wires source → pipeline → persist (spool, dead letters, rule state)
→ acknowledgement and spool → InfluxDB; workers and rule partitions, readiness, metrics,
fleet statistics, the API server in the same loop, and the whole relational ``schema``.

May import every stage below it (api, services' InfluxDB query helper included); only the CLI
imports it.
"""
