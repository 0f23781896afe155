"""Grafana provisioning for the gateway: dashboards generated from code, datasource, provider.

``python -m grafana.build`` writes ``grafana/dashboards/*.json`` from the definitions in this
package (``--check`` fails when the committed JSON differs). Every panel queries the
provisioned InfluxDB datasource (InfluxQL) by its uid, :data:`DATASOURCE_UID`.
"""

from __future__ import annotations

#: The uid of the datasource in ``provisioning/datasources/influxdb.yaml``.
DATASOURCE_UID = "scc-influxdb"
