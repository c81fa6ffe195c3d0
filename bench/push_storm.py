"""Push storm benchmark: 20,000 CTWing pushes POSTed over 32 concurrent connections to a running gateway.

The gateway runs in this process as in production (`Gateway(cfg)`: uvicorn API, push thread,
pipeline, embedded SQLite sink, a real Mosquitto); the client runs in a child process
(tests/integration/push_storm.py) so the two do not share a GIL. Each push is a distinct reading
of one of 500 water gauges; 1 % are sent again as the platform's retries.

Prints the answers (all must be 200), latency p50/p99/max (request sent -> answer read, so the
client's own queueing is included), throughput, how long the pipeline took to catch up after the
last answer, and whether every message's point is stored exactly once. The target: p99 under
100 ms while the pipeline catches up (CTWing ranks receivers by response time and cools a slow
one down for a minute).

usage: python bench/push_storm.py [-n 20000] [--connections 32] [--devices 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.service import Gateway  # noqa: E402
from gateway.sinks.sqlite import SQLiteSink  # noqa: E402
from gridgate.config import GatewayConfig  # noqa: E402
from tests.integration.push_storm import STORM_SECRET, storm, storm_devices  # noqa: E402
from tests.servers import Mosquitto  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20_000, help="distinct pushes")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--devices", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridgate-push-storm-") as tmp_dir, Mosquitto(tmp_dir) as broker:
        tmp = Path(tmp_dir)
        (tmp / "devices.yaml").write_text(yaml.safe_dump({"devices": storm_devices(args.devices)}))
        cfg = GatewayConfig(
            broker={"host": "127.0.0.1", "port": broker.port, "client_id": "push-storm"},
            storage={"data_dir": tmp / "data"},
            api={"host": "127.0.0.1", "port": 0},
            devices_file=tmp / "devices.yaml",
            grids_file=None,
            platforms={
                "ctwing": {
                    "enabled": True,
                    "secret": STORM_SECRET,
                    "rate_limit_per_s": 1e6,
                    "rate_burst": 10**6,
                }
            },
        )
        t0_ms = int(time.time() - 3600) * 1000
        with Gateway(cfg) as gw:
            url = f"{gw.api_url}/ingest/ctwing/{STORM_SECRET}"
            result = storm(
                url, args.n, args.devices, t0_ms, repeat_first=args.n // 100, connections=args.connections
            )
            answered = time.perf_counter()
            caught_up = gw.flush(120)
            catch_up_s = time.perf_counter() - answered
            duplicates = gw.push.metrics.duplicates["ctwing"] if gw.push else 0
        sink = SQLiteSink(cfg.storage.timeseries_db)
        points = sink.query("telemetry", limit=None)
        sink.close()
    distinct = len({(p.tags["device_id"], p.time_ns) for p in points})
    print(f"push storm: {result.summary()}")
    verdict = "ok" if caught_up else "NOT within 120 s"
    print(f"pipeline caught up {catch_up_s:.1f} s after the last answer ({verdict})")
    print(
        f"stored: {len(points)} points for {args.n} distinct pushes, {distinct} distinct; "
        f"{duplicates} retries recognised of {args.n // 100}"
    )
    ok = result.codes == {200: args.n + args.n // 100} and len(points) == distinct == args.n
    print(f"p99 {1000 * result.percentile(0.99):.1f} ms (target < 100 ms); nothing lost, nothing twice: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
