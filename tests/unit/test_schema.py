"""The relational schema: every table module is in ``gateway.runtime.schema``, the database
base imports none of them, and ``make_engine`` creates every table."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

import gateway
from gateway.core.db import Base
from gateway.runtime.schema import TABLE_MODULES, make_engine

ROOT = Path(__file__).resolve().parents[2]


def _import_every_gateway_module() -> None:
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if info.name != "gateway.__main__":
            importlib.import_module(info.name)


def test_every_mapped_table_lives_in_a_schema_module() -> None:
    _import_every_gateway_module()
    declared_in = {mapper.class_.__module__ for mapper in Base.registry.mappers}
    schema_modules = {module.__name__ for module in TABLE_MODULES}
    assert declared_in <= schema_modules, f"not in runtime.schema: {declared_in - schema_modules}"


def test_make_engine_creates_every_table(tmp_path: Path) -> None:
    _import_every_gateway_module()
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables)
    finally:
        engine.dispose()


def test_the_database_base_registers_no_table_by_itself() -> None:
    code = "import gateway.core.db as db; print(sorted(db.Base.metadata.tables))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
