"""throw_camera: high-altitude throwing detection camera (高空抛物), PoE, pushes events."""

from __future__ import annotations

from pathlib import Path

from devices.base import JSON_CODEC, DeviceKind
from devices.throw_camera.model import FIELDS, ThrowCameraReading
from devices.throw_camera.simulate import ThrowCameraSimulator

KIND = DeviceKind(
    name="throw_camera",
    title_zh="高空抛物监测摄像机",
    title_en="High-altitude throwing detection camera",
    model=ThrowCameraReading,
    fields=FIELDS,
    heartbeat_s=300,
    simulator=ThrowCameraSimulator,
    folder=Path(__file__).parent,
    codecs={"json": JSON_CODEC},
)

__all__ = ["KIND"]
