"""LoRaWAN network server messages in their documented JSON shapes, zero fields omitted as the servers do.

ChirpStack v4: the `up` example of chirpstack-docs `integrations/events.md` (Protobuf JSON mapping:
camelCase, no `fCnt`/`adr`/`confirmed` when zero or false). The Things Stack v3: the uplink of
lorawan-stack-docs `integrations/data-formats` (snake_case, empty fields omitted).
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

APPLICATION_ID = "17c82e96-be03-4f38-aef3-f83d48582d97"


def rfc3339_ns(ts: float, ns_tail: str = "242") -> str:
    """`2022-07-18T09:34:15.775023242+00:00`: ChirpStack's nanosecond time (microseconds + 3 digits)."""
    at = datetime.fromtimestamp(ts, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f") + ns_tail + "+00:00"


def chirpstack_topic(dev_eui: str, event: str = "up") -> str:
    return f"application/{APPLICATION_ID}/device/{dev_eui}/event/{event}"


def device_info(dev_eui: str) -> dict[str, Any]:
    return {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "ChirpStack",
        "applicationId": APPLICATION_ID,
        "applicationName": "Street covers",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Cover v2",
        "deviceName": "cover",
        "devEui": dev_eui,
        "tags": {"grid_id": "G1"},
    }


def chirpstack_up(
    dev_eui: str,
    time_s: float,
    *,
    frame: bytes | None = None,
    obj: dict[str, Any] | None = None,
    dedup_id: str | None = None,
    rx: tuple[tuple[int, float], ...] = ((-36, 10.5),),
    f_cnt: int = 0,
) -> dict[str, Any]:
    """An `up` event; `rx` is (rssi, snr) per gateway, an snr of 0 omitted like the server does."""
    msg: dict[str, Any] = {
        "deduplicationId": dedup_id or str(uuid.uuid4()),
        "time": rfc3339_ns(time_s),
        "deviceInfo": device_info(dev_eui),
        "devAddr": "00189440",
        "dr": 1,
        "fPort": 1,
    }
    if f_cnt:
        msg["fCnt"] = f_cnt
    if frame is not None:
        msg["data"] = base64.b64encode(frame).decode()
    if obj is not None:
        msg["object"] = obj
    msg["rxInfo"] = [
        {
            "gatewayId": f"0016c001f153a1{i:02x}",
            "uplinkId": 4217106255 + i,
            "rssi": rssi,
            **({"snr": snr} if snr else {}),
            "context": "E3OWOQ==",
            "metadata": {"region_name": "eu868", "region_common_name": "EU868"},
        }
        for i, (rssi, snr) in enumerate(rx)
    ]
    msg["txInfo"] = {
        "frequency": 867100000,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}},
    }
    return msg


def chirpstack_event(dev_eui: str, time_s: float, **fields: Any) -> dict[str, Any]:
    """A `status`, `join`, `log`, `ack`... event: the common head plus `fields`."""
    return {
        "deduplicationId": str(uuid.uuid4()),
        "time": rfc3339_ns(time_s),
        "deviceInfo": device_info(dev_eui),
        **fields,
    }


def tts_topic(device_id: str, event: str = "up", app: str = "covers@city") -> str:
    return f"v3/{app}/devices/{device_id}/{event}"


def tts_up(
    device_id: str,
    dev_eui: str,
    time_s: float,
    *,
    frame: bytes | None = None,
    decoded: dict[str, Any] | None = None,
    f_cnt: int = 0,
    session_key_id: str = "AXA50...Rf4A==",
    rx: tuple[tuple[float, float], ...] = ((-35.0, 5.2),),
    simulated: bool = False,
) -> dict[str, Any]:
    """A TTS uplink message; `f_cnt` 0 is omitted (the first uplink of a session)."""
    uplink: dict[str, Any] = {"session_key_id": session_key_id}
    if f_cnt:
        uplink["f_cnt"] = f_cnt
    uplink["f_port"] = 15
    if frame is not None:
        uplink["frm_payload"] = base64.b64encode(frame).decode()
    if decoded is not None:
        uplink["decoded_payload"] = decoded
    uplink["rx_metadata"] = [
        {
            "gateway_ids": {"gateway_id": f"gw-{i}", "eui": f"B827EBFFFE8B0{i:03X}"},
            "time": rfc3339_ns(time_s, ""),
            "timestamp": 2463457000 + i,
            "rssi": rssi,
            "channel_rssi": rssi,
            "snr": snr,
            "uplink_token": "ChIKEAoOZ3ctMRIICCEQ...",
            "channel_index": 2,
        }
        for i, (rssi, snr) in enumerate(rx)
    ]
    uplink["settings"] = {
        "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
        "coding_rate": "4/5",
        "frequency": "868500000",
    }
    uplink["received_at"] = rfc3339_ns(time_s, "")
    uplink["consumed_airtime"] = "0.056576s"
    msg: dict[str, Any] = {
        "end_device_ids": {
            "device_id": device_id,
            "application_ids": {"application_id": "covers"},
            "dev_eui": dev_eui,
            "join_eui": "0000000000000000",
            "dev_addr": "00BCB929",
        },
        "correlation_ids": [f"as:up:01H{uuid.uuid4().hex[:23].upper()}", "rpc:/ttn.lorawan.v3.GsNs/..."],
        "received_at": rfc3339_ns(time_s, "123"),
        "uplink_message": uplink,
    }
    if simulated:
        msg["simulated"] = True
    return msg


def dumps(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode()
