"""Ingest benchmark: MQTT (QoS 1) -> consumer -> InfluxDB 1.x, gridgate beside its peers, one process tree.

Rows, each on fresh Mosquitto and InfluxDB 1.6.7 instances on free loopback ports:
  relay        the broker's own relay rate: a bare C subscriber that only counts (sub_raw)
  naive        the naive paho-mqtt script a user would write (shared/peers/ingest/consumers/naive_paho.py)
  gridgate-v1  `gridgate gateway` doing everything it does (decode, validate, rules, events) -> /write
  gridgate-v2  the same through influxdb-client's /api/v2/write, into VictoriaMetrics
  gridgate-v1-w2, gridgate-v2-w2  the same with `ingest.workers: 2` (two worker processes)
Workload: N messages (default 200,000) from 1,000 devices, published as fast as the broker takes them
by 8 C publishers (shared/peers/ingest/src/pub.c), exactly as in shared/BENCHMARKS.md.

Figures per row: sustained messages/s (points stored / first publish -> last stored), lost, the
consumer's CPU, and the ratio to the relay row. Latency: p50/p99 publish -> stored, (a) in the burst,
where it is the queue in the broker, and (b) paced at `--paced-rate` msg/s, which is the latency a
street of devices sees. Stored times come from polling the sink's count (FIFO order assumed).

usage: python bench/ingest.py [-n 200000] [--runs 1] [--rows relay,naive,gridgate-v1] [--paced-rate 5000]
Needs gcc and libmosquitto-dev to build the publishers (installed when run as root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import InfluxDB1, Mosquitto, VictoriaMetrics, free_port  # noqa: E402

PEERS = REPO.parent / "shared" / "peers" / "ingest"
BIN = REPO / "var" / "bench" / "bin"
DB = "gridgate"
NPUB = 8
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build_tools() -> None:
    """Compile the shared C publisher and the counting subscriber (installs libmosquitto-dev as root)."""
    if not (PEERS / "src" / "pub.c").exists():
        sys.exit(f"the shared ingest harness is missing: {PEERS} (expected beside this repository)")
    if not Path("/usr/include/mosquitto.h").exists():
        if os.geteuid() != 0:
            sys.exit("libmosquitto-dev is missing: sudo apt-get install libmosquitto-dev gcc")
        subprocess.run(["apt-get", "install", "-y", "-qq", "libmosquitto-dev", "gcc"], check=True)
    BIN.mkdir(parents=True, exist_ok=True)
    for name, libs in (("pub", ["-lmosquitto"]), ("sub_raw", [])):
        src, out = PEERS / "src" / f"{name}.c", BIN / name
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["gcc", "-O2", "-o", str(out), str(src), *libs], check=True)


def cpu_s(pid: int) -> float:
    """utime + stime of a process and its waited-for children, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def device_name(i: int, n: int) -> tuple[str, str]:
    """(id, type) of device i of n, as pub.c names them: 40 % MH-, 35 % BIN-, 25 % WG-."""
    n_mh, n_bin = n * 40 // 100, n * 35 // 100
    if i < n_mh:
        return f"MH-{i + 1:04d}", "manhole"
    if i < n_mh + n_bin:
        return f"BIN-{i - n_mh + 1:04d}", "bin"
    return f"WG-{i - n_mh - n_bin + 1:04d}", "water_gauge"


def devices_yaml(path: Path, n: int, realistic: bool = False) -> None:
    """n devices named as pub.c names them (`device_name`).

    `realistic` adds what a city's file holds: names, addresses, maintenance teams, a profile, and
    platform ids (an IMEI on every other manhole, a DevEUI on every water gauge)."""
    lines = []
    if realistic:
        lines += ["profiles:", "  low_road: {rules: {water_high: {raise_at: 10, clear_at: 6}}}"]
    lines.append("devices:")
    for i in range(n):
        dev, typ = device_name(i, n)
        lat, lon = 30.25 + (i % 40) * 0.001, 120.13 + (i // 40) * 0.0015
        extra = ""
        if realistic:
            extra = (
                f", name: '{typ} {i + 1}', address: 'No. {i % 300 + 1} Wensan Road',"
                f" maintenance_team: maint-{i % 7}"
            )
            if typ == "manhole" and i % 2 == 0:
                extra += f", imei: '86{i:013d}'"
            elif typ == "water_gauge":
                extra += f", dev_eui: '{0x70B3D57ED0000000 + i:016X}'"
                extra += ", profile: low_road" if i % 3 == 0 else ""
        where = f"lat: {lat:.4f}, lon: {lon:.4f}"
        lines.append(f"  - {{id: {dev}, type: {typ}, {where}, reporting_interval_s: 600{extra}}}")
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Sample:
    row: str
    rate: float
    stored: int
    lost: int
    seconds: float
    consumer_cpu_s: float
    burst_p50_s: float
    burst_p99_s: float
    extra: dict[str, Any] = field(default_factory=dict)


class InfluxCounter:
    def __init__(self, server: InfluxDB1) -> None:
        self.server = server

    def count(self) -> int:
        rows = self.server.rows("SELECT count(battery_pct) FROM telemetry", DB)
        return int(rows[0]["count"]) if rows else 0


class VMCounter:
    def __init__(self, server: VictoriaMetrics) -> None:
        self.server = server

    def count(self) -> int:
        self.server.force_flush()
        # the paced run's readings are stamped hours ahead (after the burst's): look from a day ahead
        res = self.server.query("sum(count_over_time(telemetry_battery_pct[2d]))", time.time() + 86_400)
        result = res.get("result", [])  # tests.servers returns the response's `data`
        return int(float(result[0]["value"][1])) if result else 0


def poll_until(
    counter: Any, n: int, t_start: float, timeout: float, interval: float = 0.05
) -> list[tuple[float, int]]:
    """(time, count) samples until the sink holds n points, stalls for 15 s, or the timeout."""
    timeline: list[tuple[float, int]] = [(t_start, 0)]
    last_change = time.time()
    while time.time() - t_start < timeout:
        try:
            c = counter.count()
        except Exception:  # the sink is busy: try again
            c = timeline[-1][1]
        now = time.time()
        if c != timeline[-1][1]:
            timeline.append((now, c))
            last_change = now
        if c >= n or now - last_change > 15:
            break
        time.sleep(interval)
    return timeline


def latencies(timeline: list[tuple[float, int]], pub_times: list[float]) -> list[float]:
    """Per message: first time the sink's count covered it, minus when it was published."""
    out, j = [], 0
    for k, t_pub in enumerate(pub_times):
        while j < len(timeline) and timeline[j][1] < k + 1:
            j += 1
        if j == len(timeline):
            break
        out.append(max(0.0, timeline[j][0] - t_pub))
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def publish_burst(port: int, n: int, devices: int) -> tuple[float, float]:
    procs = [
        subprocess.Popen(
            [
                str(BIN / "pub"),
                "127.0.0.1",
                str(port),
                str(n),
                str(devices),
                "1",
                "1000",
                "600",
                f"{i}/{NPUB}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(NPUB)
    ]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return min(r["t_first_pub"] for r in results), max(r["t_last_pub"] for r in results)


def start_consumer(
    row: str, mq: Mosquitto, sink_url: str, run_dir: Path
) -> tuple[subprocess.Popen[bytes], str | None]:
    env = dict(os.environ, MQTT_HOST="127.0.0.1", MQTT_PORT=str(mq.port), INFLUX_URL=sink_url, INFLUX_DB=DB)
    log = open(run_dir / f"{row}.log", "wb")  # noqa: SIM115 - closed with the process
    if row == "naive":
        cmd = [sys.executable, str(PEERS / "consumers" / "naive_paho.py"), "influx1"]
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), None
    api = "v2" if row.startswith("gridgate-v2") else "v1"
    workers = int(row.rsplit("-w", 1)[1]) if "-w" in row else 0
    devices = run_dir / "devices.yaml"
    devices_yaml(devices, 1000)
    cfg, api_port = gateway_config(run_dir, mq.port, sink_url, devices, api=api, workers=workers, name=row)
    return launch_gateway(cfg, env, log), f"http://127.0.0.1:{api_port}"


def gateway_config(
    run_dir: Path,
    mq_port: int,
    sink_url: str,
    devices: Path,
    *,
    api: str = "v1",
    workers: int = 0,
    name: str,
    **sections: Any,
) -> tuple[Path, int]:
    """A gateway config in `run_dir` (its data there too): the config file and the API port;
    `sections`: more top-level sections (`cluster`, `tickets`)."""
    api_port = free_port()
    cfg = run_dir / f"{name}.yaml"
    cfg.write_text(
        json.dumps(
            {
                "broker": {"host": "127.0.0.1", "port": mq_port, "client_id": f"bench-{name}"},
                "influx": {"api": api, "url": sink_url, "database": DB, "token": "bench", "bucket": DB},
                "storage": {"data_dir": str(run_dir / f"data-{name}")},
                "api": {"host": "127.0.0.1", "port": api_port},
                "ingest": {"workers": workers},
                "devices_file": str(devices),
                "grids_file": str(REPO / "config" / "grids.geojson"),
                **sections,
            }
        )
    )
    return cfg, api_port


def launch_gateway(cfg: Path, env: dict[str, str], log: Any, *args: str) -> subprocess.Popen[bytes]:
    """`python -m gridgate gateway -c cfg` (extra CLI arguments after), its output into `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "gridgate", "gateway", "-c", str(cfg), "--log-level", "warning", *args],
        cwd=REPO,  # this checkout's gridgate, not one installed elsewhere
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ready(row: str, api: str | None, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while api is not None and time.time() < deadline:
        assert proc.poll() is None, f"{row} exited early"
        try:
            with urllib.request.urlopen(f"{api}/healthz", timeout=2) as r:
                if json.load(r).get("mqtt_connected"):
                    break
        except OSError:
            pass
        time.sleep(0.1)
    time.sleep(1.0 if api else 2.0)  # the subscription settles before the first publish


def run_relay(n: int, devices: int, tmp: Path) -> Sample:
    with Mosquitto(tmp) as mq:
        sub = subprocess.Popen(
            [str(BIN / "sub_raw"), "127.0.0.1", str(mq.port), "gridgate/devices/+/+/up", str(n), "120", "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert sub.stderr is not None
        while "READY" not in sub.stderr.readline():
            pass
        t0, _ = publish_burst(mq.port, n, devices)
        out = json.loads(sub.communicate()[0].strip().splitlines()[-1])
    secs = out["t_last"] - t0
    return Sample("relay", out["received"] / secs, out["received"], n - out["received"], secs, 0.0, 0.0, 0.0)


def run_consumer(row: str, n: int, devices: int, tmp: Path, paced_rate: float) -> Sample:
    with Mosquitto(tmp) as mq:
        vm = row.startswith("gridgate-v2")
        if vm:
            sink_cm: Any = VictoriaMetrics(tmp)
        else:
            sink_cm = InfluxDB1(tmp)
        with sink_cm as sink:
            counter: Any = VMCounter(sink) if vm else InfluxCounter(sink)
            if not vm:
                sink.create_database(DB)
            proc, api = start_consumer(row, mq, sink.url, tmp)
            try:
                wait_ready(row, api, proc)
                cpu0 = cpu_s(proc.pid)
                t_wall = time.time()
                result: dict[str, Any] = {}
                pub_thread = threading.Thread(
                    target=lambda: result.update(
                        zip(("t0", "t1"), publish_burst(mq.port, n, devices), strict=True)
                    )
                )
                pub_thread.start()
                timeline = poll_until(counter, n, t_wall, timeout=300)
                pub_thread.join()
                cpu = cpu_s(proc.pid) - cpu0
                stored = timeline[-1][1]
                t_end = timeline[-1][0]
                secs = t_end - result["t0"]
                # the burst: messages leave the publishers evenly between first and last publish
                span = result["t1"] - result["t0"]
                pub_times = [result["t0"] + span * k / n for k in range(n)]
                lat = latencies(timeline, pub_times)
                sample = Sample(
                    row, stored / secs, stored, n - stored, secs, cpu, pct(lat, 0.5), pct(lat, 0.99)
                )
                if paced_rate and row.startswith("gridgate"):
                    sample.extra = paced(mq.port, counter, stored, paced_rate)
                return sample
            finally:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def paced(port: int, counter: Any, already: int, rate: float, seconds: float = 10.0) -> dict[str, Any]:
    """Publish at a steady `rate` for `seconds` (a Python publisher), then p50/p99 publish -> stored."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paced")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    n = int(rate * seconds)
    pub_times: list[float] = []
    stop = threading.Event()
    samples: list[tuple[float, int]] = []

    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the sink is busy: try again
                samples.append((time.time(), counter.count() - already))
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    start = time.time()
    base_ms = int(start * 1000) + 10_000_000  # after the burst's timestamps, unique per device
    for k in range(n):
        due = start + k / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        dev = k % 250 + 1
        payload = json.dumps({"ts": base_ms + k, "seq": k, "water_level_cm": 1.5, "battery_pct": 70})
        pub_times.append(time.time())
        client.publish(f"gridgate/devices/water_gauge/WG-{dev:04d}/up", payload, qos=1)
    deadline = time.time() + 30
    while time.time() < deadline and (not samples or samples[-1][1] < n):
        time.sleep(0.05)
    stop.set()
    poller.join()
    client.loop_stop()
    timeline = [(start, 0)] + [s for i, s in enumerate(samples) if i == 0 or s[1] != samples[i - 1][1]]
    lat = latencies(timeline, pub_times)
    return {
        "paced_rate": rate,
        "paced_stored": samples[-1][1] if samples else 0,
        "paced_sent": n,
        "paced_p50_s": pct(lat, 0.5),
        "paced_p99_s": pct(lat, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--rows", default="relay,naive,gridgate-v1,gridgate-v1-w2,gridgate-v2-w2")
    ap.add_argument("--paced-rate", type=float, default=5000.0, help="0 skips the paced latency run")
    args = ap.parse_args()
    build_tools()
    samples: list[Sample] = []
    for run in range(args.runs):
        for row in args.rows.split(","):
            with tempfile.TemporaryDirectory(prefix=f"gg-bench-{row}-") as tmp:
                s = (
                    run_relay(args.n, args.devices, Path(tmp))
                    if row == "relay"
                    else run_consumer(row, args.n, args.devices, Path(tmp), args.paced_rate)
                )
            samples.append(s)
            print(
                f"run {run + 1} {row}: {s.rate:,.0f} msg/s, lost {s.lost}, {s.seconds:.1f} s, "
                f"consumer CPU {s.consumer_cpu_s:.1f} s {s.extra or ''}",
                flush=True,
            )
    report(samples)


def report(samples: list[Sample]) -> None:
    rows = list(dict.fromkeys(s.row for s in samples))
    med = {r: statistics.median(s.rate for s in samples if s.row == r) for r in rows}
    relay = med.get("relay")
    naive = med.get("naive")
    print(
        "\n| row | msgs/s (median) | lost | consumer CPU us/msg | burst p50 / p99 s | paced p50 / p99 s"
        " | / relay | / naive |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mine = [s for s in samples if s.row == r]
        last = mine[-1]
        cpu_us = statistics.median(s.consumer_cpu_s / max(1, s.stored) * 1e6 for s in mine)
        paced_txt = (
            (
                f"{last.extra['paced_p50_s']:.3f} / {last.extra['paced_p99_s']:.3f} "
                f"at {last.extra['paced_rate']:,.0f}/s"
            )
            if last.extra
            else "-"
        )
        print(
            f"| {r} | {med[r]:,.0f} | {'/'.join(str(s.lost) for s in mine)} | "
            f"{cpu_us:.0f} | {last.burst_p50_s:.2f} / {last.burst_p99_s:.2f} | {paced_txt} | "
            f"{med[r] / relay:.3f} | "
            if relay
            else "- | ",
            end="",
        )
        print(f"{med[r] / naive:.2f} |" if naive else "- |")


if __name__ == "__main__":
    main()
