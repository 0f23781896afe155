"""The command line (``python -m gateway``, ``scc-gateway``): services, registry, run,
dead letters, tokens and the demo.

May import every other part of ``gateway`` (it is the top layer); nothing imports it.
"""
