"""Conformance: every kind in ``devices.KINDS`` keeps the same contract.

Samples under ``devices/<kind>/samples/``: ``valid/<name>.json`` decodes with ``json``;
``valid/<codec>__<name>.bin`` (raw bytes) or ``.hex`` (hex text, ``#`` comments) with that
codec, or without a known codec prefix with the kind's one binary codec (``json`` if none).
``invalid/<reason>__[<codec>__]<name>.<ext>`` must be rejected with DecodeError ``reason``
by the codec or by ``KIND.validate``. ``params.json`` (optional) holds install parameters
for ``validate`` and the simulator. Rules (``rules.yaml``) share one shape, see ``RULE_KEYS``.
Every field takes its own JSON type only and no key may repeat, on both validation paths
(see the last section; derived from the field tables and samples, so new kinds too).
"""

from __future__ import annotations

import enum
import importlib
import random
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo

import devices.base
from devices import KINDS, load_kind
from devices.base import TOPIC_KINDS, DecodeError, DeviceKind, FieldSpec, Reading, SimMessage

DEVICES_DIR = Path(devices.base.__file__).resolve().parent
SAMPLE_SUFFIXES = {".json", ".bin", ".hex"}
#: Reasons every JSON kind has an invalid sample for (binary codecs may add their own).
JSON_REASONS = {"malformed_json", "not_utf8", "not_object", "batch_too_large"}
JSON_REASONS |= {"out_of_range", "unknown_field", "missing_field", "wrong_type"}
NOT_FIELDS = {"ts", "device_id"}
TRIGGERS = {"when", "absent", "rate"}
RULE_KEYS = {"id", "title", "device_type", "severity", "clear", "for", "count", "work_order"}
RULE_KEYS |= TRIGGERS
SEVERITIES = {"info", "warning", "major", "critical"}
EQUALITY_OPS = {"eq", "ne", "in", "not_in"}
ORDER_OPS = {"lt", "le", "gt", "ge"}
#: Registry tags a rule may group by besides the kind's own fields.
HIERARCHY_TAGS = {"device_id", "street", "community", "grid", "compound", "building", "unit"}
DURATION = re.compile(r"^\d+(\.\d+)?(s|m|h|d)$|^\d+x heartbeat$")
T0 = 1_700_000_000.0


# -- helpers -----------------------------------------------------------------------------


def _kind_params(kind_name: str) -> dict[str, str]:
    path = DEVICES_DIR / kind_name / "samples" / "params.json"
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in orjson.loads(path.read_bytes()).items()}


def _sample_params(group: str) -> list[Any]:
    found: list[Any] = []
    for kind_name in KINDS:
        folder = DEVICES_DIR / kind_name / "samples" / group
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            found.append(pytest.param(kind_name, path, id=f"{kind_name}/{group}/{path.name}"))
    return found


def _payload(path: Path) -> bytes:
    if path.suffix == ".hex":
        lines = path.read_text(encoding="ascii").splitlines()
        return bytes.fromhex(" ".join(line.split("#", 1)[0] for line in lines))
    return path.read_bytes()


def _codec_name(kind: DeviceKind, path: Path, prefix_index: int) -> str:
    parts = path.stem.split("__")
    if len(parts) > prefix_index + 1 and parts[prefix_index] in kind.codecs:
        return parts[prefix_index]
    binary = [name for name in kind.codecs if name != "json"]
    if path.suffix != ".json" and len(binary) == 1:
        return binary[0]
    return "json"


def _decode_and_validate(kind: DeviceKind, codec: str, payload: bytes) -> list[Reading]:
    params = _kind_params(kind.name)
    return [kind.validate(raw, params) for raw in kind.codecs[codec].decode(payload)]


def _not_written(kind_name: str) -> frozenset[str]:
    module = importlib.import_module(f"devices.{kind_name}.model")
    value: frozenset[str] = getattr(module, "NOT_WRITTEN", frozenset())
    return value


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """Strip ``X | None`` and ``Annotated``; return the base type and its constraints."""
    metadata: list[Any] = []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        assert len(args) == 1, f"{annotation} is a union of several types"
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata.extend(extra)
    return annotation, metadata


def _bound(metadata: list[Any], names: tuple[str, str]) -> float | None:
    """The ``ge``/``gt`` (or ``le``/``lt``) constraint, also inside nested FieldInfo."""
    found: float | None = None
    for item in metadata:
        inner = _bound(item.metadata, names) if isinstance(item, FieldInfo) else None
        value = next((getattr(item, n) for n in names if getattr(item, n, None) is not None), inner)
        found = value if value is not None else found  # exact: int64 bounds are no floats
    return found


def _written_type(base: Any) -> tuple[str, set[str]]:
    """How a model annotation is written to InfluxDB: (type, enum choices)."""
    if typing.get_origin(base) is typing.Literal:
        return "str", {str(arg) for arg in typing.get_args(base)}
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return "str", {str(member.value) for member in base}
    for python_type, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if base is python_type:
            return name, set()
    raise AssertionError(f"{base!r} has no InfluxDB field type")


def _conditions(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every leaf of an all/any/not condition tree, with its path for messages."""
    assert isinstance(node, dict) and node, f"{where}: condition must be a mapping"
    if "all" in node or "any" in node:
        (key,) = node
        assert key in {"all", "any"} and isinstance(node[key], list) and node[key], where
        for index, child in enumerate(node[key]):
            yield from _conditions(child, f"{where}.{key}[{index}]")
    elif "not" in node:
        assert set(node) == {"not"}, f"{where}: 'not' takes one condition"
        yield from _conditions(node["not"], f"{where}.not")
    else:
        yield where, node


def _spec(kind: DeviceKind, where: str, key: str, *, numeric: bool = False) -> FieldSpec:
    try:
        spec = kind.field(key)
    except KeyError:
        pytest.fail(f"{where}: {kind.name} has no field {key!r}")
    assert not numeric or spec.type in {"int", "float"}, f"{where}: {key} is not numeric"
    return spec


def _check_rate(kind: DeviceKind, where: str, rate: dict[str, Any]) -> list[Any]:
    """Check a ``rate`` trigger; return its durations."""
    assert set(rate) in ({"field", "rise", "within"}, {"field", "fall", "within"}), where
    _spec(kind, where, rate["field"], numeric=True)
    change = rate.get("rise", rate.get("fall"))
    assert isinstance(change, int | float) and change > 0, f"{where}: rate needs a change > 0"
    return [rate["within"]]


def _check_leaf(kind: DeviceKind, where: str, leaf: dict[str, Any]) -> None:
    assert set(leaf) == {"field", "op", "value"}, f"{where}: leaf needs field, op, value"
    op, value = leaf["op"], leaf["value"]
    spec = _spec(kind, where, leaf["field"], numeric=op in ORDER_OPS)
    if op in ORDER_OPS:
        assert isinstance(value, int | float) and not isinstance(value, bool), where
        return
    assert op in EQUALITY_OPS, f"{where}: unknown op {op!r}"
    values = value if op in {"in", "not_in"} else [value]
    assert isinstance(values, list) and values, f"{where}: {op} needs a list"
    if spec.choices:
        unknown = set(values) - set(spec.choices)
        assert not unknown, f"{where}: {sorted(unknown)} not in {spec.key} choices"


def _run_simulator(
    kind: DeviceKind, codec: str, seed: int
) -> tuple[list[tuple[str, SimMessage]], float]:
    """Step a device over heartbeats and every incident; messages by phase, and end time."""
    params, rng = _kind_params(kind.name), random.Random(seed)
    sim = kind.simulator(f"sim-{kind.name}-1", kind.codecs[codec], params, rng, kind.heartbeat_s)
    out: list[tuple[str, SimMessage]] = [("normal", m) for m in sim.step(T0)]
    now = T0

    def run(phase: str, duration: float, dt: float) -> None:
        nonlocal now
        end = now + duration
        while now < end:
            now += dt
            out.extend((phase, m) for m in sim.step(now))

    run("normal", 3 * kind.heartbeat_s, kind.heartbeat_s / 8)
    for incident in sim.incidents:
        out.extend((incident, m) for m in sim.start_incident(incident, now))
        run(incident, 3600.0, 10.0)
    run("after", 2 * kind.heartbeat_s, kind.heartbeat_s / 8)
    return out, now


def _codec_params() -> list[Any]:
    # Codecs are only known once a kind imports; missing kinds show up as failures then.
    found: list[Any] = []
    for kind_name in KINDS:
        try:
            codecs = list(load_kind(kind_name).codecs)
        except ImportError:
            codecs = ["json"]
        found.extend(pytest.param(kind_name, c, id=f"{kind_name}/{c}") for c in codecs)
    return found


# -- the kind and its field table --------------------------------------------------------


@pytest.mark.parametrize("kind_name", KINDS)
def test_kind_describes_its_folder(kind_name: str) -> None:
    kind = load_kind(kind_name)
    assert kind.name == kind_name
    assert kind.folder.resolve() == DEVICES_DIR / kind_name
    assert kind.title_zh and kind.title_en
    assert kind.heartbeat_s > 0
    assert kind.codecs, "a kind needs at least one codec"
    assert all(codec.name == name for name, codec in kind.codecs.items())


@pytest.mark.parametrize("kind_name", KINDS)
def test_every_written_model_field_has_exactly_one_spec(kind_name: str) -> None:
    kind = load_kind(kind_name)
    keys = [spec.key for spec in kind.fields]
    assert len(keys) == len(set(keys)), f"duplicate field specs in {keys}"
    not_written = _not_written(kind_name)
    model_keys = set(kind.model.model_fields) | set(kind.model.model_computed_fields)
    assert not_written <= model_keys, f"NOT_WRITTEN names unknown fields {not_written}"
    assert set(keys) <= model_keys, f"specs without model field: {set(keys) - model_keys}"
    expected = model_keys - NOT_FIELDS - not_written
    assert set(keys) == expected, f"model fields without spec: {expected - set(keys)}"


@pytest.mark.parametrize("kind_name", KINDS)
def test_field_specs_match_the_model(kind_name: str) -> None:
    kind = load_kind(kind_name)
    model = kind.model
    for spec in kind.fields:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.key), f"{spec.key} is not snake_case"
        if spec.key in model.model_computed_fields:
            base, metadata = _unwrap(model.model_computed_fields[spec.key].return_type)
            computed = True
        else:
            info = model.model_fields[spec.key]
            base, metadata = _unwrap(info.annotation)
            metadata += info.metadata
            computed = False
        written, choices = _written_type(base)
        assert spec.type == written, f"{spec.key}: spec {spec.type}, model {written}"
        assert set(spec.choices) == choices, f"{spec.key}: choices differ from the model"
        if not computed:
            low, high = _bound(metadata, ("ge", "gt")), _bound(metadata, ("le", "lt"))
            assert spec.minimum == low, f"{spec.key}: spec minimum {spec.minimum}, model {low}"
            assert spec.maximum == high, f"{spec.key}: spec maximum {spec.maximum}, model {high}"


@pytest.mark.parametrize("kind_name", KINDS)
def test_readme_lists_every_field(kind_name: str) -> None:
    kind = load_kind(kind_name)
    readme = (kind.folder / "README.md").read_text(encoding="utf-8")
    missing = [s.key for s in kind.fields if not re.search(rf"\b{s.key}\b", readme)]
    assert not missing, f"README.md does not mention {missing}"


# -- rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind_name", KINDS)
def test_rules_name_only_known_fields(kind_name: str) -> None:
    kind = load_kind(kind_name)
    doc = yaml.safe_load((kind.folder / "rules.yaml").read_text(encoding="utf-8"))
    rules = doc["rules"]
    assert isinstance(rules, list) and rules, "rules.yaml needs a non-empty 'rules' list"
    ids = [rule["id"] for rule in rules]
    assert len(ids) == len(set(ids)), f"duplicate rule ids {ids}"
    for rule in rules:
        where = f"{kind_name}/rules.yaml:{rule['id']}"
        assert set(rule) <= RULE_KEYS, f"{where}: unknown keys {set(rule) - RULE_KEYS}"
        assert rule["id"].startswith(f"{kind_name}."), f"{where}: id must start with the kind"
        assert rule["device_type"] == kind_name, where
        assert rule["title"], where
        assert rule["severity"] in SEVERITIES, f"{where}: severity {rule['severity']!r}"
        triggers = TRIGGERS & set(rule)
        assert len(triggers) == 1, f"{where}: needs exactly one of {sorted(TRIGGERS)}"
        durations = [rule.get("for", "0s"), rule.get("absent", "0s")]
        if "rate" in rule:
            durations += _check_rate(kind, f"{where}.rate", rule["rate"])
        for part in ("when", "clear"):
            if part in rule:
                for leaf_where, leaf in _conditions(rule[part], f"{where}.{part}"):
                    _check_leaf(kind, leaf_where, leaf)
        if "count" in rule:
            count = rule["count"]
            assert set(count) <= {"at_least", "within", "group_by"}, where
            assert isinstance(count["at_least"], int) and count["at_least"] > 1, where
            durations.append(count["within"])
            known = {spec.key for spec in kind.fields} | HIERARCHY_TAGS
            unknown = set(count.get("group_by", [])) - known
            assert not unknown, f"{where}: cannot group by {unknown}"
        sla = rule.get("work_order", {}).get("sla", {})
        durations.extend(sla.values())
        for duration in durations:
            assert DURATION.match(str(duration)), f"{where}: bad duration {duration!r}"


# -- samples -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind_name", KINDS)
def test_kind_has_valid_and_invalid_samples(kind_name: str) -> None:
    samples = DEVICES_DIR / kind_name / "samples"
    valid = sorted((samples / "valid").glob("*"))
    invalid = sorted((samples / "invalid").glob("*"))
    assert valid and invalid, f"{kind_name} needs samples/valid and samples/invalid files"
    for path in valid + invalid:
        assert path.suffix in SAMPLE_SUFFIXES, f"{path.name}: unsupported sample type"
    for path in invalid:
        assert re.fullmatch(r"[a-z0-9_]+__.+", path.stem), f"{path.name}: <reason>__<name>"
    reasons = {path.stem.split("__")[0] for path in invalid}
    missing = JSON_REASONS - reasons if "json" in load_kind(kind_name).codecs else set()
    assert not missing, f"no invalid sample for {sorted(missing)}"


@pytest.mark.parametrize(("kind_name", "path"), _sample_params("valid"))
def test_valid_sample_decodes_and_validates(kind_name: str, path: Path) -> None:
    kind = load_kind(kind_name)
    readings = _decode_and_validate(kind, _codec_name(kind, path, 0), _payload(path))
    assert readings


@pytest.mark.parametrize(("kind_name", "path"), _sample_params("invalid"))
def test_invalid_sample_fails_with_the_named_reason(kind_name: str, path: Path) -> None:
    kind = load_kind(kind_name)
    reason = path.stem.split("__")[0]
    with pytest.raises(DecodeError) as caught:
        _decode_and_validate(kind, _codec_name(kind, path, 1), _payload(path))
    assert caught.value.reason == reason, str(caught.value)


# -- simulator ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind_name", "codec"), _codec_params())
def test_simulator_output_round_trips(kind_name: str, codec: str) -> None:
    kind = load_kind(kind_name)
    messages, end = _run_simulator(kind, codec, seed=7)
    phases: dict[str, int] = {}
    seqs: list[int] = []
    for phase, message in messages:
        assert message.topic_kind in TOPIC_KINDS
        phases[phase] = phases.get(phase, 0) + 1
        for reading in _decode_and_validate(kind, codec, message.payload):
            # Binary formats (Milesight) carry neither ts nor seq; JSON messages must.
            if codec == "json":
                assert reading.ts is not None and reading.seq is not None
            if reading.ts is not None:
                assert T0 * 1e9 <= reading.ts <= end * 1e9
            if reading.seq is not None:
                seqs.append(reading.seq)
    assert phases.get("normal", 0) >= 2, "a few heartbeat intervals give several readings"
    silent = [name for name in kind.simulator.incidents if not phases.get(name)]
    assert not silent, f"incidents without messages: {silent}"
    assert seqs == sorted(set(seqs)), "seq must increase by message"


@pytest.mark.parametrize("kind_name", KINDS)
def test_simulator_is_deterministic(kind_name: str) -> None:
    kind = load_kind(kind_name)
    codec = next(iter(kind.codecs))
    first, again, other = (
        [(p, m.topic_kind, m.payload) for p, m in _run_simulator(kind, codec, seed)[0]]
        for seed in (11, 11, 12)
    )
    assert first == again
    assert first != other, "the seed must matter"


@pytest.mark.parametrize("kind_name", KINDS)
def test_simulator_bad_payloads_are_rejected(kind_name: str) -> None:
    kind = load_kind(kind_name)
    codec = next(iter(kind.codecs))
    for seed in range(16):
        params, rng = _kind_params(kind_name), random.Random(seed)
        sim = kind.simulator("sim-bad", kind.codecs[codec], params, rng, kind.heartbeat_s)
        with pytest.raises(DecodeError):
            _decode_and_validate(kind, codec, sim.bad_payload().payload)


# -- strict fields and unique keys (issue 14) ---------------------------------------------
#
# Derived from each kind's field table, so a new kind is checked the same way: a payload
# whose meaning would have to be guessed (true as a number, "12.5" as a number, 0/1 as a
# flag, a key given twice) is refused on both paths the gateway takes, the regular one
# (codec, derive, ``validate_python``) and the JSON fast path (``validate_json``).

#: What each field type must refuse (as ``wrong_type``), what lax parsing would have guessed.
GUESSES: dict[str, list[Any]] = {
    "float": [True, False, "1", "12.5", "nan", "1_000", None],
    "int": [True, False, "1", 1.5, 12.0, None],
    "bool": [0, 1, "true", "false", "1", None],
    "str": [1, 1.5, True, None],
}


def _base_reading(kind: DeviceKind) -> dict[str, Any]:
    """The kind's first valid single-object JSON sample, as a dict."""
    for path in sorted((DEVICES_DIR / kind.name / "samples" / "valid").glob("*.json")):
        doc = orjson.loads(path.read_bytes())
        if isinstance(doc, dict):
            return dict(doc)
    raise AssertionError(f"{kind.name} has no valid single-object JSON sample")


def _strict_cases() -> list[Any]:
    found = []
    for kind_name in KINDS:
        kind = load_kind(kind_name)
        for spec in kind.fields:
            if spec.key not in kind.model.model_fields:
                continue  # computed (written, never sent)
            for guess in GUESSES[spec.type]:
                # None stands for the positive control: a value of the right type
                value = "__proper__" if guess is None else guess
                found.append(
                    pytest.param(kind_name, spec.key, value, id=f"{kind_name}.{spec.key}={value!r}")
                )
    return found


def _proper_value(kind: DeviceKind, spec: FieldSpec, base: dict[str, Any]) -> Any:
    if spec.key in base:
        return base[spec.key]
    if spec.type == "bool":
        return True
    if spec.type == "str":
        return spec.choices[0] if spec.choices else "x"
    low = spec.minimum if spec.minimum is not None else 0
    return int(low) if spec.type == "int" else float(low)


@pytest.mark.parametrize(("kind_name", "key", "value"), _strict_cases())
def test_fields_take_their_own_json_type_only(kind_name: str, key: str, value: Any) -> None:
    kind = load_kind(kind_name)
    base = _base_reading(kind)
    spec = kind.field(key)
    proper = value == "__proper__"
    raw = {**base, key: _proper_value(kind, spec, base) if proper else value}
    payload = orjson.dumps(raw)
    fast = kind.model.__pydantic_validator__.validate_json
    if proper:
        assert _decode_and_validate(kind, "json", payload)
        assert fast(payload) is not None
        return
    with pytest.raises(DecodeError) as caught:
        _decode_and_validate(kind, "json", payload)
    assert caught.value.reason == "wrong_type", str(caught.value)
    assert f"{kind_name}.{key}" in caught.value.detail
    with pytest.raises(ValidationError):
        fast(payload)


def _pairs_json(pairs: list[tuple[str, Any]]) -> bytes:
    return b"{" + b",".join(orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in pairs) + b"}"


def _duplicated(doc: Any, item: int | None, key: str, value: Any) -> bytes:
    """The sample with ``key`` given a second time (in batch item ``item``)."""
    if item is None:
        return _pairs_json([*doc.items(), (key, value)])
    items = [orjson.dumps(x) for x in doc]
    items[item] = _pairs_json([*doc[item].items(), (key, value)])
    return b"[" + b",".join(items) + b"]"


def _duplicate_cases() -> list[Any]:
    found = []
    for kind_name in KINDS:
        for path in sorted((DEVICES_DIR / kind_name / "samples" / "valid").glob("*.json")):
            doc = orjson.loads(path.read_bytes())
            objects = [(None, doc)] if isinstance(doc, dict) else list(enumerate(doc))
            for item, obj in objects[:2]:
                for key in obj:
                    name = f"{kind_name}/{path.name}[{item}].{key}"
                    found.append(pytest.param(kind_name, path, item, key, id=name))
    return found


@pytest.mark.parametrize(("kind_name", "path", "item", "key"), _duplicate_cases())
def test_a_key_given_twice_is_a_dead_letter_on_every_path(
    kind_name: str, path: Path, item: int | None, key: str
) -> None:
    # Through the pipeline (the fast path for kinds without derived readings, the regular
    # path for the others), with the same value again and with another one.
    from gateway.ingest.pipeline import Pipeline
    from gateway.registry.store import DeviceInfo
    from gateway.sources.batch import Batch

    kind = load_kind(kind_name)
    doc = orjson.loads(path.read_bytes())
    readings = _decode_and_validate(kind, "json", path.read_bytes())
    stamps = [r.ts for r in readings if r.ts is not None]
    recv = max(stamps) if stamps else int(T0 * 1e9)
    info = DeviceInfo("dev-1", kind_name, "M", "json", _kind_params(kind_name))
    pipeline = Pipeline({"dev-1": info}.get)
    topic = b"scc/v1/dev-1/telemetry"
    obj = doc if item is None else doc[item]
    where = "" if item is None or not isinstance(doc, list) else f"batch item {item}: "
    original = pipeline.process(Batch([topic], [path.read_bytes()], [], 1, recv))
    assert original.rejected == [] and original.lines
    for value in (obj[key], None, "other"):
        payload = _duplicated(doc, item if isinstance(doc, list) else None, key, value)
        result = pipeline.process(Batch([topic], [payload], [], 1, recv))
        assert [r.reason for r in result.rejected] == ["duplicate_key"], (payload, result)
        assert f"{where}key {key!r} appears more than once" in result.rejected[0].detail
        assert result.lines == [] and result.accepted == []
