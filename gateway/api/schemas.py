"""Request and response models: separate Create / Update / Public shapes per resource."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from devices import KINDS, load_kind
from gateway.registry.device_ids import device_id_problem
from gateway.registry.store import parse_params
from gateway.workorders.routing import STAFF_ROLES

NodeCode = Annotated[str, Field(min_length=1, max_length=64, examples=["B3-2"])]


class _In(BaseModel):
    """Base of request bodies: unknown keys are refused, so typos surface at once."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- errors -------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every 4xx answer: what is wrong, in one sentence."""

    detail: str


class ValidationItem(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    """A 422: ``detail`` names each bad field; ``errors`` lists them one by one."""

    errors: list[ValidationItem]


class RowError(BaseModel):
    """One problem in one row of a bulk import (rows count from 1, header excluded)."""

    row: int
    field: str
    message: str


class ImportErrorBody(ErrorBody):
    """A refused import: nothing was imported; every problem is listed."""

    errors: list[RowError]


# --- device types ---------------------------------------------------------------------------


class FieldPublic(BaseModel):
    """One reading a device kind reports."""

    key: str
    type: str
    unit: str
    minimum: float | None
    maximum: float | None
    description: str
    choices: list[str]


class DeviceTypePublic(BaseModel):
    """A device kind: its fields, codecs, payload JSON Schema and default rules."""

    name: str
    title_zh: str
    title_en: str
    heartbeat_s: int
    codecs: list[str]
    fields: list[FieldPublic]
    json_schema: dict[str, Any]
    default_rules: list[dict[str, Any]]


# --- devices ---------------------------------------------------------------------------------


def _params(value: object) -> object:
    """Accept ``key=value;key=value`` text (as in CSV) besides a JSON object."""
    if isinstance(value, str):
        return parse_params(value)
    return value


Params = Annotated[dict[str, str], BeforeValidator(_params)]


class DeviceCreate(_In):
    """A device to register."""

    device_id: str = Field(examples=["smoke-B3-2-1001"])
    kind: str = Field(examples=["smoke"], description=f"one of {', '.join(KINDS)}")
    node: NodeCode
    model: str = Field("generic", min_length=1, max_length=64)
    codec: str = Field("json", min_length=1, max_length=32)
    location: str = Field("", max_length=128)
    params: Params = Field(default_factory=dict)
    installed_at: date | None = None

    @field_validator("device_id")
    @classmethod
    def _valid_device_id(cls, value: str) -> str:
        problem = device_id_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KINDS:
            raise ValueError(f"unknown kind; known: {', '.join(KINDS)}")
        return value

    @field_validator("codec")
    @classmethod
    def _codec_of_kind(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind in KINDS and value not in load_kind(kind).codecs:
            available = ", ".join(load_kind(kind).codecs)
            raise ValueError(f"not available for {kind}; available: {available}")
        return value


class DeviceUpdate(_In):
    """Changes to a device; fields left out stay as they are."""

    model: str | None = Field(None, min_length=1, max_length=64)
    location: str | None = Field(None, max_length=128)
    params: Params | None = None
    installed_at: date | None = None


class DeviceMove(_In):
    """Where a device moves to in the hierarchy."""

    node: NodeCode


class DevicePublic(BaseModel):
    """A registered device."""

    device_id: str
    kind: str
    model: str
    codec: str
    node: str
    path: list[str] = Field(description="node codes from the street down to the device's node")
    location: str
    params: dict[str, str]
    installed_at: str | None
    status: str
    created_at: datetime | None


class DeviceDetail(DevicePublic):
    """A device with its live state (null where the gateway does not know it)."""

    last_seen: datetime | None = None
    online: bool | None = None
    battery: float | None = None


class MqttCredentials(BaseModel):
    """The device's MQTT login: shown once, never stored in plain text. The broker accepts
    it only with ``client_id`` (the device id) as the MQTT client id."""

    username: str
    password: str
    client_id: str
    publish_topics: list[str]
    command_topic: str


class DeviceRegistered(BaseModel):
    """A registered device, with its broker login when the gateway provisions them."""

    device: DevicePublic
    credentials: MqttCredentials | None = None


class DevicePage(BaseModel):
    """One page of devices."""

    items: list[DevicePublic]
    total: int
    limit: int
    offset: int


class ImportResult(BaseModel):
    """An import that went through: every device, with credentials where provisioned."""

    imported: int
    items: list[DeviceRegistered]


class DeadLetterPublic(BaseModel):
    """A rejected message of a device."""

    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    payload_text: str = Field(description="payload as UTF-8 (bad bytes replaced), cut at 4 KiB")
    payload_size: int
    replayed_at: datetime | None


class ReadingsPublic(BaseModel):
    """Recent points of a device from InfluxDB."""

    device_id: str
    kind: str
    minutes: int
    points: list[dict[str, Any]]


# --- nodes and staff -------------------------------------------------------------------------


class NodeSummary(BaseModel):
    """A hierarchy node."""

    code: str
    level: str
    name: str


class NodeTree(NodeSummary):
    """A node with all its descendants."""

    children: list[NodeTree]


class NodeDetail(NodeSummary):
    """A node with its ancestors, direct children and attributes."""

    attributes: dict[str, Any]
    path: list[NodeSummary]
    children: list[NodeSummary]


def _known_staff_role(value: str) -> str:
    if value not in STAFF_ROLES:
        raise ValueError(f"unknown staff role; roles: {', '.join(STAFF_ROLES)}")
    return value


StaffRole = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z][a-z_]*$",
        examples=["grid_member"],
        description="one of "
        + ", ".join(STAFF_ROLES)
        + "; who may grant which is in the nodes section of the README",
    ),
    AfterValidator(_known_staff_role),
]
Email = Annotated[str, Field(max_length=256, pattern=r"^[^@\s]+@[^@\s]+$")]


class StaffCreate(_In):
    """A person to attach to a node."""

    name: str = Field(min_length=1, max_length=128)
    role: StaffRole
    email: Email | None = None
    phone: str | None = Field(None, max_length=32)


class StaffUpdate(_In):
    """Changes to a staff entry; fields left out stay as they are."""

    name: str | None = Field(None, min_length=1, max_length=128)
    role: StaffRole | None = None
    email: Email | None = None
    phone: str | None = Field(None, max_length=32)


class StaffPublic(BaseModel):
    """A person attached to a node."""

    id: int
    node: str
    name: str
    role: str
    email: str | None
    phone: str | None


# --- health, identity ------------------------------------------------------------------------


class Liveness(BaseModel):
    """The process answers."""

    status: str = "ok"


class Readiness(BaseModel):
    """The process can serve: its database answers."""

    status: str
    database: str


class WhoAmI(BaseModel):
    """The calling token: its role, scope and permissions."""

    token: str
    name: str
    role: str
    scope: str
    permissions: list[str]
