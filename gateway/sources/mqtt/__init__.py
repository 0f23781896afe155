"""The MQTT 5 source: wire format, one connection kept up, batching, oversized messages,
publishing (rule forwards) and the receive times kept across redelivery.

May import ``gateway.sources.batch`` and what ``gateway.sources`` may import.
"""
