"""Which package may import which: the import-linter contracts of pyproject.toml hold, and
they fail when an import crosses an arrow.

The contracts are run through import-linter's own command line, on the real tree and on
temporary copies of it with one forbidden import added (the copy is analysed, not the
installed tree: each broken case must name its contract, which the real tree keeps).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
ROOT_PACKAGES: list[str] = CONFIG["importlinter"]["root_packages"]
CONTRACT_NAMES = {c["id"]: c["name"] for c in CONFIG["importlinter"]["contracts"]}
_LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run every contract on the packages under ``tree`` (no cache written anywhere)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", _LINT, "--no-cache", "--no-logo", "--config", "pyproject.toml"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_tree(dest: Path) -> Path:
    """The root packages and pyproject.toml, copied to ``dest``."""
    for package in ROOT_PACKAGES:
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACT_NAMES)} kept, 0 broken." in result.stdout


def test_an_untouched_copy_keeps_them(tmp_path: Path) -> None:
    result = lint_imports(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


# (file in the copy, line added to it, contract that must break)
CROSSINGS = [
    # a lower stage importing a higher one
    ("gateway/core/clock.py", "import gateway.runtime.schema", "gateway-layers"),
    ("gateway/ingest/pipeline.py", "import gateway.storage.spool", "gateway-layers"),
    ("gateway/sources/mqtt/wire.py", "from gateway.ingest import pipeline", "gateway-layers"),
    ("gateway/workorders/lifecycle.py", "import gateway.alerting.models", "gateway-layers"),
    # independent siblings of one layer
    ("gateway/storage/spool.py", "import gateway.notify.live", "gateway-layers"),
    ("gateway/api/auth.py", "import gateway.services.base", "gateway-layers"),
    # the top-level arrows of DESIGN.md
    ("devices/base.py", "import gateway.core.config", "devices-alone"),
    ("devices/smoke/model.py", "import rules.model", "devices-alone"),
    ("rules/model.py", "import gateway.core.clock", "rules-devices-only"),
    ("simulators/fleet.py", "import rules.model", "simulators-devices-only"),
    ("simulators/community.py", "import gateway.registry.models", "simulators-devices-only"),
    ("gateway/core/clock.py", "import simulators.fleet", "gateway-no-tools"),
    # a circle inside one package (base imports jsonkeys)
    ("devices/jsonkeys.py", "import devices.base", "no-cycles"),
    ("gateway/runtime/metrics.py", "import gateway.runtime.service", "no-cycles"),
]


@pytest.mark.parametrize(("path", "line", "contract"), CROSSINGS)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, path: str, line: str, contract: str
) -> None:
    tree = copy_tree(tmp_path)
    target = tree / path
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", "utf-8")
    result = lint_imports(tree)
    assert result.returncode != 0, f"{line!r} in {path} broke no contract:\n{result.stdout}"
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert CONTRACT_NAMES[contract] in broken, result.stdout


def test_a_stage_without_a_place_in_the_layers_breaks_them(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    (tree / "gateway" / "downlink").mkdir()
    (tree / "gateway" / "downlink" / "__init__.py").write_text('"""Not placed yet."""\n')
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "gateway.downlink" in result.stdout, result.stdout
