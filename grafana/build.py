"""Write the dashboard JSON files from their definitions: ``python -m grafana.build``.

``--check`` writes nothing and exits 1 when a committed file differs from what the code
generates (or is missing, or no dashboard generates it), naming the files; run without it
to regenerate. File names follow the house rule that a device kind's dashboard file is
named after the kind.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from grafana import devices, fleet, health
from grafana.model import Dashboard

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

#: File stem → dashboard factory.
DASHBOARDS: Mapping[str, Callable[[], Dashboard]] = MappingProxyType(
    {
        "fleet": fleet.dashboard,
        "gateway": health.dashboard,
        "smoke": devices.smoke,
        "throw_camera": devices.throw_camera,
        "bin": devices.bin_dashboard,
        "manhole": devices.manhole,
    }
)


def render(dashboard: Dashboard) -> str:
    """Stable JSON text: two-space indent, keys as built, non-ASCII kept, final newline."""
    return json.dumps(dashboard.to_json(), indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{stem}.json": render(factory()) for stem, factory in DASHBOARDS.items()}


def stale(directory: Path = DASHBOARD_DIR) -> list[str]:
    """Files in ``directory`` that differ from the generated ones, are missing or extra."""
    wanted = generate()
    present = {path.name for path in directory.glob("*.json")} if directory.is_dir() else set()
    problems = []
    for name, text in sorted(wanted.items()):
        path = directory / name
        if name not in present:
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: differs from the generated dashboard")
    problems += [f"{name}: no dashboard generates it" for name in sorted(present - set(wanted))]
    return problems


def write(directory: Path = DASHBOARD_DIR) -> list[Path]:
    """Write every dashboard (and remove JSON files no dashboard generates)."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = generate()
    for path in directory.glob("*.json"):
        if path.name not in wanted:
            path.unlink()
    written = []
    for name, text in wanted.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m grafana.build", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="dashboard folder")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m grafana.build", file=sys.stderr)
            return 1
        print(f"{len(DASHBOARDS)} dashboards up to date in {args.out}")
        return 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
