"""``python -m bench``: run the benchmark suite and print its table."""

import sys

from bench.e2e import main

sys.exit(main())
