"""Smart-community gateway: MQTT ingest, pipeline, sinks, alerts, work orders and API."""
