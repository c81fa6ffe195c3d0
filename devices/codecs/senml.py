"""SenML JSON (RFC 8428) packs, mapped onto gridgate's reading names.

Time: each record's time is `bt + t`; a result below 2**28 is relative to the receive time (RFC
8428 section 4.5.3), and absent times mean "now". Records with different resolved times become
separate Readings, in the order they first appear.

Names: the reading name is the last segment (after `:` or `/`) of `bn + n`, lower-cased, then:

1. a gridgate reading name (`water_level_cm`, `tilt_deg`, `open`, ...) is kept as is;
2. an alias is mapped: `water_level`/`level`/`water` -> `water_level_cm`, `distance` ->
   `distance_cm`, `temp`/`temperature` -> `temperature_c`, `battery`/`bat`/`batt` -> `battery_pct`,
   `fill`/`fill_level` -> `fill_pct`, `tilt`/`angle`/`inclination` -> `tilt_deg`, `ch4`/`gas`/
   `methane` -> `gas_ch4_lel_pct`, `rssi` -> `rssi_dbm`, `snr` -> `snr_db`, `voltage`/`vbat` ->
   `voltage_v`, `humidity` -> `humidity_pct`, `lid` -> `lid_open`, `cover`/`cover_open` -> `open`;
3. otherwise the unit names it: `%EL` -> `battery_pct`, `%LEL` -> `gas_ch4_lel_pct`, `%RH` ->
   `humidity_pct`;
4. otherwise `<name>_<unit suffix>` for a known unit (`snr` + `dB` -> `snr_db`), else `<name>`.

Units convert to the reading's unit: `m`/`mm` -> cm, `K` -> Cel, `rad` -> deg, `mV` -> V. `lat`/`lon`
records are ignored (the registry holds the position), as are `vd` (data) and `s` (sum) values.
"""

from __future__ import annotations

import math
from typing import Any

from devices.codecs.base import loads_json
from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.fields import json_type, snippet
from devices.types import KNOWN_READINGS, Device
from gridgate.models import Reading

RELATIVE_TIME_BELOW = 2**28

# unit -> (suffix of the reading name, factor, offset) converting into that suffix's unit
UNITS: dict[str, tuple[str, float, float]] = {
    "m": ("cm", 100.0, 0.0),
    "cm": ("cm", 1.0, 0.0),
    "mm": ("cm", 0.1, 0.0),
    "Cel": ("c", 1.0, 0.0),
    "K": ("c", 1.0, -273.15),
    "%": ("pct", 1.0, 0.0),
    "%EL": ("pct", 1.0, 0.0),
    "%RH": ("pct", 1.0, 0.0),
    "%LEL": ("pct", 1.0, 0.0),
    "deg": ("deg", 1.0, 0.0),
    "rad": ("deg", 180.0 / math.pi, 0.0),
    "dBm": ("dbm", 1.0, 0.0),
    "dB": ("db", 1.0, 0.0),
    "V": ("v", 1.0, 0.0),
    "mV": ("v", 0.001, 0.0),
    "s": ("s", 1.0, 0.0),
}

ALIASES: dict[str, str] = {
    "water_level": "water_level_cm",
    "waterlevel": "water_level_cm",
    "level": "water_level_cm",
    "water": "water_level_cm",
    "distance": "distance_cm",
    "temp": "temperature_c",
    "temperature": "temperature_c",
    "battery": "battery_pct",
    "bat": "battery_pct",
    "batt": "battery_pct",
    "fill": "fill_pct",
    "fill_level": "fill_pct",
    "tilt": "tilt_deg",
    "angle": "tilt_deg",
    "inclination": "tilt_deg",
    "ch4": "gas_ch4_lel_pct",
    "gas": "gas_ch4_lel_pct",
    "methane": "gas_ch4_lel_pct",
    "rssi": "rssi_dbm",
    "snr": "snr_db",
    "voltage": "voltage_v",
    "vbat": "voltage_v",
    "humidity": "humidity_pct",
    "lid": "lid_open",
    "cover": "open",
    "cover_open": "open",
}

UNIT_NAMES: dict[str, str] = {"%EL": "battery_pct", "%LEL": "gas_ch4_lel_pct", "%RH": "humidity_pct"}
IGNORED_NAMES = frozenset({"lat", "lon", "latitude", "longitude"})
_VALUE_KEYS = ("v", "vb", "vs", "vd", "s")
_BASE_KEYS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})


def reading_name(name: str, unit: str | None) -> tuple[str, tuple[str, float, float] | None]:
    """Map a SenML name and unit to a gridgate reading name and the conversion to apply."""
    local = name.replace("/", ":").rsplit(":", 1)[-1].lower()
    conv = UNITS.get(unit) if unit else None
    canonical = local if local in KNOWN_READINGS else ALIASES.get(local)
    if canonical is None and unit in UNIT_NAMES:
        canonical = UNIT_NAMES[unit]
    if conv is not None:
        suffix = "_" + conv[0]
        if canonical is None or not canonical.endswith(suffix):
            # an unknown name, or a unit that does not fit the alias: name it after the unit
            canonical = local if local.endswith(suffix) else local + suffix
    return (canonical or local), conv


def _number(rec: dict[str, Any], key: str, where: str) -> float:
    value = rec[key]
    if type(value) not in (int, float):
        raise DecodeError(
            RejectReason.wrong_type,
            f"{where}.{key}: expected a number, got {json_type(value)} {snippet(value)}",
        )
    return float(value)


def _string(rec: dict[str, Any], key: str, where: str) -> str:
    value = rec[key]
    if type(value) is not str:
        raise DecodeError(
            RejectReason.wrong_type,
            f"{where}.{key}: expected a string, got {json_type(value)} {snippet(value)}",
        )
    return value


def decode_senml(payload: bytes, device: Device, now: float) -> list[Reading]:
    """A SenML pack -> one Reading per distinct resolved time (values not yet checked)."""
    pack = loads_json(payload)
    if type(pack) is not list:
        raise DecodeError(
            RejectReason.wrong_type, f"payload: a SenML pack is a JSON array, got {json_type(pack)}"
        )
    if not pack:
        raise DecodeError(RejectReason.bad_payload, "payload: empty SenML pack (no records)")
    bn, bt, bu, bv = "", 0.0, None, 0.0
    groups: dict[float, dict[str, Any]] = {}
    for i, rec in enumerate(pack):
        where = f"[{i}]"
        if type(rec) is not dict:
            raise DecodeError(
                RejectReason.wrong_type, f"{where}: a SenML record is an object, got {json_type(rec)}"
            )
        if "bn" in rec:
            bn = _string(rec, "bn", where)
        if "bt" in rec:
            bt = _number(rec, "bt", where)
        if "bu" in rec:
            bu = _string(rec, "bu", where)
        if "bv" in rec:
            bv = _number(rec, "bv", where)
        value_key = next((k for k in _VALUE_KEYS if k in rec), None)
        if value_key is None:
            if "n" not in rec and rec.keys() <= _BASE_KEYS:
                continue  # a record that only sets base fields for the ones after it
            label = f" ({snippet(rec['n'])})" if "n" in rec else ""
            raise DecodeError(
                RejectReason.missing_field, f"{where}{label}: record has no value (v, vb or vs)"
            )
        n = _string(rec, "n", where) if "n" in rec else ""
        full = bn + n
        if not full:
            raise DecodeError(RejectReason.missing_field, f"{where}: record has no name (n or bn)")
        unit = _string(rec, "u", where) if "u" in rec else bu
        t = _number(rec, "t", where) if "t" in rec else 0.0
        when = bt + t
        if abs(when) < RELATIVE_TIME_BELOW:
            when = now + when
        name, conv = reading_name(full, unit)
        if name in IGNORED_NAMES or value_key in ("vd", "s"):
            continue
        value: Any = rec[value_key]
        if value_key == "v":
            if type(value) not in (int, float):
                raise DecodeError(
                    RejectReason.wrong_type,
                    f"{where}.v ({name}): expected a number, got {json_type(value)} {snippet(value)}",
                )
            value = value + bv
            if conv is not None:
                value = value * conv[1] + conv[2]
        elif value_key == "vb" and type(value) is not bool:
            raise DecodeError(
                RejectReason.wrong_type,
                f"{where}.vb ({name}): expected a boolean, got {json_type(value)} {snippet(value)}",
            )
        groups.setdefault(when, {})[name] = value
    if not groups:
        raise DecodeError(RejectReason.missing_field, "payload: no SenML record carries a value")
    # raw values: `devices.codecs.decode` keeps the declared fields and coerces them
    return [Reading(device.id, device.type.value, when, raw) for when, raw in groups.items()]
