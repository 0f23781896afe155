"""``python -m bench`` (``make bench``): the end-to-end ingest benchmark, then alert latency.

``python -m bench scale``: one gateway process against two sharing the subscription.
"""

import sys

from bench import alert_latency, e2e

if sys.argv[1:] == ["scale"]:
    from bench import scale

    sys.exit(scale.main())
status = e2e.main()
print()
status |= alert_latency.main()
sys.exit(status)
