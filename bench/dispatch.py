"""Dispatch benchmark: device uplink on the broker -> gateway -> ticket notification on the broker.

Two figures:
  lookups   grid lookups per second with 1,000 polygons (200 grids, 800 micro-grids): one point at
            a time uncached, the cached path events of fixed devices and cameras take, and bulk
            (`GridIndex.locate_many`). Target: >= 100,000/s.
  dispatch  p50/p99 latency from a device's uplink on Mosquitto to the `{p}/tickets/{team}`
            notification of the ticket it opens, at a paced --rate (default 1,000 events/s).
            `gridgate gateway` runs as its own process on a fresh Mosquitto; every uplink opens
            `manhole_open` on its own cover (covers ~65 m apart, so no two correlate) and each
            ticket's `created` notification is matched to its uplink by the ticket's source.
            The per-grid rate limit is raised for the run, so it measures the path, not the limit.

usage: python bench/dispatch.py [--rate 1000] [--seconds 5] [--skip-dispatch]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402

from gateway.grid_synth import synth_grids  # noqa: E402
from gateway.grids import GridIndex  # noqa: E402
from tests.servers import Mosquitto, free_port  # noqa: E402

BBOX = (30.250, 120.130, 30.290, 120.180)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def bench_lookups(n: int = 200_000) -> dict[str, float]:
    index = GridIndex.from_geojson(synth_grids(rows=20, cols=10, micro_per_side=2), "unassigned")
    assert len(index) == 1000
    rng = random.Random(1)
    lat0, lon0, lat1, lon1 = BBOX
    points = [(rng.uniform(lat0, lat1), rng.uniform(lon0, lon1)) for _ in range(n)]
    out: dict[str, float] = {}
    t = time.perf_counter()
    for lat, lon in points[:50_000]:
        index._locate(lat, lon)
    out["single_uncached_per_s"] = 50_000 / (time.perf_counter() - t)
    fixed = points[:5000]  # 5,000 devices and cameras, each reporting many times
    for lat, lon in fixed:
        index.locate(lat, lon)
    t = time.perf_counter()
    for _ in range(20):
        for lat, lon in fixed:
            index.locate(lat, lon)
    out["single_cached_per_s"] = 20 * len(fixed) / (time.perf_counter() - t)
    t = time.perf_counter()
    index.locate_many(points)
    out["bulk_per_s"] = n / (time.perf_counter() - t)
    return out


def devices_yaml(path: Path, n: int) -> list[str]:
    lat0, lon0, lat1, _ = BBOX
    rows = int((lat1 - lat0) / 0.0006)
    devices = []
    for i in range(n):
        r, c = i % rows, i // rows
        devices.append(
            {
                "id": f"MH-{i:05d}",
                "type": "manhole",
                "lat": lat0 + 0.0003 + r * 0.0006,
                "lon": lon0 + 0.0003 + c * 0.0007,
            }
        )
    path.write_text(json.dumps({"devices": devices}))
    return [d["id"] for d in devices]


def bench_dispatch(rate: float, seconds: float) -> dict[str, Any]:
    n = int(rate * seconds)
    with tempfile.TemporaryDirectory(prefix="gg-dispatch-") as tmp_s, Mosquitto(tmp_s) as mq:
        tmp = Path(tmp_s)
        ids = devices_yaml(tmp / "devices.yaml", n)
        api_port = free_port()
        (tmp / "gw.yaml").write_text(
            json.dumps(
                {
                    "broker": {"host": "127.0.0.1", "port": mq.port, "client_id": "bench-dispatch"},
                    "storage": {"data_dir": str(tmp / "data")},
                    "api": {"host": "127.0.0.1", "port": api_port},
                    "devices_file": str(tmp / "devices.yaml"),
                    "grids_file": str(REPO / "config" / "grids.geojson"),
                    "tickets": {
                        "routing_file": str(REPO / "config" / "routing.yaml"),
                        "rate_limit_per_grid_per_min": 1_000_000,
                        "offline_grace_s": 0,
                        "tick_s": 0.2,
                    },
                }
            )
        )
        gridgate = shutil.which("gridgate", path=str(Path(sys.executable).parent)) or "gridgate"
        log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [gridgate, "gateway", "-c", str(tmp / "gw.yaml"), "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + 60
            while True:
                assert proc.poll() is None, (tmp / "gateway.log").read_text()[-2000:]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=2) as r:
                        if json.load(r).get("mqtt_connected"):
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("gateway did not come up")
                time.sleep(0.1)
            time.sleep(1.0)
            received: dict[str, float] = {}
            kinds: dict[str, int] = {}
            done = threading.Event()
            lock = threading.Lock()

            def on_message(_c: Any, _u: Any, msg: Any) -> None:
                at = time.perf_counter()
                body = json.loads(msg.payload)
                with lock:
                    kinds[body["kind"]] = kinds.get(body["kind"], 0) + 1
                    if body["kind"] == "created":
                        for src in body["ticket"]["sources"]:
                            received.setdefault(src.removeprefix("device:"), at)
                    if len(received) >= n:
                        done.set()

            sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
            sub.on_message = on_message
            sub.connect("127.0.0.1", mq.port)
            sub.subscribe("gridgate/tickets/#", qos=1)
            sub.loop_start()
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
            pub.connect("127.0.0.1", mq.port)
            pub.loop_start()
            time.sleep(0.5)
            sent: dict[str, float] = {}
            start = time.perf_counter()
            now = time.time()
            for i, device in enumerate(ids):
                due = start + i / rate
                while (wait := due - time.perf_counter()) > 0:
                    time.sleep(min(wait, 0.002))
                body = json.dumps({"ts": now + i / rate, "open": True})
                sent[device] = time.perf_counter()
                pub.publish(f"gridgate/devices/manhole/{device}/up", body, qos=1)
            pub_s = time.perf_counter() - start
            done.wait(60)
            sub.loop_stop()
            pub.loop_stop()
            lat_ms = [(received[d] - sent[d]) * 1000 for d in ids if d in received]
            return {
                "events": n,
                "rate_offered": rate,
                "rate_published": n / pub_s,
                "tickets_notified": len(lat_ms),
                "notifications": kinds,
                "p50_ms": statistics.median(lat_ms) if lat_ms else float("nan"),
                "p99_ms": pct(lat_ms, 0.99),
                "max_ms": max(lat_ms) if lat_ms else float("nan"),
            }
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="uplinks (events) per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--skip-dispatch", action="store_true", help="only the grid lookups")
    args = ap.parse_args()
    look = bench_lookups()
    print("grid lookups, 1,000 polygons (target >= 100,000/s)")
    for name, value in look.items():
        print(f"  {name:24s} {value:>12,.0f}")
    if args.skip_dispatch:
        return
    d = bench_dispatch(args.rate, args.seconds)
    print(f"dispatch: uplink on the broker -> ticket notification on the broker, paced at {args.rate:,.0f}/s")
    print(
        f"  events {d['events']:,}  published at {d['rate_published']:,.0f}/s  tickets notified "
        f"{d['tickets_notified']:,}  notifications {d['notifications']}"
    )
    print(f"  p50 {d['p50_ms']:.1f} ms   p99 {d['p99_ms']:.1f} ms   max {d['max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
