"""A push storm: many CTWing pushes POSTed at once, each a distinct reading (tests, bench/push_storm.py).

The client runs in a process of its own (`storm`): in the gateway's process its threads would fight
the API's for the GIL and measure that instead of the answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

STORM_SECRET = "storm-path-secret-0123456789"


def storm_devices(n: int) -> list[dict[str, Any]]:
    """Water gauges known by their CTWing deviceId."""
    return [
        {
            "id": f"WG-S{i:04d}",
            "type": "water_gauge",
            "lat": 30.24,
            "lon": 120.15,
            "ctwing_device_id": f"ct{i:030d}",
        }
        for i in range(n)
    ]


def storm_bodies(n: int, devices: int, t0_ms: int) -> list[bytes]:
    """`n` object-model dataReports spread over the devices, each at its own millisecond."""
    return [
        json.dumps(
            {
                "timestamp": t0_ms + i,
                "tenantId": "2000033629",
                "protocol": "lwm2m",
                "productId": "15114816",
                "messageType": "dataReport",
                "deviceId": f"ct{i % devices:030d}",
                "serviceId": 1,
                "topic": "v1/up/ad19",
                "payload": {"water_level_cm": round(1 + (i % 9) * 0.5, 1)},
            }
        ).encode()
        for i in range(n)
    ]


@dataclass
class StormResult:
    codes: dict[int, int]
    latencies_s: list[float]
    elapsed_s: float

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        n = len(self.latencies_s)
        return (
            f"{n} pushes in {self.elapsed_s:.1f} s ({n / self.elapsed_s:,.0f}/s), answers {self.codes}, "
            f"latency p50 {1000 * statistics.median(self.latencies_s):.1f} ms, "
            f"p99 {1000 * self.percentile(0.99):.1f} ms, max {1000 * max(self.latencies_s):.1f} ms"
        )


async def _sender(host: str, port: int, path: str, queue: asyncio.Queue[bytes], result: StormResult) -> None:
    """One keep-alive HTTP/1.1 connection posting bodies from the queue (a lean client: the figure is
    the gateway's, not a client library's)."""
    reader, writer = await asyncio.open_connection(host, port)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    try:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            result.latencies_s.append(time.perf_counter() - started)
            code = int(status_line.split()[1])
            result.codes[code] = result.codes.get(code, 0) + 1
    finally:
        writer.close()


async def _storm(url: str, bodies: list[bytes], connections: int) -> StormResult:
    parts = urlsplit(url)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    result = StormResult({}, [], 0.0)
    started = time.perf_counter()
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    await asyncio.gather(*(_sender(host, port, parts.path, queue, result) for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - started
    return result


def storm(
    url: str, n: int, devices: int, t0_ms: int, *, repeat_first: int = 0, connections: int = 32
) -> StormResult:
    """POST `storm_bodies(n, devices, t0_ms)` (then the first `repeat_first` again, as retries) to
    `url` over `connections` concurrent keep-alive connections, from a child process."""
    argv = [sys.executable, "-m", "tests.integration.push_storm", url, str(n), str(devices), str(t0_ms)]
    argv += ["--repeat-first", str(repeat_first), "--connections", str(connections)]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=600, text=True)
    doc = json.loads(out.stdout)
    return StormResult({int(k): v for k, v in doc["codes"].items()}, doc["latencies_s"], doc["elapsed_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description="POST a push storm and print its answers as JSON")
    ap.add_argument("url")
    ap.add_argument("n", type=int)
    ap.add_argument("devices", type=int)
    ap.add_argument("t0_ms", type=int)
    ap.add_argument("--repeat-first", type=int, default=0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    bodies = storm_bodies(args.n, args.devices, args.t0_ms)
    result = asyncio.run(_storm(args.url, bodies + bodies[: args.repeat_first], args.connections))
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
