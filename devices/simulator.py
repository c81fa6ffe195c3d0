"""A simulated street of devices: pure generation of registries and uplinks for the demo and tests.

Nothing here publishes or sleeps: `StreetSimulator.tick(now)` returns (topic, payload) pairs and
the caller moves them (an MQTT loop in the demo, a list in tests).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from devices.codecs.manhole_binary import MSG_ALARM, MSG_PERIODIC, encode_manhole_binary
from devices.types import Device, DeviceType
from gridgate.topics import Topics

DEFAULT_CENTRE = (30.27, 120.15)  # Hangzhou, West Lake district
_M_PER_DEG_LAT = 111_320.0
_STREETS = (
    "Yan'an",
    "Hubin",
    "Qingchun",
    "Fengqi",
    "Jiefang",
    "Zhongshan",
    "Pinghai",
    "Huancheng",
    "Nanshan",
)
_PREFIX = {DeviceType.manhole: "MH", DeviceType.bin: "BIN", DeviceType.water_gauge: "WG"}

# roles that drive a device into an alarm or fault during a run (report counts are per device)
ROLE_NORMAL = "normal"
ROLE_FILLING_BIN = "filling_bin"
ROLE_RAIN_GAUGE = "rain_gauge"
ROLE_OPENED = "opened"
ROLE_TILTED = "tilted"
ROLE_LOW_BATTERY = "low_battery"
ROLE_SILENT = "silent"
ROLE_STUCK = "stuck"
ROLE_IMPOSSIBLE = "impossible"


def make_street(
    n_devices: int,
    seed: int = 0,
    centre: tuple[float, float] = DEFAULT_CENTRE,
    bbox: tuple[float, float, float, float] | None = None,
    radius_m: float = 800.0,
    reporting_interval_s: float = 300.0,
    binary_share: float = 0.3,
) -> list[Device]:
    """About 40% manholes, 35% bins and 25% water gauges along a few streets.

    `bbox` is (min_lat, min_lon, max_lat, max_lon); without it, a square of `radius_m` around
    `centre`. A `binary_share` of manholes speak the vendor binary frame.
    """
    rng = random.Random(seed)
    if bbox is None:
        dlat = radius_m / _M_PER_DEG_LAT
        dlon = radius_m / (_M_PER_DEG_LAT * math.cos(math.radians(centre[0])))
        bbox = (centre[0] - dlat, centre[1] - dlon, centre[0] + dlat, centre[1] + dlon)
    lat0, lon0, lat1, lon1 = bbox
    # streets: straight lines across the box, east-west or north-south
    streets = []
    for i in range(max(2, min(len(_STREETS), n_devices // 15 + 2))):
        horizontal = i % 2 == 0
        offset = rng.uniform(0.1, 0.9)
        streets.append((_STREETS[i % len(_STREETS)], horizontal, offset))
    n_mh = round(n_devices * 0.40)
    n_bin = round(n_devices * 0.35)
    n_wg = max(0, n_devices - n_mh - n_bin)
    devices: list[Device] = []
    for dtype, count in ((DeviceType.manhole, n_mh), (DeviceType.bin, n_bin), (DeviceType.water_gauge, n_wg)):
        for k in range(1, count + 1):
            name, horizontal, offset = rng.choice(streets)
            along = rng.random()
            jitter = rng.gauss(0, 0.002)
            if horizontal:
                lat = lat0 + (lat1 - lat0) * min(1.0, max(0.0, offset + jitter))
                lon = lon0 + (lon1 - lon0) * along
            else:
                lat = lat0 + (lat1 - lat0) * along
                lon = lon0 + (lon1 - lon0) * min(1.0, max(0.0, offset + jitter))
            extra: dict[str, Any] = {}
            if dtype is DeviceType.manhole and rng.random() < binary_share:
                extra["codec"] = "manhole_binary"
            if dtype is DeviceType.bin:
                extra["bin_depth_cm"] = rng.choice((80.0, 100.0, 120.0))
            if reporting_interval_s != 300.0:
                extra["reporting_interval_s"] = reporting_interval_s
            devices.append(
                Device(
                    id=f"{_PREFIX[dtype]}-{k:04d}",
                    type=dtype,
                    lat=round(lat, 6),
                    lon=round(lon, 6),
                    address=f"{rng.randint(1, 399)} {name} Rd",
                    **extra,
                )
            )
    return devices


def write_devices_yaml(
    devices: list[Device], path: str | Path, profiles: dict[str, Any] | None = None
) -> Path:
    """Write a registry file that `load_registry` reads back (for the demo)."""
    doc = {
        "profiles": profiles or {},
        "devices": [d.model_dump(mode="json", exclude_defaults=True) for d in devices],
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return p


@dataclass(slots=True)
class _Sim:
    device: Device
    role: str
    senml: bool  # speaks SenML instead of native JSON (codec auto)
    distance: bool  # bins: sends distance_cm rather than fill_pct
    next_due: float | None = None
    count: int = 0
    battery: float = 100.0
    level: float = 0.0  # fill % or water cm, the slowly moving main value
    state: dict[str, Any] = field(default_factory=dict)


class StreetSimulator:
    """Uplinks for a street: mostly normal, a few alarms, a few faults, a few malformed payloads."""

    def __init__(
        self,
        devices: list[Device],
        seed: int = 0,
        topics: Topics | None = None,
        malformed_rate: float = 0.01,
        senml_share: float = 0.2,
    ) -> None:
        self.rng = random.Random(seed)
        self.topics = topics or Topics()
        self.malformed_rate = malformed_rate
        self.sims: list[_Sim] = []
        self.roles: dict[str, str] = {}
        by_type: dict[DeviceType, list[Device]] = {t: [] for t in DeviceType}
        for d in devices:
            by_type[d.type].append(d)
        roles: dict[str, str] = {}
        # a few devices of each kind get a story; the rest stay normal
        plan = {
            DeviceType.manhole: [ROLE_OPENED, ROLE_TILTED, ROLE_IMPOSSIBLE],
            DeviceType.bin: [ROLE_FILLING_BIN] * max(1, len(by_type[DeviceType.bin]) // 8)
            + [ROLE_LOW_BATTERY],
            DeviceType.water_gauge: [ROLE_RAIN_GAUGE] * max(1, len(by_type[DeviceType.water_gauge]) // 4)
            + [ROLE_STUCK, ROLE_SILENT],
        }
        for dtype, story in plan.items():
            pool = list(by_type[dtype])
            self.rng.shuffle(pool)
            for dev, role in zip(pool, story, strict=False):
                roles[dev.id] = role
        for d in devices:
            role = roles.get(d.id, ROLE_NORMAL)
            self.roles[d.id] = role
            sim = _Sim(
                device=d,
                role=role,
                senml=d.codec == "auto" and self.rng.random() < senml_share,
                distance=d.type is DeviceType.bin and self.rng.random() < 0.5,
                battery=self.rng.uniform(40, 100) if role != ROLE_LOW_BATTERY else 24.0,
            )
            if d.type is DeviceType.bin:
                sim.level = self.rng.uniform(5, 45) if role != ROLE_FILLING_BIN else 30.0
            elif d.type is DeviceType.water_gauge:
                sim.level = 3.2 if role == ROLE_STUCK else 0.0
            self.sims.append(sim)

    def tick(self, now: float) -> list[tuple[str, bytes]]:
        """Every uplink (and status message) due at `now`, as (full MQTT topic, payload)."""
        out: list[tuple[str, bytes]] = []
        for sim in self.sims:
            if sim.next_due is None:
                # first tick: devices boot and report, then spread over their interval
                sim.next_due = now + self.rng.uniform(0.2, 1.0) * sim.device.reporting_interval_s
            elif now < sim.next_due:
                continue
            else:
                sim.next_due = max(sim.next_due + sim.device.reporting_interval_s, now + 1.0)
            d = sim.device
            sim.count += 1
            if sim.role == ROLE_SILENT and sim.count > 3:
                if sim.count == 4:
                    out.append((self.topics.device_status(d.type.value, d.id), b"offline"))
                continue
            values = self._values(sim)
            payload = self._encode(sim, values, now)
            if self.rng.random() < self.malformed_rate:
                payload = self._malformed(sim)
            out.append((self.topics.device_up(d.type.value, d.id), payload))
        return out

    # ---- the stories ----------------------------------------------------------------------------

    def _values(self, sim: _Sim) -> dict[str, Any]:
        rng = self.rng
        k = sim.count
        if sim.role == ROLE_LOW_BATTERY:
            sim.battery = max(3.0, sim.battery - 1.0)
        else:
            sim.battery = max(30.0, sim.battery - rng.uniform(0, 0.05))
        battery = round(sim.battery)
        dtype = sim.device.type
        if dtype is DeviceType.manhole:
            tilt = round(abs(rng.gauss(1.0, 0.5)), 1)
            opened = False
            if sim.role == ROLE_OPENED and 5 <= k % 40 <= 12:
                opened = True
                tilt = round(rng.uniform(30, 80), 1)
            elif sim.role == ROLE_TILTED and 8 <= k % 40 <= 16:
                tilt = round(rng.uniform(16, 25), 1)
            elif sim.role == ROLE_IMPOSSIBLE and k % 10 == 6:
                tilt = 181.5  # a broken inclinometer
            return {
                "tilt_deg": tilt,
                "open": opened,
                "water_level_cm": round(max(0.0, rng.gauss(20, 5)), 1),
                "gas_ch4_lel_pct": round(abs(rng.gauss(1, 0.5)), 1),
                "temperature_c": round(rng.gauss(18, 2), 1),
                "battery_pct": battery,
                "rssi_dbm": rng.randint(-110, -70),
                "fault_code": 0,
            }
        if dtype is DeviceType.bin:
            if sim.role == ROLE_FILLING_BIN:
                sim.level += rng.uniform(5, 9)
                if sim.level > 97:
                    sim.level = rng.uniform(3, 8)  # the sanitation truck came
            else:
                sim.level = min(75.0, max(0.0, sim.level + rng.uniform(-2, 3)))
            values: dict[str, Any] = {
                "temperature_c": round(rng.gauss(22, 3), 1),
                "tilt_deg": round(abs(rng.gauss(2, 1)), 1),
                "lid_open": rng.random() < 0.03,
                "battery_pct": battery,
            }
            if sim.distance:
                values["distance_cm"] = round(sim.device.bin_depth_cm * (1 - sim.level / 100), 1)
            else:
                values["fill_pct"] = round(sim.level, 1)
            return values
        # water gauge
        if sim.role == ROLE_RAIN_GAUGE:
            phase = k % 40
            peak = sim.state.setdefault("peak", self.rng.uniform(18, 31))
            if 4 <= phase <= 12:
                sim.level = min(peak, sim.level + peak / 6)
            elif phase > 12:
                sim.level = max(0.0, sim.level - 2.5)
        elif sim.role != ROLE_STUCK:
            sim.level = max(0.0, min(4.0, sim.level + rng.uniform(-0.5, 0.5)))
        return {"water_level_cm": round(sim.level, 1), "battery_pct": battery}

    # ---- wire formats -----------------------------------------------------------------------------

    def _encode(self, sim: _Sim, values: dict[str, Any], now: float) -> bytes:
        d = sim.device
        if d.codec == "manhole_binary":
            frame = encode_manhole_binary(
                msg_type=MSG_ALARM if values["open"] or values["tilt_deg"] >= 15 else MSG_PERIODIC,
                open=values["open"],
                sensor_fault=False,
                tilt_deg=min(values["tilt_deg"], 6553.5),
                water_level_cm=values["water_level_cm"],
                battery_pct=values["battery_pct"],
                rssi_dbm=values["rssi_dbm"],
                ts=int(now),
            )
            return frame.hex().encode() if self.rng.random() < 0.2 else frame
        if sim.senml:
            return self._senml(sim, values, now)
        doc: dict[str, Any] = {"ts": self._ts(now), "seq": sim.count}
        doc.update(values)
        doc["snr_db"] = round(self.rng.uniform(-5, 12), 1)
        doc["voltage_v"] = round(3.0 + sim.battery / 100 * 0.6, 2)
        return orjson.dumps(doc)

    def _ts(self, now: float) -> Any:
        r = self.rng.random()
        if r < 0.6:
            return int(now)
        if r < 0.8:
            return int(now * 1000)
        return datetime.fromtimestamp(now, tz=UTC).isoformat().replace("+00:00", "Z")

    def _senml(self, sim: _Sim, values: dict[str, Any], now: float) -> bytes:
        recs: list[dict[str, Any]] = []
        for name, v in values.items():
            rec: dict[str, Any]
            if name == "water_level_cm":
                rec = {"n": "water_level", "u": "m", "v": round(v / 100, 4)}
            elif name == "distance_cm":
                rec = {"n": "distance", "u": "m", "v": round(v / 100, 4)}
            elif name == "battery_pct":
                rec = {"n": "battery", "u": "%EL", "v": v}
            elif name == "temperature_c":
                rec = {"n": "temperature", "u": "Cel", "v": v}
            elif name == "fill_pct":
                rec = {"n": "fill", "u": "%", "v": v}
            elif name == "tilt_deg":
                rec = {"n": "tilt", "u": "deg", "v": v}
            elif name == "gas_ch4_lel_pct":
                rec = {"n": "ch4", "u": "%LEL", "v": v}
            elif name == "rssi_dbm":
                rec = {"n": "rssi", "u": "dBm", "v": v}
            elif isinstance(v, bool):
                rec = {"n": name, "vb": v}
            else:
                rec = {"n": name, "v": v}
            recs.append(rec)
        recs[0] = {"bn": f"urn:dev:gridgate:{sim.device.id}:", "bt": int(now), **recs[0]}
        return orjson.dumps(recs)

    def _malformed(self, sim: _Sim) -> bytes:
        if sim.device.codec == "manhole_binary":
            return self.rng.choice([bytes(10), b"\x01\x00\x00", bytes([9]) + bytes(11)])
        return self.rng.choice(
            [
                b"hello from a confused firmware",
                b'{"water_level_cm": NaN, "battery_pct": 80}',
                b'{"battery_pct": "full"}',
                b'{"tilt_deg": 2.0, ',
                b'{"battery_pct": -5}',
            ]
        )
