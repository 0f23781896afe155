"""The fleet of ``bench.million``: a hierarchy of realistic depth, the devices CSV, its
import through the CLI, and an InfluxDB that accepts a million ``device_id`` values."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.loadgen import Device
from gateway.registry.store import CSV_COLUMNS

#: Fan-out below the street: communities, grids per community, compounds per grid,
#: buildings per compound (4 × 5 × 5 × 10 = 1000 buildings: 1000 devices each at 1M).
FANOUT = (4, 5, 5, 10)


def hierarchy() -> dict[str, Any]:
    """Street → communities → grids → compounds → buildings, codes unique at every level."""

    def level(depth: int, prefix: str) -> list[dict[str, Any]]:
        if depth == len(FANOUT):
            return []
        name = ("community", "grid", "compound", "building")[depth]
        return [
            {
                "code": f"{prefix}{name[0].upper()}{n}",
                "level": name,
                "name": f"{name} {n}",
                "children": level(depth + 1, f"{prefix}{name[0].upper()}{n}"),
            }
            for n in range(1, FANOUT[depth] + 1)
        ]

    return {"code": "ST1", "level": "street", "name": "街道", "children": level(0, "")}


def buildings(tree: dict[str, Any]) -> list[str]:
    """Codes of the leaves (buildings), depth first."""
    children = tree.get("children") or []
    if not children:
        return [str(tree["code"])]
    return [code for child in children for code in buildings(child)]


def write_devices_csv(path: Path, devices: list[Device], leaves: list[str]) -> None:
    """One row per device; consecutive devices share a building, as installers number them."""
    per_leaf = max(1, -(-len(devices) // len(leaves)))
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(CSV_COLUMNS)
        for n, device in enumerate(devices):
            params = "depth_mm=1000" if device.kind == "bin" else ""
            node = leaves[min(n // per_leaf, len(leaves) - 1)]
            model = f"{device.kind}-m{n % 3}"
            out.writerow([device.device_id, device.kind, model, "json", node, "", params, ""])


def import_registry(workdir: Path, devices: list[Device]) -> float:
    """Write the community and import it with the CLI, as an operator would; seconds."""
    community = workdir / "community"
    community.mkdir()
    tree = hierarchy()
    (community / "hierarchy.yaml").write_text(yaml.safe_dump(tree, allow_unicode=True))
    write_devices_csv(community / "devices.csv", devices, buildings(tree))
    print(f"importing {len(devices)} devices (python -m gateway registry load) …", flush=True)
    started = time.perf_counter()
    # its own process (and its memory is not the benchmark's)
    command = [sys.executable, "-m", "gateway", "registry", "--state-dir", str(workdir)]
    subprocess.run([*command, "load", str(community)], check=True, timeout=600)
    return time.perf_counter() - started
