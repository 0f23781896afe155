"""Duplicate keys in JSON payloads, found without slowing down the payloads that have none.

orjson and pydantic keep the last of two equal keys, so ``{"state":"alarm","state":"normal"}``
would be read as normal. Checking every payload exactly needs a second, slower parse; instead
the commas are counted (``bytes.count``, C speed). In valid JSON each comma separates two
members of an object, two items of an array, or sits inside a string. So a payload holds
exactly ``flat_commas(doc)`` commas — each top-level object's distinct keys minus one, plus
the top-level array's items minus one — only when no key repeats, no nested container has
two members and no string holds a comma; with a repeated key there are more. Any other
count (a repeated key, but also a trajectory or a URL with a comma in it) takes the exact
check, ``first_duplicate_key``.

The pipeline's fast path, which never sees the parsed dict, compares the count with the
number of fields the model set instead (``len(reading.model_fields_set)``): that equals the
distinct keys for a model that maps keys to fields one to one, and errs on the safe side
for the throw camera's ``floor_range`` (one key, two fields, one comma). The conformance
test checks every kind's samples with a key repeated, so a kind whose model maps keys in
another way fails there.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["first_duplicate_key", "flat_commas"]


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def _duplicate_in(text: str) -> str | None:
    try:
        json.loads(text, object_pairs_hook=_unique)
    except _DuplicateKeyError as dup:
        return dup.key
    return None


def flat_commas(doc: dict[str, Any] | list[dict[str, Any]]) -> int:
    """The commas a payload that parsed to ``doc`` holds when no key repeats, no nested
    container has two members and no string holds a comma (see the module docstring)."""
    if isinstance(doc, dict):
        return max(len(doc) - 1, 0)
    return len(doc) - 1 + sum(max(len(item) - 1, 0) for item in doc)


def first_duplicate_key(payload: bytes) -> tuple[str, int | None] | None:
    """The first key that appears twice in one object, at any depth, and the index of the
    top-level array item holding it (None for an object); None when every key is unique.

    Exact, but about ten times slower than orjson. ``ValueError`` when the payload is not
    UTF-8 JSON.
    """
    text = payload.decode("utf-8")
    key = _duplicate_in(text)
    if key is None:
        return None
    body = text.strip()
    if not body.startswith("["):
        return key, None
    # Name the batch item: parse the array one item at a time (only on this error path).
    decoder = json.JSONDecoder()
    position, index = 1, 0
    while position < len(body):
        while body[position] in " \t\r\n,":
            position += 1
        _, end = decoder.raw_decode(body, position)
        if _duplicate_in(body[position:end]) is not None:
            return key, index
        position, index = end, index + 1
    return key, None
