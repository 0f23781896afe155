"""The committed demo community matches its generator and has the promised shape."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from simulators.community import (
    LEVELS,
    ROLES,
    CommunityError,
    DeviceRow,
    Node,
    generate_community,
    load_devices,
    load_hierarchy,
    parse_location,
    parse_params,
    write_community,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "demo_community"


@pytest.fixture(scope="module")
def root() -> Node:
    return load_hierarchy(FIXTURE / "hierarchy.yaml")


@pytest.fixture(scope="module")
def rows() -> list[DeviceRow]:
    return load_devices(FIXTURE / "devices.csv")


def test_committed_fixture_is_the_generator_output_for_seed_1(tmp_path: Path) -> None:
    write_community(tmp_path, seed=1)
    for name in ("hierarchy.yaml", "devices.csv"):
        assert (tmp_path / name).read_bytes() == (FIXTURE / name).read_bytes(), (
            f"{name} is stale: run python -m simulators generate-community --seed 1"
        )


def test_generator_is_deterministic_and_seeded() -> None:
    assert generate_community(1).devices_text() == generate_community(1).devices_text()
    assert generate_community(1).hierarchy_text() != generate_community(2).hierarchy_text()


@pytest.mark.parametrize(
    ("level", "count"),
    [("street", 1), ("community", 1), ("grid", 2), ("compound", 4), ("building", 20), ("unit", 40)],
)
def test_hierarchy_counts(root: Node, level: str, count: int) -> None:
    assert sum(1 for node in root.walk() if node.level == level) == count


def test_hierarchy_codes_follow_the_scheme(root: Node) -> None:
    codes = [node.code for node in root.walk()]
    assert len(codes) == len(set(codes))
    expected = {"ST1", "SQ1", "G1", "G2", "C1", "C2", "C3", "C4"}
    expected |= {f"B{b}" for b in range(1, 21)}
    expected |= {f"B{b}-{u}" for b in range(1, 21) for u in (1, 2)}
    assert set(codes) == expected


def test_levels_nest_in_order(root: Node) -> None:
    for node in root.walk():
        for child in node.children:
            assert LEVELS.index(child.level) == LEVELS.index(node.level) + 1


def test_buildings_have_floors(root: Node) -> None:
    buildings = [node for node in root.walk() if node.level == "building"]
    assert all(node.floors is not None and 15 <= node.floors <= 18 for node in buildings)
    assert [len(node.children) for node in buildings] == [2] * 20


def test_staff_teams(root: Node) -> None:
    for node in root.walk():
        roles = Counter(person.role for person in node.staff)
        if node.level == "grid":
            assert roles["grid_head"] == 1 and roles["grid_member"] >= 1
        if node.level == "compound":
            assert roles["property_manager"] >= 1
    people = [person for node in root.walk() for person in node.staff]
    assert {person.role for person in people} == set(ROLES)
    assert all(person.email.endswith("@example.org") for person in people)
    assert len({person.email for person in people}) == len(people)
    assert any(n.level == "building" and not n.staff for n in root.walk()), "only some heads"


def test_device_counts(rows: list[DeviceRow]) -> None:
    assert len(rows) == 2000
    assert Counter(row.kind for row in rows) == {
        "smoke": 1800,
        "throw_camera": 40,
        "bin": 100,
        "manhole": 60,
    }


def test_device_ids_unique_and_nodes_exist(rows: list[DeviceRow], root: Node) -> None:
    assert len({row.device_id for row in rows}) == len(rows)
    codes = {node.code for node in root.walk()}
    assert {row.node for row in rows} <= codes


@pytest.mark.parametrize(
    ("kind", "models"),
    [
        ("smoke", {("JTY-GD-H388", "json"): 1800}),
        ("throw_camera", {("HK-TC-200", "json"): 40}),
        ("bin", {("EM310-UDL", "em310-udl"): 50, ("SB-200", "json"): 50}),
        ("manhole", {("EM310-TILT", "em310-tilt"): 30, ("MC-100", "json"): 30}),
    ],
)
def test_models_and_codecs(
    rows: list[DeviceRow], kind: str, models: dict[tuple[str, str], int]
) -> None:
    assert Counter((r.model, r.codec) for r in rows if r.kind == kind) == models


def test_device_placement_and_params(rows: list[DeviceRow]) -> None:
    by_id = {row.device_id: row for row in rows}
    cam = by_id["cam-B3-east"]
    assert (cam.node, cam.params["facade"], cam.location) == ("B3", "east", "east")
    assert 15 <= int(cam.params["floors"]) <= 18
    assert by_id["bin-C2-07"].node == "C2" and int(by_id["bin-C2-07"].params["depth_mm"]) > 0
    assert by_id["mh-C1-03"].node == "C1" and int(by_id["mh-C1-03"].params["depth_cm"]) > 0
    smoke = by_id["smoke-B3-2-1001"]
    assert (smoke.node, smoke.location, smoke.params["floor"]) == ("B3-2", "1001", "10")
    per_unit = Counter(row.node for row in rows if row.kind == "smoke")
    assert set(per_unit.values()) == {45}


def test_every_smoke_id_is_its_location_shorthand(rows: list[DeviceRow]) -> None:
    for row in rows:
        if row.kind == "smoke":
            node, location = parse_location(row.device_id.removeprefix("smoke-"))
            assert (node, location) == (row.node, row.location)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("B3-2-1001", ("B3-2", "1001")), ("B12-1-301", ("B12-1", "301")), ("C1-x", ("C1", "x"))],
)
def test_location_shorthand_parses(text: str, expected: tuple[str, str]) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize("text", ["B3", "-1001", "B3-2-", ""])
def test_location_shorthand_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="node"):
        parse_location(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", {}), ("depth_mm=1200", {"depth_mm": "1200"}), ("a=1;b=x", {"a": "1", "b": "x"})],
)
def test_params_parse(text: str, expected: dict[str, str]) -> None:
    assert parse_params(text) == expected


def test_params_reject_items_without_equals() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_params("depth_mm")


def test_load_devices_names_the_bad_line(tmp_path: Path) -> None:
    lines = (FIXTURE / "devices.csv").read_text(encoding="utf-8").splitlines()[:3]
    lines[2] = lines[2].replace(",2024-", ",not-a-date-")
    bad = tmp_path / "devices.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CommunityError, match=r"devices.csv:3"):
        load_devices(bad)


def test_load_hierarchy_refuses_duplicate_codes(tmp_path: Path) -> None:
    path = tmp_path / "hierarchy.yaml"
    path.write_text(
        "code: ST1\nlevel: street\nname: x\nchildren:\n- {code: ST1, level: community, name: y}\n",
        encoding="utf-8",
    )
    with pytest.raises(CommunityError, match="ST1 appears twice"):
        load_hierarchy(path)
