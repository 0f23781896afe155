"""``python -m gateway <command>``: the command line lives in :mod:`gateway.cli.main`."""

from __future__ import annotations

import sys

from gateway.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
