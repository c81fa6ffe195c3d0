"""Capacity: the gateway's memory and CPU with many registered devices, and throughput with replicas.

Rows, each on fresh Mosquitto and InfluxDB 1.6.7 instances on free loopback ports (bench/ingest.py):
  rss       `gridgate gateway` (one process tree) with a devices.yaml of 10,000 and of 100,000 devices
            (mixed types, names, addresses, teams, a profile, IMEIs and DevEUIs): start-up time, RSS at
            rest after start-up, and RSS and CPU per message while a paced publisher sends `--rate`
            msg/s (default 1,000) spread over all devices for `--seconds` (default 20)
  replicas  messages/s and CPU per message (the whole gateway process tree / messages stored) with
            1, 2 and 4 ingest replicas, from a burst of `-n` messages over `--replica-devices` devices
            by 8 C publishers (shared/peers/ingest/src/pub.c); ratios to 1 replica
RSS is VmRSS from /proc/<pid>/status summed over the process tree (workers included).

usage: python bench/scale.py [--rows rss,replicas] [--devices 10000,100000] [--replicas 1,2,4]
                             [--json var/bench/scale.json]
Needs gcc and libmosquitto-dev to build the publishers (installed when run as root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.ingest import (  # noqa: E402
    DB,
    InfluxCounter,
    build_tools,
    cpu_s,
    device_name,
    devices_yaml,
    gateway_config,
    launch_gateway,
    poll_until,
    publish_burst,
    wait_ready,
)
from tests.integration.cluster_helpers import lock_holders  # noqa: E402
from tests.servers import InfluxDB1, Mosquitto, PostgreSQL  # noqa: E402

START_TIMEOUT_S = 300.0  # 100,000 devices are read, checked and indexed before the broker is joined
SETTLE_S = 3.0  # after start-up, before RSS "at rest" is read
IDLE_S = 5.0  # then the CPU of the gateway at rest is read over this long
ALL_HEARD_RATE = 2000.0
CLUSTER_BUCKETS = 16  # msg/s of the pass that has every device report once


# ---- the process tree ------------------------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """`root` and every process below it (worker processes of `ingest.workers` included)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Gateways:
    """What `start_gateways` started: the processes and how long they took to be ready."""

    procs: list[subprocess.Popen[bytes]]
    startup_s: float
    roles: str  # what was started, for the report: "1 plain gateway", "4 ingest replicas", ...
    helper_pids: Callable[[], list[int]] = lambda: []  # servers whose CPU counts too (PostgreSQL)
    on_stop: Callable[[], None] = lambda: None

    def pids(self) -> list[int]:
        return [pid for p in self.procs for pid in tree_pids(p.pid)]

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())

    def rss_mb_each(self) -> list[float]:
        return [sum(rss_mb(pid) for pid in tree_pids(p.pid)) for p in self.procs]

    def cpu_s(self) -> float:
        return sum(cpu_s(pid) for pid in self.pids() + self.helper_pids())

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.on_stop()


def start_gateways(
    role_count: int, mq: Mosquitto, sink_url: str, devices: Path, run_dir: Path, name: str
) -> Gateways:
    """Start the gateways that share the ingest of one broker, and wait until each has joined it.

    `role_count` 0: one plain `gridgate gateway` (`--role all`, the baseline). N > 0: a private
    PostgreSQL, N `gridgate gateway --role ingest` replicas and one `--role dispatch` (gateway/cluster/),
    ready once every bucket has its owner; the CPU counted is theirs and PostgreSQL's.
    """
    env = dict(os.environ)
    t0 = time.time()
    if role_count == 0:
        cfg, api_port = gateway_config(run_dir, mq.port, sink_url, devices, name=name)
        log = open(run_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = launch_gateway(cfg, env, log)
        api = f"http://127.0.0.1:{api_port}"
        gateways = Gateways([proc], 0.0, "1 plain gateway")
        try:
            wait_ready(name, api, proc, timeout_s=START_TIMEOUT_S)
            assert healthy(api), f"{name}: not connected to the broker after {START_TIMEOUT_S:.0f} s"
        except BaseException:
            gateways.stop()
            raise
        gateways.startup_s = time.time() - t0 - 1.0  # wait_ready lets the subscription settle for 1 s
        return gateways
    pg = PostgreSQL(run_dir / "pg").start()
    url = pg.create_database("cluster")
    cluster = {"database_url": url, "buckets": CLUSTER_BUCKETS, "checkpoint_s": 0.5, "lease_check_s": 0.5}
    cfg, _ = gateway_config(
        run_dir, mq.port, sink_url, devices, name=name, cluster=cluster, tickets={"database_url": url}
    )
    roles = [(f"ingest{i}", "ingest") for i in range(role_count)] + [("dispatch", "dispatch")]
    procs = []
    for label, role in roles:
        log = open(run_dir / f"{name}-{label}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(launch_gateway(cfg, env, log, "--role", role))
    gateways = Gateways(
        procs, 0.0, f"{role_count} ingest replica{'s' if role_count > 1 else ''} + 1 dispatcher"
    )
    gateways.helper_pids = lambda: tree_pids(pg.pid) if pg.pid else []
    gateways.on_stop = pg.stop
    try:
        deadline = time.time() + START_TIMEOUT_S
        while not (
            len(lock_holders(url, "gridgate", "member")) == role_count
            and len(lock_holders(url, "gridgate", "bucket")) == CLUSTER_BUCKETS + 1
            and lock_holders(url, "gridgate", "leader")
        ):
            assert all(p.poll() is None for p in procs), f"{name}: a gateway exited early (see its log)"
            assert time.time() < deadline, f"{name}: buckets not all owned after {START_TIMEOUT_S:.0f} s"
            time.sleep(0.2)
        time.sleep(3.0)  # rebalancing settles (a replica that started first gives buckets back)
    except BaseException:
        gateways.stop()
        raise
    gateways.startup_s = time.time() - t0 - 3.0
    return gateways


def healthy(api: str) -> bool:
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(f"{api}/healthz", timeout=5) as r:
        return bool(json.load(r).get("mqtt_connected"))
    return False


# ---- the paced publisher -------------------------------------------------------------------------------


def paced_payload(device_type: str, ts_ms: int, seq: int) -> bytes:
    """A plausible uplink of each type, values that raise no alarm (the steady state being measured)."""
    values: dict[str, Any]
    if device_type == "manhole":
        values = {"tilt_deg": 1.5, "open": False, "battery_pct": 80}
    elif device_type == "bin":
        values = {"fill_pct": 30.0 + seq % 20, "temperature_c": 21.0, "battery_pct": 80}
    else:
        values = {"water_level_cm": 2.0, "battery_pct": 80, "voltage_v": 3.6}
    return json.dumps({"ts": ts_ms, "seq": seq, **values}).encode()


def publish_paced(port: int, devices: int, rate: float, seconds: float) -> int:
    """Publish at a steady `rate` for `seconds`, visiting all `devices` in a strided order (paho, QoS 1).

    The stride is a prime: unless `devices` is a multiple of it, `devices` messages visit each device once."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-scale-paced")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    n = int(rate * seconds)
    stride = 7919  # a prime: consecutive messages land on devices far apart, every device in turn
    start = time.time()
    base_ms = int(start * 1000)
    infos = []
    for k in range(n):
        delay = start + k / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        i = (k * stride) % devices
        dev, typ = device_name(i, devices)
        topic = f"gridgate/devices/{typ}/{dev}/up"
        infos.append(client.publish(topic, paced_payload(typ, base_ms + k, k), qos=1))
    for info in infos:
        info.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()
    return n


# ---- rows -----------------------------------------------------------------------------------------


@dataclass
class RssFigures:
    devices: int
    startup_s: float
    rss_rest_mb: float
    idle_cpu_pct: float  # of one core, at rest (housekeeping, silence checks, the API)
    rss_load_max_mb: float
    rss_load_end_mb: float
    rate: float  # msg/s offered
    sent: int
    stored: int
    cpu_us_per_msg: float
    rss_all_heard_mb: float  # once every device has reported (each holds its state): the steady state
    roles: str


@dataclass
class ReplicaFigures:
    replicas: int
    roles: str
    devices: int
    sent: int
    stored: int
    msgs_per_s: float
    cpu_s: float
    cpu_us_per_msg: float
    rss_mb_each: list[float] = field(default_factory=list)
    ratio_to_1: float = float("nan")
    cpu_ratio_to_1: float = float("nan")


def run_rss(devices: int, rate: float, seconds: float, tmp: Path) -> RssFigures:
    devices_file = tmp / "devices.yaml"
    devices_yaml(devices_file, devices, realistic=True)
    with Mosquitto(tmp) as mq, InfluxDB1(tmp) as influx:
        influx.create_database(DB)
        gw = start_gateways(1, mq, influx.url, devices_file, tmp, f"rss-{devices}")
        try:
            time.sleep(SETTLE_S)
            rest = gw.rss_mb()
            idle0 = gw.cpu_s()
            time.sleep(IDLE_S)
            idle_pct = (gw.cpu_s() - idle0) / IDLE_S * 100
            samples: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(1.0):
                    samples.append(gw.rss_mb())

            sampler = threading.Thread(target=sample, daemon=True)
            cpu0 = gw.cpu_s()
            sampler.start()
            sent = publish_paced(mq.port, devices, rate, seconds)
            counter = InfluxCounter(influx)
            stored = poll_until(counter, sent, time.time(), timeout=60, interval=0.5)[-1][1]
            cpu = gw.cpu_s() - cpu0
            done.set()
            sampler.join()
            end = gw.rss_mb()
            # the steady state of a city: every device has reported (one uplink each, no alarm)
            heard = publish_paced(mq.port, devices, ALL_HEARD_RATE, devices / ALL_HEARD_RATE)
            poll_until(counter, stored + heard, time.time(), timeout=300, interval=0.5)
            time.sleep(SETTLE_S)
            all_heard = gw.rss_mb()
        finally:
            gw.stop()
    return RssFigures(
        devices,
        round(gw.startup_s, 1),
        round(rest, 1),
        round(idle_pct, 1),
        round(max([*samples, end]), 1),
        round(end, 1),
        rate,
        sent,
        stored,
        round(cpu / max(1, stored) * 1e6, 1),
        round(all_heard, 1),
        gw.roles,
    )


def run_replicas(replicas: int, n: int, devices: int, tmp: Path) -> ReplicaFigures:
    devices_file = tmp / "devices.yaml"
    devices_yaml(devices_file, devices, realistic=True)
    with Mosquitto(tmp) as mq, InfluxDB1(tmp) as influx:
        influx.create_database(DB)
        gw = start_gateways(replicas, mq, influx.url, devices_file, tmp, f"replicas-{replicas}")
        try:
            cpu0 = gw.cpu_s()
            t_wall = time.time()
            times: dict[str, float] = {}

            def burst() -> None:
                times["t0"], times["t1"] = publish_burst(mq.port, n, devices)

            pub = threading.Thread(target=burst)
            pub.start()
            timeline = poll_until(InfluxCounter(influx), n, t_wall, timeout=600)
            pub.join()
            cpu = gw.cpu_s() - cpu0
            each = gw.rss_mb_each()
        finally:
            gw.stop()
    stored = timeline[-1][1]
    secs = timeline[-1][0] - times["t0"]
    return ReplicaFigures(
        replicas,
        gw.roles,
        devices,
        n,
        stored,
        round(stored / secs),
        round(cpu, 1),
        round(cpu / max(1, stored) * 1e6, 1),
        [round(x, 1) for x in each],
    )


# ---- report ----------------------------------------------------------------------------------------


def with_ratios(rows: list[ReplicaFigures]) -> list[ReplicaFigures]:
    """Each row's throughput and CPU per message against the plain gateway's (replicas 0), else the
    1-replica row, else the first."""
    base = next((r for r in rows if r.replicas == 0), next((r for r in rows if r.replicas == 1), None))
    base = base or (rows[0] if rows else None)
    for r in rows:
        assert base is not None
        r.ratio_to_1 = round(r.msgs_per_s / base.msgs_per_s, 2)
        r.cpu_ratio_to_1 = round(r.cpu_us_per_msg / base.cpu_us_per_msg, 2)
    return rows


def report(rss: list[RssFigures], replicas: list[ReplicaFigures]) -> str:
    lines = [f"capacity, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores"]
    if rss:
        lines += [
            "",
            "| devices | start-up s | RSS at rest MB | CPU at rest | RSS under load MB (max / end) | "
            "load msg/s | stored / sent | CPU us/msg | RSS, every device heard MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.devices:,} | {r.startup_s:.1f} | {r.rss_rest_mb:.0f} | {r.idle_cpu_pct:.0f} % | "
            f"{r.rss_load_max_mb:.0f} / {r.rss_load_end_mb:.0f} | {r.rate:,.0f} | "
            f"{r.stored:,} / {r.sent:,} | {r.cpu_us_per_msg:.0f} | {r.rss_all_heard_mb:.0f} |"
            for r in rss
        ]
    if replicas:
        lines += [
            "",
            "| replicas | started | devices | msg/s | x one process | CPU us/msg | CPU x one process | "
            "stored / sent | RSS MB each |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.replicas} | {r.roles} | {r.devices:,} | {r.msgs_per_s:,.0f} | {r.ratio_to_1:.2f} | "
            f"{r.cpu_us_per_msg:.0f} | {r.cpu_ratio_to_1:.2f} | {r.stored:,} / {r.sent:,} | "
            f"{' / '.join(f'{x:.0f}' for x in r.rss_mb_each)} |"
            for r in replicas
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="rss,replicas")
    ap.add_argument("--devices", default="10000,100000", help="registered devices of the rss row")
    ap.add_argument("--rate", type=float, default=1000.0, help="paced msg/s of the rss row")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the paced publisher runs")
    ap.add_argument("--replicas", default="0,1,2,4", help="0: one plain gateway (the baseline)")
    ap.add_argument("-n", type=int, default=100_000, help="messages of each replicas burst")
    ap.add_argument("--replica-devices", type=int, default=10_000, help="a multiple of 8")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    rows = args.rows.split(",")
    build_tools()
    rss: list[RssFigures] = []
    replicas: list[ReplicaFigures] = []
    if "rss" in rows:
        for devices in (int(x) for x in args.devices.split(",")):
            with tempfile.TemporaryDirectory(prefix=f"gg-scale-rss-{devices}-") as tmp:
                rss.append(run_rss(devices, args.rate, args.seconds, Path(tmp)))
            print(f"rss {devices}: {asdict(rss[-1])}", flush=True)
    if "replicas" in rows:
        for count in (int(x) for x in args.replicas.split(",")):
            with tempfile.TemporaryDirectory(prefix=f"gg-scale-replicas-{count}-") as tmp:
                replicas.append(run_replicas(count, args.n, args.replica_devices, Path(tmp)))
            r = replicas[-1]
            print(f"replicas {count} ({r.roles}): {r.msgs_per_s:,.0f} msg/s, {r.cpu_us_per_msg:.0f} us/msg")
    with_ratios(replicas)
    print("\n" + report(rss, replicas))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpu_cores": os.cpu_count(),
            "rss": [asdict(r) for r in rss],
            "replicas": [asdict(r) for r in replicas],
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
