"""Devices in buckets, and the exact topics each bucket's broker session subscribes to.

A bucket is a stable hash of the device id (the same one ingest workers use). Its session
subscribes to each of its devices' own topics, not to a wildcard, so the broker itself delivers
every message of a device to the one session that owns the device, in the order it came: no
shared subscription spreads a device over replicas, and no replica receives another's traffic.
Devices are known in advance (devices.yaml); a message from a device that is not there reaches
no ingest replica (the `--role all` gateway dead-letters it as `unknown_device`).
"""

from __future__ import annotations

from collections.abc import Iterable

from devices.registry import DeviceRegistry
from devices.types import Device
from gateway.shards import shard_of
from gridgate.config import VendorTopic
from gridgate.topics import Topics

EDGE = "edge"  # the edge boxes' topics: one more unit of work, owned like a bucket


def bucket_of(device_id: str, buckets: int) -> int:
    return shard_of(device_id, buckets)


def vendor_filter(vt: VendorTopic, device: Device) -> str | None:
    """The vendor topic narrowed to one device (its id, DevEUI or LoRaWAN device id in the device
    segment, `+` for the others); None when the topic is for another type of device."""
    if vt.device_type is not None and vt.device_type != device.type.value:
        return None
    key = vt.device_key
    value = device.id if key == "device_id" else (getattr(device, key, None) or device.id)
    segment = "{" + key + "}"
    parts = [value if s == segment else ("+" if s.startswith("{") else s) for s in vt.pattern.split("/")]
    return "/".join(parts)


def device_filters(device: Device, topics: Topics, vendor_topics: Iterable[VendorTopic]) -> list[str]:
    out = [topics.device_up(device.type.value, device.id), topics.device_status(device.type.value, device.id)]
    for vt in vendor_topics:
        narrowed = vendor_filter(vt, device)
        if narrowed is not None:
            out.append(narrowed)
    return out


def bucket_devices(registry: DeviceRegistry, buckets: int) -> list[list[Device]]:
    """Each bucket's devices, in registry order."""
    out: list[list[Device]] = [[] for _ in range(buckets)]
    for device in registry:
        out[bucket_of(device.id, buckets)].append(device)
    return out
