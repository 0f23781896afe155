"""Condition trees evaluated over a batch with numpy, and one reading at a time for messages.

A batch of one kind becomes one column per referenced field: numeric and boolean fields as
float64 with NaN for a missing value, text fields as small integer codes (each text value a
rule mentions gets a code; anything else is ``OTHER``; missing is ``MISSING``). Every leaf is
one vectorised comparison whose result is cached for the batch, so rules sharing a leaf pay
once. A missing value makes a leaf false, whatever its operator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from devices.base import FieldSpec
from rules.checks import walk
from rules.model import ORDERED_OPS, AllOf, AnyOf, Condition, Leaf, NotOf, Rule

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MISSING = -1
OTHER = -2
_ABSENT = object()
_UNHASHABLE = object()
_EMPTY: dict[object, int] = {_ABSENT: MISSING, None: MISSING}
SYMBOLS = {
    "eq": "=",
    "ne": "≠",
    "lt": "<",
    "le": "≤",
    "gt": ">",
    "ge": "≥",
    "in": "in",
    "not_in": "not in",
}


class Vocabulary:
    """Integer codes for the text values the rules of one kind compare against."""

    def __init__(self, specs: Mapping[str, FieldSpec], rules: Iterable[Rule]) -> None:
        self.specs = specs
        self.codes: dict[str, dict[object, int]] = {}
        for rule in rules:
            for tree in (rule.when, rule.clear):
                for _, leaf in walk(tree, "") if tree is not None else ():
                    if self.is_text(leaf.field):
                        table = self.codes.setdefault(leaf.field, dict(_EMPTY))
                        items = leaf.value if isinstance(leaf.value, tuple) else (leaf.value,)
                        for item in items:
                            table.setdefault(item, len(table) - len(_EMPTY))

    def is_text(self, key: str) -> bool:
        """Whether a field is compared as text codes (else as float64)."""
        spec = self.specs.get(key)
        return spec is not None and spec.type == "str"

    def code(self, key: str, value: object) -> int:
        """The code of a literal (OTHER if no rule names it)."""
        return self.codes.get(key, {}).get(value, OTHER)


class Columns:
    """Field columns of one kind's batch, built on first use and cached with leaf results."""

    __slots__ = ("_leaves", "_numeric", "_text", "_values", "vocab")

    def __init__(self, values: Sequence[Mapping[str, object]], vocab: Vocabulary) -> None:
        self._values = values
        self.vocab = vocab
        self._numeric: dict[str, FloatArray] = {}
        self._text: dict[str, IntArray] = {}
        self._leaves: dict[Leaf, BoolArray] = {}

    def __len__(self) -> int:
        return len(self._values)

    def numeric(self, key: str) -> FloatArray:
        """The field as float64, NaN where a reading lacks it (or it is not a number)."""
        column = self._numeric.get(key)
        if column is None:
            nan = math.nan
            raw = [values.get(key, nan) for values in self._values]
            try:
                column = np.array(raw, dtype=np.float64)
            except (TypeError, ValueError):
                column = np.array([_as_float(item) for item in raw], dtype=np.float64)
            self._numeric[key] = column
        return column

    def text(self, key: str) -> IntArray:
        """The field as vocabulary codes: MISSING, OTHER or the code of a rule's literal."""
        column = self._text.get(key)
        if column is None:
            get = self.vocab.codes.get(key, _EMPTY).get
            try:
                codes = [get(values.get(key, _ABSENT), OTHER) for values in self._values]
            except TypeError:  # an unhashable value cannot be a rule's literal
                codes = [get(_hashable(values.get(key, _ABSENT)), OTHER) for values in self._values]
            column = np.array(codes, dtype=np.int64)
            self._text[key] = column
        return column

    def present(self, key: str) -> BoolArray:
        """Rows whose reading carries the field."""
        if self.vocab.is_text(key):
            return np.asarray(self.text(key) != MISSING, dtype=np.bool_)
        return np.asarray(~np.isnan(self.numeric(key)), dtype=np.bool_)

    def leaf(self, leaf: Leaf) -> BoolArray:
        """One comparison over the batch (false where the value is missing)."""
        result = self._leaves.get(leaf)
        if result is None:
            if self.vocab.is_text(leaf.field):
                result = self._text_leaf(leaf)
            else:
                result = _numeric_leaf(self.numeric(leaf.field), leaf)
            self._leaves[leaf] = result
        return result

    def _text_leaf(self, leaf: Leaf) -> BoolArray:
        column = self.text(leaf.field)
        if leaf.op in ORDERED_OPS:  # refused at load: text has no order
            return np.zeros(len(column), dtype=np.bool_)
        items = leaf.value if isinstance(leaf.value, tuple) else (leaf.value,)
        codes = [self.vocab.code(leaf.field, item) for item in items]
        hit = column == codes[0] if len(codes) == 1 else np.isin(column, codes)
        if leaf.op in ("eq", "in"):
            return np.asarray(hit, dtype=np.bool_)
        return np.asarray(~hit & (column != MISSING), dtype=np.bool_)


_COMPARE = {
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
}


def _numeric_leaf(column: FloatArray, leaf: Leaf) -> BoolArray:
    value = leaf.value
    if isinstance(value, tuple):
        numbers = np.array([_as_float(item) for item in value], dtype=np.float64)
        hit = np.isin(column, numbers)
        result = hit if leaf.op == "in" else ~hit
    else:
        result = _COMPARE[leaf.op](column, _as_float(value))
    # NaN (missing) already fails every comparison but ne / not_in.
    return np.asarray(result & ~np.isnan(column), dtype=np.bool_)


def evaluate(tree: Condition, columns: Columns) -> BoolArray:
    """A condition tree over the batch."""
    if isinstance(tree, Leaf):
        return columns.leaf(tree)
    if isinstance(tree, AllOf):
        result = evaluate(tree.all[0], columns)
        for child in tree.all[1:]:
            result = result & evaluate(child, columns)  # never in place: leaves are cached
        return result
    if isinstance(tree, AnyOf):
        result = evaluate(tree.any[0], columns)
        for child in tree.any[1:]:
            result = result | evaluate(child, columns)
        return result
    assert isinstance(tree, NotOf)
    return ~evaluate(tree.not_, columns)


def holds(tree: Condition, values: Mapping[str, object]) -> bool:
    """A condition tree for one reading (same semantics as ``evaluate``)."""
    if isinstance(tree, Leaf):
        return leaf_holds(tree, values)
    if isinstance(tree, AllOf):
        return all(holds(child, values) for child in tree.all)
    if isinstance(tree, AnyOf):
        return any(holds(child, values) for child in tree.any)
    assert isinstance(tree, NotOf)
    return not holds(tree.not_, values)


def leaf_holds(leaf: Leaf, values: Mapping[str, object]) -> bool:
    """One comparison for one reading; a missing value (or NaN) is false."""
    value = values.get(leaf.field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(leaf.value, tuple):
        hit = any(_equal(value, item) for item in leaf.value)
        return hit if leaf.op == "in" else not hit
    if leaf.op == "eq":
        return _equal(value, leaf.value)
    if leaf.op == "ne":
        return not _equal(value, leaf.value)
    left, right = _as_float(value), _as_float(leaf.value)
    return {
        "lt": left < right,
        "le": left <= right,
        "gt": left > right,
        "ge": left >= right,
    }.get(leaf.op, False)


def describe(tree: Condition, values: Mapping[str, object]) -> str:
    """The true comparisons of a tree for one reading, e.g. ``smoke 0.41 ≥ 0.15``."""
    parts: list[str] = []
    negated = {path for path, _ in walk(tree, "") if ".not" in path}
    for path, leaf in walk(tree, ""):
        if path not in negated and leaf_holds(leaf, values):
            parts.append(describe_leaf(leaf, values))
    if not parts:
        parts = [f"{leaf.field} {_show(values.get(leaf.field))}" for _, leaf in walk(tree, "")]
    return ", ".join(dict.fromkeys(parts))


def describe_leaf(leaf: Leaf, values: Mapping[str, object]) -> str:
    """``field value op literal`` for one comparison."""
    literal = leaf.value
    actual = _show(values.get(leaf.field))
    if leaf.op == "eq":
        return f"{leaf.field} = {actual}"
    shown = "[" + ", ".join(map(_show, literal)) + "]" if isinstance(literal, tuple) else literal
    return f"{leaf.field} {actual} {SYMBOLS[leaf.op]} {_show(shown)}"


def _show(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _equal(left: object, right: object) -> bool:
    if isinstance(left, str) or isinstance(right, str):
        return left == right
    try:
        return _as_float(left) == _as_float(right)
    except (TypeError, ValueError):
        return False


def _as_float(value: object) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    return math.nan


def _hashable(value: object) -> object:
    try:
        hash(value)
    except TypeError:
        return _UNHASHABLE
    return value
