"""Where messages come from: the source interface (``batch``: batches in, acknowledgement out
once the batch is safe) and one subpackage per source (``mqtt``; HTTP push, LoRaWAN network
servers or NATS go beside it as ``sources/<name>/``).

May import ``gateway.registry``, ``gateway.core`` and ``devices``.
"""
