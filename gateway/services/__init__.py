"""Local Mosquitto and InfluxDB servers for development, demos and tests (``services
up|down|status``): processes, their configuration files, InfluxQL helpers.

May import ``gateway.provisioning`` (the broker's first dynamic-security file) and the layers
below; never the API, the runtime or the CLI.
"""
