"""Soak the edge worker: a looped clip for N minutes; report RSS at start and end and the size of
every per-track / per-event structure, sampled as it runs.

    .venv/bin/python bench/edge_soak.py --minutes 10 --clip var/demo/street.mp4 -c config/cameras.yaml
    .venv/bin/python bench/edge_soak.py --minutes 10 --synthetic      # no model: a blob detector

With `-c`, the first camera of that cameras.yaml is used (its url replaced by the clip, looped and
read as fast as the worker goes), with its zones and the configured model. `--synthetic` generates
a clip of a car parking, leaving and another passing, and uses a brightness-blob detector, so the
harness runs without weights. The broker is not needed: without one the events pile up in the disk
queue (on disk, not in memory), which is part of what a soak should show.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Resident set size of this process, MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def soak(worker: Any, minutes: float, sample_s: float = 5.0, warmup_s: float = 20.0) -> dict[str, Any]:
    worker.start()
    worker.run_in_thread()
    time.sleep(min(warmup_s, minutes * 60 / 4))
    rss_start = rss_mb()
    t0 = time.monotonic()
    end = t0 + minutes * 60
    peak: dict[str, int] = {}
    samples = []
    while time.monotonic() < end:
        sizes = worker.sizes()
        for k, v in sizes.items():
            peak[k] = max(peak.get(k, 0), v)
        samples.append({"t_s": round(time.monotonic() - t0), "rss_mb": round(rss_mb(), 1), **sizes})
        time.sleep(sample_s)
    stats = worker.stats()
    final = worker.sizes()
    rss_end = rss_mb()
    worker.stop()
    return {
        "minutes": minutes,
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_start, 1),
        "sizes_end": final,
        "sizes_peak": peak,
        "analysed": sum(c.analysed for c in stats.cameras),
        "queue_depth": stats.queue_depth,
        "samples": samples[:: max(1, len(samples) // 20)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("-c", "--config", type=Path, help="cameras.yaml (its first camera, zones and model)")
    ap.add_argument("--clip", type=Path, help="the clip to loop")
    ap.add_argument("--synthetic", action="store_true", help="generated clip + blob detector (no model)")
    ap.add_argument("--cameras", type=int, default=1, help="copies of the camera")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args()

    from edge.config import load_edge_config
    from edge.worker import EdgeWorker

    tmp = Path(tempfile.mkdtemp(prefix="gg-soak-"))
    if args.synthetic or args.config is None:
        from tests.integration.test_edge_worker import BlobDetector, edge_config, make_clip

        clip = args.clip or make_clip(tmp / "street.mp4")
        cfg = edge_config(tmp, None, clip, loop=True)
        detector: Any = BlobDetector()
    else:
        from edge.scheduler import load_models

        base = load_edge_config(args.config)
        if not base.cameras or args.clip is None:
            sys.exit("give --clip and a cameras.yaml with at least one camera")
        cfg = base.model_copy(update={"data_dir": tmp, "broker": base.broker.model_copy(update={"port": 1})})
        detector = load_models(cfg)
    cam = cfg.cameras[0]
    cam = cam.model_copy(
        update={
            "url": str(args.clip or cam.url),
            "capture": cam.capture.model_copy(update={"loop": True, "realtime": False}),
        }
    )
    cams = [cam.model_copy(update={"id": f"{cam.id}-{i}"}) for i in range(args.cameras)]
    cfg = cfg.model_copy(update={"cameras": cams})
    worker = EdgeWorker(cfg, detector)
    report = soak(worker, args.minutes)
    if args.json:
        print(json.dumps(report))
        return
    print(f"soak {report['minutes']} min, {args.cameras} camera(s), {report['analysed']} analyses")
    rss = (report["rss_mb_start"], report["rss_mb_end"], report["rss_growth_mb"])
    print(f"RSS start {rss[0]} MiB, end {rss[1]} MiB ({rss[2]:+} MiB)")
    print(f"per-track state at the end: {report['sizes_end']}")
    print(f"per-track state at its peak: {report['sizes_peak']}")
    print(f"disk queue depth (no broker): {report['queue_depth']}")


if __name__ == "__main__":
    main()
