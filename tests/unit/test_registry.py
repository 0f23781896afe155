"""Registry loading: all or nothing, and a second load updates what it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.registry.store import Registry, RegistryError
from gateway.runtime.schema import make_engine

COMMUNITY = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"
HEADER = "device_id,kind,model,codec,node,location,params,installed_at\n"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(make_engine(f"sqlite:///{tmp_path / 'g.db'}"))
    registry.load_hierarchy(yaml.safe_load((COMMUNITY / "hierarchy.yaml").read_text()))
    return registry


def test_reloading_updates_known_devices_and_adds_new_ones(
    registry: Registry, tmp_path: Path
) -> None:
    csv = tmp_path / "devices.csv"
    csv.write_text(HEADER + "s-1,smoke,A,json,B1-1,101,,\ns-2,smoke,A,json,B1-1,102,,\n")
    assert registry.load_devices_csv(csv) == 2
    csv.write_text(
        HEADER + "s-2,smoke,B,json,B2-1,201,floor=2,\ns-3,bin,C,em310-udl,C1,,depth_mm=900,\n"
    )
    assert registry.load_devices_csv(csv) == 2
    infos = registry.device_infos()
    assert sorted(infos) == ["s-1", "s-2", "s-3"]
    assert (infos["s-2"].model, dict(infos["s-2"].path)["building"]) == ("B", "B2")
    assert (infos["s-3"].codec, infos["s-3"].params) == ("em310-udl", {"depth_mm": "900"})
    assert registry.device_infos(["s-1"]).keys() == {"s-1"}


def test_one_bad_row_loads_nothing(registry: Registry, tmp_path: Path) -> None:
    csv = tmp_path / "devices.csv"
    csv.write_text(HEADER + "s-1,smoke,A,json,B1-1,101,,\ns-1,smoke,A,json,B1-1,101,,\n")
    with pytest.raises(RegistryError, match="repeated"):
        registry.load_devices_csv(csv)
    assert registry.device_infos() == {}
