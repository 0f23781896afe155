"""Bulk device import: parse a CSV or JSON-array body and check every row first.

Nothing is written unless every row is valid; otherwise the caller gets one 422 listing
each problem as ``{row, field, message}`` (rows count from 1, the CSV header excluded).
CSV columns are those of ``devices.csv`` in a community fixture.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy.orm import Session

from gateway.api.auth import Principal
from gateway.api.device_ops import existing_ids
from gateway.api.errors import TooLargeError, UnprocessableError, UnsupportedMediaError
from gateway.api.schemas import DeviceCreate, RowError
from gateway.registry.device_ids import NO_CONFIGURED_NAMES, ReservedNames, device_id_problem
from gateway.registry.store import CSV_COLUMNS

MAX_IMPORT_BYTES = 8 * 1024 * 1024
MAX_IMPORT_ROWS = 10_000
MAX_REPORTED = 1000
REQUIRED_COLUMNS = ("device_id", "kind", "node")
CSV_TYPES = ("text/csv", "application/csv")


def parse_body(
    body: bytes, content_type: str | None, max_bytes: int = MAX_IMPORT_BYTES
) -> list[Any]:
    """The raw rows of a CSV or JSON body (each a dict for well-formed input)."""
    if len(body) > max_bytes:
        raise TooLargeError(f"import body is {len(body)} bytes; at most {max_bytes} allowed")
    media = (content_type or "").split(";")[0].strip().lower()
    if media in CSV_TYPES and not body.strip():
        raise UnprocessableError("the import body is empty")
    if media == "application/json" or media.endswith("+json"):
        rows = _json_rows(body)
    elif media in CSV_TYPES:
        rows = _csv_rows(body)
    else:
        raise UnsupportedMediaError(
            f"content type {media or 'none'!r} not supported: send text/csv or application/json"
        )
    if not rows:
        raise UnprocessableError("the import holds no devices")
    if len(rows) > MAX_IMPORT_ROWS:
        raise TooLargeError(f"{len(rows)} rows; at most {MAX_IMPORT_ROWS} per import")
    return rows


def _json_rows(body: bytes) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise UnprocessableError(f"body is not valid JSON: {err}") from err
    if not isinstance(doc, list):
        raise UnprocessableError(
            f"body must be a JSON array of devices, not a {type(doc).__name__}"
        )
    return doc


def _csv_rows(body: bytes) -> list[Any]:
    try:
        text = body.decode("utf-8-sig")  # Excel writes a BOM
    except UnicodeDecodeError as err:
        raise UnprocessableError(f"CSV body is not UTF-8 (byte {err.start})") from err
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [name.strip() for name in reader.fieldnames or ()]
        _check_header(header)
        reader.fieldnames = header
        return [_csv_row(row) for row in reader]
    except csv.Error as err:
        raise UnprocessableError(f"CSV body is malformed: {err}") from err


def _check_header(header: list[str]) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if missing or unknown:
        problems = [f"missing columns: {', '.join(missing)}"] if missing else []
        problems += [f"unknown columns: {', '.join(unknown)}"] if unknown else []
        raise UnprocessableError(
            f"CSV header: {'; '.join(problems)}; columns: {', '.join(CSV_COLUMNS)}"
        )


def _csv_row(row: dict[str | None, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {key: value for key, value in row.items() if key and value}
    if row.get(None):
        out["_extra_cells"] = row[None]
    return out


def check_rows(
    session: Session,
    principal: Principal,
    rows: list[Any],
    reserved: ReservedNames = NO_CONFIGURED_NAMES,
) -> tuple[list[DeviceCreate], list[RowError]]:
    """Validate every row; also against each other, the scope and the registry."""
    creates: list[DeviceCreate] = []
    numbers: list[int] = []
    errors: list[RowError] = []
    for number, raw in enumerate(rows, start=1):
        if not isinstance(raw, dict):
            errors.append(RowError(row=number, field="row", message="must be an object"))
            continue
        if "_extra_cells" in raw:
            errors.append(RowError(row=number, field="row", message="more cells than columns"))
            continue
        try:
            creates.append(DeviceCreate.model_validate(raw))
            numbers.append(number)
        except ValidationError as err:
            errors += [
                RowError(row=number, field=_field(e["loc"]), message=e["msg"])
                for e in err.errors(include_url=False)
            ]
    errors += _cross_check(session, principal, creates, numbers)
    errors += _reserved_ids(creates, numbers, reserved)
    errors.sort(key=lambda e: e.row)
    return creates, errors[:MAX_REPORTED]


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "row"


def _cross_check(
    session: Session, principal: Principal, creates: list[DeviceCreate], numbers: list[int]
) -> list[RowError]:
    errors: list[RowError] = []
    first_row: dict[str, int] = {}
    for number, create in zip(numbers, creates, strict=True):
        if create.device_id in first_row:
            message = f"repeats the device_id of row {first_row[create.device_id]}"
            errors.append(RowError(row=number, field="device_id", message=message))
        first_row.setdefault(create.device_id, number)
        node_id = principal.index.by_code.get(create.node)
        if node_id is None or not principal.sees(node_id):
            message = f"node {create.node!r} not found"
            errors.append(RowError(row=number, field="node", message=message))
    for device_id in existing_ids(session, list(first_row)):
        message = f"device {device_id!r} is already registered"
        errors.append(RowError(row=first_row[device_id], field="device_id", message=message))
    return errors


def _reserved_ids(
    creates: list[DeviceCreate], numbers: list[int], reserved: ReservedNames
) -> list[RowError]:
    """Rows naming one of this deployment's broker logins or client ids."""
    errors: list[RowError] = []
    for number, create in zip(numbers, creates, strict=True):
        problem = reserved.clash(create.device_id) and device_id_problem(create.device_id, reserved)
        if problem:
            errors.append(RowError(row=number, field="device_id", message=problem))
    return errors


def refuse(errors: list[RowError]) -> UnprocessableError:
    """The 422 for a refused import."""
    rows = len({error.row for error in errors})
    detail = f"{len(errors)} problems in {rows} rows; nothing was imported"
    return UnprocessableError(detail, extra={"errors": [error.model_dump() for error in errors]})
