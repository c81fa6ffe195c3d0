"""Plate reading on rendered plates no test tunes on: exact full-plate accuracy and wrong plates.

Samples come from `detectors.plates_render.plate_sample` over `EVAL_SEEDS` (blue, yellow and green
new-energy plates in the CJK font, on 3-D vehicles seen nose- or tail-on from a pole camera at
2.5-20 m, day and dusk). Each vehicle crop goes through the edge's `PlateReader` with the shipped
OCR engine (rapidocr-onnxruntime, PP-OCRv4), exactly as the edge worker reads it.

Figures, per plate colour, per plate-width bucket (<80, 80-120, >120 px) and per light:
  exact    the plate reported (confidence >= the bar, plate >= the least width) and every character right
  wrong    a plate reported that is not the plate (the costly error)
  none     nothing reported: no read fit the grammar, it scored under the bar, or the plate was small
and ms per read. A sweep of the bar shows the trade-off; `--bar` is the confidence a read must reach
and `--min-plate-width` the least plate width reported (defaults: the edge's `plates:` defaults).

usage: python bench/plate_eval.py [--samples 240] [--bar 0.9] [--min-plate-width 80] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detectors.plates_render import EVAL_SEEDS, plate_sample  # noqa: E402
from edge.config import PlatesConfig  # noqa: E402
from edge.plates import PlateReader, RapidOcrEngine  # noqa: E402
from gridgate.plates import PLATE_COLOURS  # noqa: E402

BUCKETS = ((0, 80, "<80 px"), (80, 120, "80-120 px"), (120, 10_000, ">120 px"))
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class Outcome:
    seed: int
    truth: str
    colour: str
    light: str
    width_px: float
    read: str | None
    confidence: float
    read_width_px: float  # the plate's width as the reader measured it
    ms: float

    @property
    def bucket(self) -> str:
        return next(name for lo, hi, name in BUCKETS if lo <= self.width_px < hi)


def rates(rows: list[Outcome], bar: float, min_width: float) -> dict[str, float | int]:
    """Shares of `rows` read exactly, read wrong and not reported, at confidence `bar` and the edge's
    least plate width `min_width` (a narrower plate is not reported)."""
    n = len(rows)
    reported = [
        r for r in rows if r.read is not None and r.confidence >= bar and r.read_width_px >= min_width
    ]
    exact = sum(r.read == r.truth for r in reported)
    wrong = len(reported) - exact
    return {
        "n": n,
        "exact": round(exact / n, 3) if n else 0.0,
        "wrong": round(wrong / n, 3) if n else 0.0,
        "none": round((n - len(reported)) / n, 3) if n else 0.0,
    }


def table(rows: list[Outcome], bar: float, min_width: float) -> list[str]:
    out = [f"| group | n | exact | wrong (conf >= {bar}) | none |", "|---|---|---|---|---|"]
    groups: list[tuple[str, list[Outcome]]] = [("all", rows)]
    groups += [(f"width {name}", [r for r in rows if r.bucket == name]) for _, _, name in BUCKETS]
    groups += [("plates >= 80 px", [r for r in rows if r.width_px >= 80])]
    for colour in PLATE_COLOURS:
        groups += [(f"{colour}", [r for r in rows if r.colour == colour])]
        groups += [(f"{colour} >= 80 px", [r for r in rows if r.colour == colour and r.width_px >= 80])]
    groups += [(f"{light}", [r for r in rows if r.light == light]) for light in ("day", "dusk")]
    for name, g in groups:
        s = rates(g, bar, min_width)
        out.append(f"| {name} | {s['n']} | {s['exact']:.1%} | {s['wrong']:.1%} | {s['none']:.1%} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=len(EVAL_SEEDS))
    ap.add_argument("--bar", type=float, default=PlatesConfig().min_confidence)
    ap.add_argument("--min-plate-width", type=float, default=PlatesConfig().min_plate_width_px)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    reader = PlateReader(RapidOcrEngine())
    rows: list[Outcome] = []
    for seed in list(EVAL_SEEDS)[: args.samples]:
        s = plate_sample(seed)
        t0 = time.perf_counter()
        got = reader.read(s.crop)
        ms = (time.perf_counter() - t0) * 1000.0
        rows.append(
            Outcome(
                seed,
                s.text,
                s.colour,
                s.light,
                round(s.plate_width_px, 1),
                got.text if got else None,
                got.confidence if got else 0.0,
                got.width_px if got else 0.0,
                round(ms, 1),
            )
        )
    floor = args.min_plate_width
    print(
        f"plates: {len(rows)} rendered samples (seeds {rows[0].seed}-{rows[-1].seed}), bar {args.bar}, "
        f"plates under {floor:.0f} px not reported"
    )
    print("\n".join(table(rows, args.bar, floor)))
    ms = sorted(r.ms for r in rows)
    print(f"\nms per read: p50 {ms[len(ms) // 2]:.0f}, p95 {ms[int(len(ms) * 0.95)]:.0f}, max {ms[-1]:.0f}")
    print("\nbar sweep (plates >= 80 px: exact / wrong; all: wrong; all, every width reported: wrong)")
    wide = [r for r in rows if r.width_px >= 80]
    for bar in SWEEP:
        a, b, c = rates(wide, bar, floor), rates(rows, bar, floor), rates(rows, bar, 0)
        print(f"  {bar:.2f}: {a['exact']:.1%} / {a['wrong']:.1%}; {b['wrong']:.1%}; {c['wrong']:.1%}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
