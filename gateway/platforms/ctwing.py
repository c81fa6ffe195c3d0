"""China Telecom CTWing (AEP) subscription push: one JSON envelope per POST, by `messageType`.

| messageType | becomes |
| --- | --- |
| `dataReport`, transparent (`payload.APPdata`, base64) | the raw bytes on `.../up`, for the device's codec |
| `dataReport`, object model (`payload` flat, or `{serviceId, serviceData}`) | native JSON on `.../up` |
| `eventReport` (`eventContent`; `eventType` 1 info, 2 warning, 3 fault, noted) | native JSON on `.../up` |
| `deviceOnlineOfflineReport` (`eventType` 1 online, 0 offline) | `online` / `offline` on `.../status` |
| `commandResponse`, `dataReportTupUnion` | noted (logged and counted), nothing else |

The device is found by `IMEI` (`imei: ` in devices.yaml), else by `deviceId` (`ctwing_device_id: `).
The retry key is `(deviceId, messageType, timestamp, sha256(payload))`: `upPacketSN` is usually -1.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from devices.codecs.base import loads_json
from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.fields import json_type
from devices.registry import DeviceRegistry
from devices.types import Device
from gateway.platforms.native import (
    IdText,
    NativeMessage,
    Note,
    ParsedPush,
    PushProblem,
    dedup_key,
    find_device,
    invalid,
    payload_digest,
    raw_uplink,
    reading,
    status,
    unknown_device,
)
from gridgate.topics import Topics

PLATFORM = "ctwing"
NOTED = frozenset({"commandResponse", "dataReportTupUnion"})  # the batch form repeats dataReports
EVENT_TYPES = {1: "info", 2: "warning", 3: "fault"}
# what the retry key hashes as the message's payload: the data, the event, the state, the reply
CONTENT = ("payload", "eventContent", "eventType", "taskId", "result")


class CommandResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    resultCode: str | None = Field(None, description="SENT, DELIVERED, SUCCESSFUL or FAILED")
    resultDetail: str | None = None


class CtwingPush(BaseModel):
    """The fields gridgate reads from a CTWing push; the platform's others are kept, not read."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    message_type: str = Field(alias="messageType")
    device_id: IdText = Field(alias="deviceId", min_length=1, max_length=128)
    imei: IdText | None = Field(None, validation_alias=AliasChoices("IMEI", "imei"), max_length=64)
    timestamp: int | None = Field(None, ge=0, description="ms since the epoch (platform time)")
    payload: dict[str, Any] | None = None
    event_type: int | None = Field(None, alias="eventType")
    event_content: dict[str, Any] | None = Field(None, alias="eventContent")
    task_id: int | str | None = Field(None, alias="taskId")
    result: CommandResult | None = None


def parse_ctwing(body: bytes, registry: DeviceRegistry, topics: Topics) -> ParsedPush:
    """One push body -> native messages, problems or a note; never raises."""
    try:
        doc = loads_json(body)
    except DecodeError as exc:
        return ParsedPush(problems=[PushProblem(exc.reason, f"{PLATFORM} push: {exc.detail}")])
    if type(doc) is not dict:
        return ParsedPush(
            problems=[
                PushProblem(
                    RejectReason.wrong_type, f"{PLATFORM} push: expected a JSON object, got {json_type(doc)}"
                )
            ]
        )
    try:
        push = CtwingPush.model_validate(doc)
    except ValidationError as exc:
        return ParsedPush(problems=[invalid(PLATFORM, exc)])
    content = payload_digest({k: doc.get(k) for k in CONTENT})
    key = dedup_key(PLATFORM, push.device_id, push.message_type, push.timestamp, content)
    parsed = ParsedPush(key=key)
    if push.message_type in NOTED:
        result = push.result or CommandResult()
        detail = f"device={push.device_id} task_id={push.task_id} result={result.resultCode}"
        parsed.noted.append(Note(push.message_type, detail))
        return parsed
    ids = [("imei", push.imei), ("ctwing_device_id", push.device_id)]
    device = find_device(registry, ids)
    if device is None:
        parsed.problems.append(unknown_device(PLATFORM, ids))
        return parsed
    if push.message_type == "eventReport":
        kind = EVENT_TYPES.get(push.event_type, "other") if push.event_type is not None else "other"
        parsed.noted.append(Note(f"eventReport/{kind}", f"device={device.id} event_type={push.event_type}"))
    try:
        parsed.messages.append(_message(push, registry, topics, device))
    except DecodeError as exc:
        parsed.problems.append(
            PushProblem(exc.reason, f"{PLATFORM} {push.message_type}: {exc.detail}", device.id)
        )
    return parsed


def _message(push: CtwingPush, registry: DeviceRegistry, topics: Topics, device: Device) -> NativeMessage:
    kind = push.message_type
    if kind == "dataReport":
        if push.payload is None:
            raise DecodeError(RejectReason.missing_field, "payload: missing (expected APPdata or properties)")
        if "APPdata" in push.payload:
            return raw_uplink(topics, device, app_data(push.payload["APPdata"]))
        data = push.payload.get("serviceData")
        properties = data if isinstance(data, dict) else push.payload
        return reading(topics, registry, device, properties, push.timestamp)
    if kind == "eventReport":
        if push.event_content is None:
            raise DecodeError(RejectReason.missing_field, "eventContent: missing (expected an object)")
        return reading(topics, registry, device, push.event_content, push.timestamp)
    if kind == "deviceOnlineOfflineReport":
        if push.event_type not in (0, 1):
            raise DecodeError(
                RejectReason.bad_payload,
                f"eventType: {push.event_type!r}, expected 1 (online) or 0 (offline)",
            )
        return status(topics, device, push.event_type == 1)
    raise DecodeError(
        RejectReason.bad_payload,
        "messageType: unknown; expected dataReport, eventReport, deviceOnlineOfflineReport "
        "or commandResponse",
    )


def app_data(value: Any) -> bytes:
    """The raw uplink of a transparent-mode push: `payload.APPdata`, standard base64."""
    if type(value) is not str:
        raise DecodeError(
            RejectReason.wrong_type, f"payload.APPdata: expected a base64 string, got {json_type(value)}"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(RejectReason.bad_payload, f"payload.APPdata: not base64 ({exc})") from None
