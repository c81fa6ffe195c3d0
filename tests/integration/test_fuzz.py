"""Fuzz: 100,000 mutated and random payloads through real Mosquitto into a running gateway and InfluxDB 1.x.

What must hold afterwards: the gateway lives and still stores a normal reading; every message was
decoded or rejected (`messages_in == messages_decoded + rejected`, each rejection on the
dead-letter topic); InfluxDB holds only declared telemetry fields, each with its one declared type;
and the sink had no point refused.

The publisher is not paced (GRIDGATE_FUZZ_RATE sets a rate): two thirds of the payloads come back
as dead letters faster than the broker acknowledges them while the inbound flood lasts, so the
gateway's publish backlog (past paho's 65,535 message ids) is attacked too: every one must arrive.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devices.codecs import encode_manhole_binary
from devices.types import FIELD_TYPES, FieldType
from tests.integration.spine_helpers import DEVICES, gateway_config, start_gateway
from tests.servers import InfluxDB1, Mosquitto, wait_until

N_MESSAGES = int(os.environ.get("GRIDGATE_FUZZ_MESSAGES", 100_000))
SEED = 8
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
WINDOW = 1000  # messages in flight from the publisher
PUBLISH_RATE = float(os.environ.get("GRIDGATE_FUZZ_RATE", 0))  # messages/s; 0: as fast as it goes
INFLUX_TYPE = {
    FieldType.bool: "boolean",
    FieldType.float: "float",
    FieldType.int: "integer",
    FieldType.string: "string",
}

JSON_DEVICES = [(d["type"], d["id"]) for d in DEVICES["devices"] if d.get("codec", "auto") == "auto"]
BINARY_TOPICS = ["gridgate/devices/manhole/MH-B/up", "acme/covers/MH-V/data"]
WRONG_TOPICS = [
    "gridgate/devices/manhole/NOPE-1/up",  # unknown device
    "gridgate/devices/bin/MH-1/up",  # the registry says manhole
    "gridgate/devices/bin",  # not the scheme
    "gridgate/devices/manhole/MH-1/down",
    "gridgate/devices/manhole/MH-1/up/extra",
    "acme/covers/MH-1/data",  # a JSON device on the binary vendor topic
    "acme/covers/NOPE-2/data",
]
ODD_KEYS = [
    "", " ", "a,b", "tilt_deg ", " open", "a=b", 'q"t', "it's", "back\\slash", "nul\x00", "bell\x07",
    "del\x7f",
    "zero\u200bwidth", "tab\tkey", "new\nline", "é", "温度", "time", "x" * 70, "Tilt_Deg", "fw", "gps",
    "fill_pct", "lid_open", "open", "distance_cm", "water_level_cm", "msg_type", "seq", "ts",
]  # fmt: skip
ODD_VALUES: list[Any] = [
    True, False, 0, 1, 2, -1, 0.5, 1.0, 0.0, 1e308, -1e308, 5e-324, 2**63 - 1, -(2**63), 2**64 - 1, 10**30,
    "true", "FALSE", "1", "12.5", "", "x" * 300, "nul\x00", None, [], {}, [1, 2], {"v": 1}, [[[[1]]]],
]  # fmt: skip
RAW_TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b"1" + b"0" * 40,
    b"0x1F",
    b"+1",
    b".5",
    b"01",
]


def valid_reading(rng: random.Random, dtype: str, now: float) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if rng.random() < 0.7:  # else the receive time
        ts = now - rng.uniform(0, 3600)
        doc["ts"] = rng.choice(
            [round(ts, 3), int(ts * 1000), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))]
        )
    if rng.random() < 0.5:
        doc["seq"] = rng.randint(0, 10**6)
    if dtype == "manhole":
        doc.update(
            tilt_deg=round(rng.uniform(0, 20), 1), open=rng.random() < 0.1, water_level_cm=rng.randint(0, 40)
        )
        doc.update(gas_ch4_lel_pct=round(rng.uniform(0, 30), 1), fault_code=rng.choice([0, 0, 0, 3]))
    elif dtype == "bin":
        doc.update(
            fill_pct=rng.randint(0, 100),
            distance_cm=round(rng.uniform(0, 120), 1),
            lid_open=rng.random() < 0.1,
        )
        doc.update(temperature_c=round(rng.uniform(-5, 70), 1), tilt_deg=rng.randint(0, 60))
    else:
        doc.update(water_level_cm=round(rng.uniform(0, 40), 1), voltage_v=3.6)
    doc.update(battery_pct=rng.randint(0, 100), rssi_dbm=rng.randint(-120, -60), snr_db=rng.uniform(-5, 12))
    return doc


def valid_senml(rng: random.Random, dtype: str, now: float) -> list[dict[str, Any]]:
    bt = int(now - rng.uniform(0, 3600))
    recs: list[dict[str, Any]] = [{"bn": f"urn:dev:gridgate:{dtype}:", "bt": bt}]
    names = {
        "manhole": [("tilt", "deg"), ("water_level", "m"), ("ch4", "%LEL"), ("cover", None)],
        "bin": [("distance", "m"), ("fill", "%"), ("temperature", "K"), ("lid", None)],
        "water_gauge": [("level", "mm"), ("battery", "%EL"), ("rssi", "dBm")],
    }[dtype]
    for name, unit in names:
        rec: dict[str, Any] = {"n": name}
        if unit is None:
            rec["vb"] = rng.random() < 0.1
        else:
            rec.update(u=unit, v=round(rng.uniform(0, 50), 2))
        if rng.random() < 0.2:
            rec["t"] = rng.randint(-60, 0)
        recs.append(rec)
    return recs


def mutate_doc(rng: random.Random, doc: Any) -> Any:
    """Type swaps, odd keys and deep values in a JSON document (a reading or a SenML pack)."""
    target = rng.choice(doc) if isinstance(doc, list) and doc else doc
    if not isinstance(target, dict):
        return doc
    for _ in range(rng.randint(1, 3)):
        move = rng.random()
        if move < 0.45 and target:
            target[rng.choice(list(target))] = rng.choice(ODD_VALUES)
        elif move < 0.8:
            target[rng.choice(ODD_KEYS)] = rng.choice(ODD_VALUES)
        else:
            depth = rng.choice([5, 17, 100, 1000, 3000])
            target[rng.choice(ODD_KEYS)] = json.loads("[" * min(depth, 900) + "]" * min(depth, 900))
    return doc


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Flipped, inserted, deleted bytes, a cut, a BOM or a raw NaN-like token."""
    b = bytearray(data)
    move = rng.random()
    if move < 0.4:
        for _ in range(rng.randint(1, 4)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
    elif move < 0.55:
        b = b[: rng.randrange(len(b) + 1)]
    elif move < 0.7:
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif move < 0.8:
        b = bytearray(b"\xef\xbb\xbf" + b)
    else:
        colon = b.find(b":")
        if colon >= 0:
            end = colon + 1
            while end < len(b) and b[end] not in b",}]":
                end += 1
            b[colon + 1 : end] = b" " + rng.choice(RAW_TOKENS)
    return bytes(b)


def deep(rng: random.Random) -> bytes:
    depth = rng.choice([17, 500, 1000, 1025, 5000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    inner = opener * depth + b"1" + closer * depth if opener != b"[" else opener * depth + closer * depth
    return rng.choice(
        [inner, b'{"tilt_deg": 1, "x": ' + inner + b"}", b'[{"n": "tilt", "v": ' + inner + b"}]"]
    )


def frame(rng: random.Random, now: float) -> bytes:
    return encode_manhole_binary(
        msg_type=rng.choice([1, 2]),
        open=rng.random() < 0.1,
        tamper=rng.random() < 0.05,
        tilt_deg=rng.randint(0, 300) / 10,
        water_level_cm=rng.randint(0, 500) / 10,
        battery_pct=rng.randint(0, 100),
        rssi_dbm=rng.randint(-120, -60),
        ts=rng.choice([0, int(now - rng.uniform(0, 3600))]),
    )


def payloads(n: int, now: float, seed: int = SEED) -> list[tuple[str, bytes]]:
    """`n` (topic, payload): about a fifth valid, the rest mutated, random, deep or misaddressed."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    for _ in range(n):
        dtype, dev = rng.choice(JSON_DEVICES)
        topic = f"gridgate/devices/{dtype}/{dev}/up"
        kind = rng.random()
        if kind < 0.45:
            doc: Any = valid_reading(rng, dtype, now) if rng.random() < 0.6 else valid_senml(rng, dtype, now)
            if rng.random() < 0.65:
                doc = mutate_doc(rng, doc)
            data = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
            if rng.random() < 0.3:
                data = mutate_bytes(rng, data)
        elif kind < 0.65:
            topic = rng.choice(BINARY_TOPICS)
            data = frame(rng, now)
            move = rng.random()
            if move < 0.3:
                data = data.hex().encode()
            elif move < 0.5:
                data = mutate_bytes(rng, data.hex().encode())
            elif move < 0.8:
                data = mutate_bytes(rng, data)
        elif kind < 0.75:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        elif kind < 0.82:
            data = deep(rng)
        elif kind < 0.9:
            topic = f"gridgate/devices/{dtype}/{dev}/status"
            data = rng.choice(
                [b"online", b"offline", b" OFFLINE\n", b'{"status": "online"}', b"maybe", b"{", b"[]"]
            )
            if rng.random() < 0.3:
                data = rng.choice([deep(rng), mutate_bytes(rng, data), b'{"status": ' + deep(rng) + b"}"])
        else:
            topic = rng.choice(WRONG_TOPICS)
            data = json.dumps(valid_reading(rng, dtype, now)).encode()
        out.append((topic, data))
    return out


def publish(
    host: str, port: int, messages: list[tuple[str, bytes]], rate: float = 0, timeout_s: float = 120
) -> float:
    """Publish at QoS 1 with one paho client, at `rate` messages/s or as fast as the broker
    acknowledges (0); the seconds it took."""
    acked = threading.Event()
    # at most WINDOW unacknowledged: paho scans its whole queue on every PUBACK, so queueing all
    # 100,000 at once would make publishing quadratic
    window = threading.BoundedSemaphore(WINDOW)
    count = 0

    def on_publish(*_: Any) -> None:
        nonlocal count
        count += 1
        window.release()
        if count == len(messages):
            acked.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(WINDOW)
    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    start = time.monotonic()
    try:
        for i, (topic, data) in enumerate(messages):
            if not window.acquire(timeout=timeout_s):
                break
            client.publish(topic, data, qos=1)
            if rate and i % 100 == 99:  # paced: ahead of schedule, wait for it
                time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        assert acked.wait(timeout_s), f"the broker acknowledged {count} of {len(messages)} messages"
        return time.monotonic() - start
    finally:
        client.loop_stop()
        client.disconnect()


def _publisher(host: str, port: int, n: int, now: float, result: Connection) -> None:
    """The fuzz publisher's own process: the gateway under test does not share its interpreter."""
    result.send(publish(host, port, payloads(n, now), PUBLISH_RATE))


def publish_in_child(broker: Mosquitto, n: int, now: float) -> Callable[[], float]:
    """Start publishing `payloads(n, now)` from a child process; returns a wait for its seconds."""
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_publisher, args=(broker.host, broker.port, n, now, theirs), daemon=True)
    proc.start()

    def wait() -> float:
        assert ours.poll(240), "the publisher did not finish"
        seconds: float = ours.recv()
        proc.join(10)
        return seconds

    return wait


class DeadLetters:
    """Every dead letter, one JSON per line in a file, from mosquitto_sub in its own process with a
    persistent session: a subscriber in the test's interpreter starves under this load, misses its
    keepalive and loses what the broker sent while it reconnected."""

    def __init__(self, broker: Mosquitto, path: Path) -> None:
        assert MOSQUITTO_SUB, "mosquitto_sub is not installed (apt-get install mosquitto-clients)"
        argv = [MOSQUITTO_SUB, "-h", broker.host, "-p", str(broker.port), "-t", "gridgate/dead-letter"]
        argv += ["-q", "1", "-c", "-i", f"fuzz-dead-letters-{path.parent.name}"[:23], "-F", "%p"]
        self.path = path
        self._out = path.open("wb")
        # line-buffered: stdio would hold the last few kilobytes back in its buffer
        self._proc = subprocess.Popen(["stdbuf", "-oL", *argv], stdout=self._out, stderr=subprocess.DEVNULL)

    def lines(self) -> list[bytes]:
        return self.path.read_bytes().splitlines()

    def wait(self, n: int, timeout_s: float) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.lines()) >= n, timeout_s, f"{n} dead letters")
        return [json.loads(line) for line in self.lines()]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._out.close()


def scraped(api_url: str) -> dict[str, float]:
    """`/metrics` as name{labels} -> value."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{api_url}/metrics").text):
        for s in family.samples:
            out[s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))] = s.value
    return out


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "two-workers"])
def test_fuzz_100k_payloads_through_broker_gateway_and_influxdb(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, influx_db: str, tmp_path: Path, workers: int
) -> None:
    now = time.time()
    cfg = gateway_config(
        tmp_path,
        mosquitto,
        {"api": "v1", "url": influxdb1.url, "database": influx_db},
        ingest={"workers": workers},
        tickets={"enabled": os.environ.get("FUZZ_T") == "1"},
    )
    dead = DeadLetters(mosquitto, tmp_path / "dead-letters.jsonl")
    gw = start_gateway(cfg)
    try:
        # both listen once a probe comes back rejected; probes sent before that are simply lost
        probe = ("gridgate/devices/water_gauge/NOPE-0/up", b'{"water_level_cm": 1}')
        for _ in range(40):
            publish(mosquitto.host, mosquitto.port, [probe])
            if dead.lines():
                break
            time.sleep(0.25)
        time.sleep(1.0)  # workers report their counts about every 0.1 s; the last probe lands
        probes = wait_until(lambda: len(dead.lines()) == gw.metrics.messages_in, 10, "probes settled")
        start = time.monotonic()
        published = publish_in_child(mosquitto, N_MESSAGES, now)
        total = N_MESSAGES + probes
        try:
            wait_until(lambda: gw.metrics.messages_in >= total, 120, f"{total} messages handled")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {gw.metrics.messages_in} handled, {gw.metrics.rejected}") from None
        handled_s = time.monotonic() - start
        pub_s = published()
        assert gw.flush(60), "points still buffered after 60 s"
        m = gw.metrics
        rejected = sum(m.rejected.values())
        print(
            f"\nfuzz workers={workers}: {N_MESSAGES} messages published in {pub_s:.1f} s, handled in "
            f"{handled_s:.1f} s ({N_MESSAGES / handled_s:,.0f} msg/s); decoded {m.messages_decoded}, "
            f"readings {m.readings}, fields dropped {m.fields_dropped}, rejected {rejected}: "
            f"{dict(m.rejected.most_common())}"
        )
        # every message counted once, decoded or rejected; every rejection dead-lettered
        assert m.messages_in == total == m.messages_decoded + rejected
        metrics = scraped(gw.api_url)
        assert metrics["gridgate_messages_in_total"] == total
        assert (
            metrics["gridgate_messages_decoded_total"]
            + sum(v for k, v in metrics.items() if k.startswith("gridgate_messages_rejected_total{"))
            == total
        )
        assert "decoder_error" not in m.rejected, m.rejected  # the built-in codecs never slip
        assert m.messages_decoded > N_MESSAGES // 10 and rejected > N_MESSAGES // 2  # the fuzz bites
        letters = dead.wait(rejected, 150)  # dead letters leave at the broker's pace, after the rest
        assert Counter(d["reason"] for d in letters) == m.rejected
        assert "handler_error" not in m.rejected, [d for d in letters if d["reason"] == "handler_error"][:3]
        # the database: declared fields only, one type each, nothing refused or lost by the sink
        keys = influxdb1.rows('SHOW FIELD KEYS FROM "telemetry"', influx_db)
        types: dict[str, set[str]] = {}
        for row in keys:
            types.setdefault(row["fieldKey"], set()).add(row["fieldType"])
        assert types, "nothing was stored"
        assert {k: t for k, t in types.items() if k not in FIELD_TYPES or len(t) != 1} == {}
        assert {k: t.pop() for k, t in types.items()} == {k: INFLUX_TYPE[FIELD_TYPES[k]] for k in types}
        assert gw.metrics.gauges["points_rejected"]() == 0 and m.points_refused == 0
        assert gw.metrics.gauges["points_dropped"]() == 0 and m.write_errors == 0
        # and it still works: a normal reading afterwards is stored
        ts = int(time.time()) - 1
        publish(
            mosquitto.host,
            mosquitto.port,
            [("gridgate/devices/water_gauge/WG-1/up", f'{{"ts": {ts}, "water_level_cm": 7.5}}'.encode())],
        )
        wait_until(lambda: gw.metrics.messages_in >= total + 1, 20, "the last reading handled")
        assert gw.flush(20)
        rows = influxdb1.rows(
            f"SELECT water_level_cm FROM telemetry WHERE device_id = 'WG-1' AND time = {ts}s", influx_db
        )
        assert [r["water_level_cm"] for r in rows] == [7.5]
        assert httpx.get(f"{gw.api_url}/healthz").json()["mqtt_connected"] is True
    finally:
        dead.close()
        gw.stop()
