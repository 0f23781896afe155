"""``python -m bench`` (``make bench``): the end-to-end ingest benchmark, then alert latency."""

import sys

from bench import alert_latency, e2e

status = e2e.main()
print()
status |= alert_latency.main()
sys.exit(status)
