"""Device types: the readings each type sends, the limits of physics, and the registry's `Device`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gridgate.models import Location


class DeviceType(StrEnum):
    manhole = "manhole"
    bin = "bin"
    water_gauge = "water_gauge"


class FieldType(StrEnum):
    """The type a reading field is stored with; one per field name, for every device type."""

    bool = "bool"
    float = "float"
    int = "int"
    string = "string"


# Every reading field gridgate stores, with its one type. All device types share the `telemetry`
# measurement, so one name has one type everywhere: InfluxDB refuses a point whose field changes
# type within a shard. Numbers are floats, as they have always been stored (a flag or a code sent as
# an integer is coerced, see devices/codecs/fields.py); `int` and `string` are there for new fields.
FIELD_TYPES: dict[str, FieldType] = {
    "tilt_deg": FieldType.float,
    "open": FieldType.bool,
    "lid_open": FieldType.bool,
    "tamper": FieldType.bool,
    "water_probe_wet": FieldType.bool,
    "water_level_cm": FieldType.float,
    "distance_cm": FieldType.float,
    "fill_pct": FieldType.float,
    "gas_ch4_lel_pct": FieldType.float,
    "temperature_c": FieldType.float,
    "humidity_pct": FieldType.float,
    "battery_pct": FieldType.float,
    "voltage_v": FieldType.float,
    "rssi_dbm": FieldType.float,
    "snr_db": FieldType.float,
    "msg_type": FieldType.float,
    "fault_code": FieldType.float,
}

# The readings each type documents (in this order in error messages).
TYPE_READINGS: dict[DeviceType, tuple[str, ...]] = {
    DeviceType.manhole: (
        "tilt_deg",
        "open",
        "water_level_cm",
        "gas_ch4_lel_pct",
        "temperature_c",
        "battery_pct",
        "rssi_dbm",
        "fault_code",
    ),
    DeviceType.bin: ("fill_pct", "distance_cm", "temperature_c", "tilt_deg", "lid_open", "battery_pct"),
    DeviceType.water_gauge: ("water_level_cm", "battery_pct"),
}

# Readings every type may send (status bits, link quality, vendor extras with a known meaning).
COMMON_READINGS: tuple[str, ...] = (
    "temperature_c",
    "tamper",
    "water_probe_wet",
    "msg_type",
    "fault_code",
    "rssi_dbm",
    "snr_db",
    "voltage_v",
    "humidity_pct",
)

# The fields each device type declares: the only ones stored for it. A payload's other fields are
# dropped and counted (README, "Payload formats").
DEVICE_FIELDS: dict[DeviceType, dict[str, FieldType]] = {
    dtype: {name: FIELD_TYPES[name] for name in (*TYPE_READINGS[dtype], *COMMON_READINGS)}
    for dtype in DeviceType
}

KNOWN_READINGS: frozenset[str] = frozenset(FIELD_TYPES)

# Physically possible ranges (inclusive). A value outside is a sensor fault, never an alarm.
PHYSICAL_LIMITS: dict[str, tuple[float, float]] = {
    "tilt_deg": (0.0, 180.0),
    "water_level_cm": (0.0, float("inf")),
    "distance_cm": (0.0, float("inf")),
    "fill_pct": (0.0, 100.0),
    "temperature_c": (-60.0, 150.0),
}
# as a tuple for the hot path
PHYSICAL_LIMITS_ITEMS: tuple[tuple[str, float, float], ...] = tuple(
    (name, lo, hi) for name, (lo, hi) in PHYSICAL_LIMITS.items()
)

# The field watched for a stuck sensor when a profile does not say otherwise.
DEFAULT_STUCK_FIELDS: dict[DeviceType, tuple[str, ...]] = {
    DeviceType.manhole: ("tilt_deg",),
    DeviceType.bin: ("fill_pct",),
    DeviceType.water_gauge: ("water_level_cm",),
}

DEFAULT_STUCK_AFTER_S = 24 * 3600.0
OFFLINE_FACTOR = 2.5


_FIELDS_GIVEN: dict[frozenset[str], set[str]] = {}


class Device(BaseModel):
    """One device in `devices.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="unique device id; also the MQTT topic segment (no `/`, `+`, `#`)",
    )
    type: DeviceType = Field(description="manhole, bin or water_gauge")
    lat: float = Field(ge=-90, le=90, description="latitude (WGS 84) where the device is installed")
    lon: float = Field(ge=-180, le=180, description="longitude (WGS 84) where the device is installed")
    codec: str = Field("auto", description="payload codec: auto, json, senml, manhole_binary")
    profile: str | None = Field(None, description="name of a profile under `profiles:` that overrides rules")
    reporting_interval_s: float = Field(
        300.0, gt=0, description="seconds between uplinks; offline after 2.5x this without one"
    )
    bin_depth_cm: float = Field(
        100.0, gt=0, description="bins: distance from the ultrasonic sensor to the bottom, for fill %"
    )
    maintenance_team: str | None = Field(None, description="team that receives this device's faults")
    name: str | None = Field(None, description="human name shown on tickets")
    address: str | None = Field(None, description="street address shown on tickets")
    # how an operator platform or LoRaWAN network server names the device (docs/platforms.md)
    imei: str | None = Field(
        None, pattern=r"^[0-9]{14,16}$", description="NB-IoT module IMEI (CTWing `IMEI`, OneNET `imei`)"
    )
    ctwing_device_id: str | None = Field(
        None, min_length=1, max_length=64, description="CTWing's `deviceId` for this device"
    )
    onenet_device: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="OneNET's `deviceName`, or its numeric `deviceId` / `dev_id` written as a string",
    )
    dev_eui: str | None = Field(
        None, pattern=r"^[0-9A-Fa-f]{16}$", description="LoRaWAN DevEUI, 16 hex digits (any case)"
    )
    lorawan_device_id: str | None = Field(
        None, min_length=1, max_length=64, description="The Things Stack end device id (`device_id`)"
    )
    behind: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="the edge box or LoRa gateway this device reaches the gateway through: while "
        "that is offline, this device's own offline fault is muted (shown as suppressed)",
    )

    def model_post_init(self, context: Any, /) -> None:
        # a city registers 100,000 devices: one set per combination of fields given, shared, instead
        # of 728 bytes each (a frozen model never changes it; a copy takes its own)
        given = self.__pydantic_fields_set__
        object.__setattr__(self, "__pydantic_fields_set__", _FIELDS_GIVEN.setdefault(frozenset(given), given))

    @property
    def location(self) -> Location:
        return Location(lat=self.lat, lon=self.lon)

    @property
    def source(self) -> str:
        return f"device:{self.id}"
