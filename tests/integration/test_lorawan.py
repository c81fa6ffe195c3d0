"""ChirpStack v4 and The Things Stack v3 uplinks through real Mosquitto into a running gateway.

Each LoRaWAN device has a twin of the same type and profile that gets the same readings natively
on `gridgate/devices/{type}/{id}/up`; the LoRaWAN device must end with exactly the twin's telemetry
points (plus the best gateway's RSSI/SNR, which only the network server knows) and the twin's
alerts, read back from the SQLite sink and the broker.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from devices.codecs import encode_manhole_binary
from gateway.service import Gateway
from gateway.sinks.sqlite import SQLiteSink
from gridgate.config import GatewayConfig
from tests.integration.spine_helpers import gateway_config
from tests.lorawan_messages import chirpstack_event, chirpstack_topic, chirpstack_up, dumps, tts_topic, tts_up
from tests.servers import Collector, Mosquitto, pub, wait_until

pytestmark = pytest.mark.integration

CS_COVER, CS_GAUGE = "A84041000181C7F1", "a84041000181c7f2"  # DevEUIs in either case
TTS_COVER, TTS_GAUGE = "cover-east-7", "gauge-east-3"
LORAWAN = {"chirpstack": {"enabled": True}, "tts": {"enabled": True}}
# (LoRaWAN device, its native twin); each pair shares type, codec, profile and place
N_MUTATED = 600
PAIRS = {"MH-CS": "MH-CS-N", "WG-CS": "WG-CS-N", "MH-TTS": "MH-TTS-N", "WG-TTS": "WG-TTS-N"}


def devices_yaml() -> dict[str, Any]:
    def cover(id_: str, **ids: str) -> dict[str, Any]:
        return {"id": id_, "type": "manhole", "lat": 30.25, "lon": 120.15, "codec": "manhole_binary", **ids}

    def gauge(id_: str, **ids: str) -> dict[str, Any]:
        return {"id": id_, "type": "water_gauge", "lat": 30.24, "lon": 120.15, "profile": "low_road", **ids}

    return {
        "profiles": {"low_road": {"rules": {"water_high": {"raise_at": 10, "clear_at": 6}}}},
        "devices": [
            cover("MH-CS", dev_eui=CS_COVER),
            cover("MH-CS-N"),
            gauge("WG-CS", dev_eui=CS_GAUGE),
            gauge("WG-CS-N"),
            cover("MH-TTS", lorawan_device_id=TTS_COVER),
            cover("MH-TTS-N"),
            gauge("WG-TTS", lorawan_device_id=TTS_GAUGE),
            gauge("WG-TTS-N"),
        ],
    }


def lorawan_config(tmp: Path, mosquitto: Mosquitto, workers: int = 0) -> GatewayConfig:
    cfg = gateway_config(tmp, mosquitto, {"api": "none"}, lorawan=LORAWAN, ingest={"workers": workers})
    cfg.devices_file.write_text(yaml.safe_dump(devices_yaml()))
    return cfg


def native(mosquitto: Mosquitto, dtype: str, device_id: str, payload: bytes | dict[str, Any]) -> None:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    pub(mosquitto, f"gridgate/devices/{dtype}/{device_id}/up", body)


def telemetry(sink: SQLiteSink, device_id: str) -> list[tuple[int, dict[str, Any]]]:
    return [(p.time_ns, p.fields) for p in sink.query("telemetry", {"device_id": device_id})]


def alerts(col: Collector, device_id: str) -> list[dict[str, Any]]:
    keep = ("kind", "state", "severity", "value", "grid_id", "micro_grid_id", "started_at", "ended_at")
    return [
        {k: ev[k] for k in keep}
        for ev in (m.json() for m in col.on_topic("gridgate/alerts/#"))
        if ev["source"] == f"device:{device_id}"
    ]


def send_everything(mosquitto: Mosquitto, t0: int) -> int:
    """The same readings over ChirpStack, TTS and natively; returns the telemetry points to expect."""
    opened = encode_manhole_binary(
        open=True, tilt_deg=3.5, water_level_cm=12.3, battery_pct=15, rssi_dbm=-36, ts=t0
    )
    closed = encode_manhole_binary(tilt_deg=3.0, water_level_cm=2.0, battery_pct=64, rssi_dbm=-36, ts=t0 + 60)
    # ChirpStack cover: a frame without and then with a server-decoded `object` (its codec reads bytes)
    first = chirpstack_up(CS_COVER.lower(), t0 + 0.5, frame=opened, rx=((-112, -4.0), (-36, 10.5)))
    pub(mosquitto, chirpstack_topic(CS_COVER.lower()), dumps(first))
    native(mosquitto, "manhole", "MH-CS-N", opened)
    pub(mosquitto, chirpstack_topic(CS_COVER.lower()), dumps(first))  # the server delivers it again
    second = chirpstack_up(CS_COVER.lower(), t0 + 61, frame=closed, obj={"open": True}, f_cnt=1)
    pub(mosquitto, chirpstack_topic(CS_COVER.lower()), dumps(second))
    native(mosquitto, "manhole", "MH-CS-N", closed)
    # ChirpStack gauge (codec auto): the server's object, then a status with the battery level
    up = chirpstack_up(CS_GAUGE, t0 + 5, obj={"water_level_cm": 14.0}, frame=b"\x05\x78", rx=((-90, 7.5),))
    pub(mosquitto, chirpstack_topic(CS_GAUGE), dumps(up))
    native(
        mosquitto,
        "water_gauge",
        "WG-CS-N",
        {"ts": t0 + 5, "water_level_cm": 14.0, "rssi_dbm": -90, "snr_db": 7.5},
    )
    status = chirpstack_event(CS_GAUGE, t0 + 6, margin=9, batteryLevel=12.5)
    pub(mosquitto, chirpstack_topic(CS_GAUGE, "status"), dumps(status))
    native(mosquitto, "water_gauge", "WG-CS-N", {"ts": t0 + 6, "battery_pct": 12.5})
    pub(
        mosquitto,
        chirpstack_topic(CS_GAUGE, "join"),
        dumps(chirpstack_event(CS_GAUGE, t0 + 7, devAddr="01ab")),
    )
    # TTS cover: frm_payload; TTS gauge: decoded_payload (first uplink of a session: f_cnt omitted)
    tts_cover = tts_up(TTS_COVER, "70B3D57ED0000007", t0 + 0.5, frame=opened, rx=((-36.0, 10.5),))
    pub(mosquitto, tts_topic(TTS_COVER), dumps(tts_cover))
    native(mosquitto, "manhole", "MH-TTS-N", opened)
    tts_gauge = tts_up(
        TTS_GAUGE, "70B3D57ED0000003", t0 + 8, decoded={"water_level_cm": 22.0, "battery_pct": 80}
    )
    pub(mosquitto, tts_topic(TTS_GAUGE), dumps(tts_gauge))
    reading = {"ts": t0 + 8, "water_level_cm": 22.0, "battery_pct": 80, "rssi_dbm": -35.0, "snr_db": 5.2}
    native(mosquitto, "water_gauge", "WG-TTS-N", reading)
    return 2 * (2 + 2 + 1 + 1)


def assert_twins(sink: SQLiteSink, col: Collector) -> None:
    radio = {"MH-CS": {"snr_db": 10.5}, "MH-TTS": {"snr_db": 10.5}, "WG-CS": {}, "WG-TTS": {}}
    for lorawan, twin in PAIRS.items():
        expected = [(t, {**fields, **radio[lorawan]}) for t, fields in telemetry(sink, twin)]
        assert telemetry(sink, lorawan) == expected, lorawan
        assert alerts(col, lorawan) == alerts(col, twin), lorawan
    kinds = {(a["kind"], a["state"]) for id_ in PAIRS for a in alerts(col, id_)}
    assert {("manhole_open", "active"), ("manhole_open", "cleared"), ("water_high", "active")} <= kinds
    assert ("battery_low", "active") in kinds


@pytest.mark.parametrize("workers", [0, 2])
def test_lorawan_uplinks_store_what_the_same_readings_store_natively(
    mosquitto: Mosquitto, tmp_path: Path, workers: int
) -> None:
    cfg = lorawan_config(tmp_path, mosquitto, workers)
    t0 = int(time.time()) - 300
    with Collector.on(mosquitto, ["gridgate/alerts/#", "gridgate/dead-letter"]) as col, Gateway(cfg) as gw:
        n = send_everything(mosquitto, t0)
        sink = SQLiteSink(cfg.storage.timeseries_db)
        wait_until(lambda: sink.count("telemetry") >= n and gw.metrics.messages_in >= 14, 15, "all handled")
        wait_until(lambda: gw.metrics.ignored == {"duplicate": 1, "join": 1}, 5, "ignored counted")
        assert_twins(sink, col)
        assert sink.count("telemetry") == n  # the redelivered uplink is stored once
        assert not col.on_topic("gridgate/dead-letter")
        m = gw.metrics
        assert m.messages_in == m.messages_decoded + sum(m.rejected.values()) + sum(m.ignored.values())


def test_bad_envelopes_are_dead_lettered_and_the_next_uplink_stored(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cfg = lorawan_config(tmp_path, mosquitto)
    now = time.time()
    frame = encode_manhole_binary(tilt_deg=1.0, ts=int(now) - 10)
    codec_failed = chirpstack_event(
        CS_COVER, now, level="ERROR", code="UPLINK_CODEC", description="bad byte 3"
    )
    with Collector.on(mosquitto, "gridgate/dead-letter") as col, Gateway(cfg):
        pub(mosquitto, chirpstack_topic(CS_COVER), b'{"deduplicationId": "x", "rxInfo": [{"rssi": "-90"}]')
        pub(mosquitto, chirpstack_topic(CS_COVER), b'{"deduplicationId": "x", "rxInfo": [{"rssi": "-90"}]}')
        pub(mosquitto, chirpstack_topic(CS_COVER, "log"), dumps(codec_failed))
        pub(
            mosquitto,
            tts_topic("nobody-here"),
            dumps(tts_up("nobody-here", "70B3D57ED00000FF", now, frame=frame)),
        )
        pub(mosquitto, chirpstack_topic(CS_COVER), dumps(chirpstack_up(CS_COVER, now, frame=frame)))
        sink = SQLiteSink(cfg.storage.timeseries_db)
        wait_until(lambda: sink.count("telemetry") == 1, 10, "the good uplink stored")
        letters = [m.json() for m in col.wait_count(4, timeout=10)]
    assert [(d["reason"], d["device_id"]) for d in letters] == [
        ("not_json", "MH-CS"),
        ("bad_envelope", "MH-CS"),
        ("server_codec_error", "MH-CS"),
        ("unknown_device", "nobody-here"),
    ]
    assert "rxInfo.0.rssi" in letters[1]["detail"] and "bad byte 3" in letters[2]["detail"]
    assert "lorawan_device_id 'nobody-here'" in letters[3]["detail"]
    ((_, fields),) = telemetry(sink, "MH-CS")
    assert fields["tilt_deg"] == 1.0 and fields["rssi_dbm"] == -36.0


def mutated(rng: random.Random, msg: dict[str, Any]) -> bytes:
    """A real envelope broken the ways a bridge, a formatter or an attacker break one."""
    body = dumps(msg)
    how = rng.randrange(5)
    if how == 0:  # bytes flipped
        data = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if how == 1:  # cut short
        return body[: rng.randrange(len(body))]
    # a value of another type, somewhere in the tree
    node: Any = msg
    while True:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        child = node[key]
        if isinstance(child, dict | list) and child and rng.random() < 0.6:
            node = child
            continue
        node[key] = rng.choice(
            [None, True, -1, 2**63 - 1, 1e308, "", "qg==", "x" * 300, [], {}, [{}], {"a": {}}]
        )
        return dumps(msg)


def test_mutated_envelopes_are_each_stored_ignored_or_dead_lettered(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    cfg = lorawan_config(tmp_path, mosquitto)
    rng = random.Random(11)
    now = time.time()
    frame = encode_manhole_binary(open=True, battery_pct=15, ts=int(now) - 30)
    makers = [
        lambda i: (
            chirpstack_topic(CS_COVER),
            chirpstack_up(CS_COVER, now, frame=frame, obj={"open": 1}, f_cnt=i),
        ),
        lambda i: (chirpstack_topic(CS_GAUGE), chirpstack_up(CS_GAUGE, now, obj={"water_level_cm": i % 30})),
        lambda i: (
            chirpstack_topic(CS_GAUGE, "status"),
            chirpstack_event(CS_GAUGE, now, batteryLevel=i % 100),
        ),
        lambda i: (
            chirpstack_topic(CS_COVER, "log"),
            chirpstack_event(CS_COVER, now, level="ERROR", code="X"),
        ),
        lambda i: (tts_topic(TTS_COVER), tts_up(TTS_COVER, "70B3D57ED0000007", now, frame=frame, f_cnt=i)),
        lambda i: (
            tts_topic(TTS_GAUGE),
            tts_up(TTS_GAUGE, "70B3", now, decoded={"water_level_cm": 3}, f_cnt=i),
        ),
    ]
    messages = []
    for i in range(N_MUTATED):
        topic, msg = makers[i % len(makers)](i + 1)
        messages.append((topic, mutated(rng, msg)))
    with Collector.on(mosquitto, "gridgate/dead-letter") as col, Gateway(cfg) as gw:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lorawan-fuzz")
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        try:
            for topic, payload in messages:
                client.publish(topic, payload, qos=1)
            good = chirpstack_up(CS_GAUGE, now, obj={"water_level_cm": 4.5}, dedup_id="after-the-storm")
            client.publish(chirpstack_topic(CS_GAUGE), dumps(good), qos=1).wait_for_publish(10)
        finally:
            client.loop_stop()
            client.disconnect()
        m = gw.metrics
        wait_until(lambda: m.messages_in == N_MUTATED + 1, 20, "every message handled")
        rejected = sum(m.rejected.values())
        assert m.messages_in == m.messages_decoded + rejected + sum(m.ignored.values())
        assert rejected > N_MUTATED // 3 and m.messages_decoded > N_MUTATED // 10
        assert not {"decoder_error", "handler_error"} & set(m.rejected), m.rejected  # nothing slipped through
        col.wait_count(rejected, timeout=10)
        sink = SQLiteSink(cfg.storage.timeseries_db)
        wait_until(  # the storm did not disturb the next uplink
            lambda: any(f.get("water_level_cm") == 4.5 for _, f in telemetry(sink, "WG-CS")),
            5,
            "stored after",
        )
