"""Where a login is provisioned: per-device MQTT credentials and ACL roles through
Mosquitto's dynamic-security plugin (client, commands, the initial plugin file).

May import ``gateway.ingest`` and the layers below it (the device-id rule of the registry).
"""
