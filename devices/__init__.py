"""Street devices: types, payload codecs, the registry, alarm and fault rules, and a simulator.

The gateway calls, per uplink: `decode(...)` then `DeviceEngine.on_reading(...)`; per status
message `DeviceEngine.on_status(...)`; and periodically `DeviceEngine.check_silence(now)`.
"""

from devices.codecs import decode, encode_manhole_binary, get_codec, register_codec
from devices.codecs.errors import DecodeError, RejectReason
from devices.engine import DeviceEngine
from devices.registry import DeviceRegistry, Profile, load_registry
from devices.types import Device, DeviceType

__all__ = [
    "DecodeError",
    "Device",
    "DeviceEngine",
    "DeviceRegistry",
    "DeviceType",
    "Profile",
    "RejectReason",
    "decode",
    "encode_manhole_binary",
    "get_codec",
    "load_registry",
    "register_codec",
]
