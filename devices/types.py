"""Device types: the readings each type sends, the limits of physics, and the registry's `Device`."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from gridgate.models import Location


class DeviceType(StrEnum):
    manhole = "manhole"
    bin = "bin"
    water_gauge = "water_gauge"


# The readings each type documents; anything else numeric in a payload is kept as extra telemetry.
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

# Readings common to all types (status bits, link quality, vendor extras with a known meaning).
COMMON_READINGS: tuple[str, ...] = (
    "tamper",
    "water_probe_wet",
    "msg_type",
    "fault_code",
    "rssi_dbm",
    "snr_db",
    "voltage_v",
    "humidity_pct",
)

# Names whose value must be a number or a boolean: a string for one of these is `wrong_type`.
KNOWN_READINGS: frozenset[str] = frozenset(
    name for names in TYPE_READINGS.values() for name in names
) | frozenset(COMMON_READINGS)

# Readings that are true/false; devices may send them as 0/1. Every other known reading is a number,
# and a boolean sent for one of those is `wrong_type`.
BOOL_READINGS: frozenset[str] = frozenset({"open", "lid_open", "tamper", "water_probe_wet"})
NUMERIC_READINGS: frozenset[str] = KNOWN_READINGS - BOOL_READINGS

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

    @property
    def location(self) -> Location:
        return Location(lat=self.lat, lon=self.lon)

    @property
    def source(self) -> str:
        return f"device:{self.id}"
