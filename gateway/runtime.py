"""What every gateway process does at start-up, whatever its role: check the config, tune the GC."""

from __future__ import annotations

import gc

from devices.codecs import codec_names
from gridgate.config import ConfigError, GatewayConfig


def check_vendor_codecs(cfg: GatewayConfig) -> None:
    known = codec_names()
    problems = [
        f"vendor_topics[{i}].codec: unknown codec {vt.codec!r} (use one of {', '.join(known)})"
        for i, vt in enumerate(cfg.vendor_topics)
        if vt.codec is not None and vt.codec not in known
    ] + [
        f"lorawan.{vt.envelope}.codec: unknown codec {vt.codec!r} (use one of {', '.join(known)})"
        for vt in cfg.lorawan.vendor_topics()
        if vt.codec is not None and vt.codec not in known
    ]
    if problems:
        raise ConfigError("gateway config", problems)


def tune_gc() -> None:
    """Fewer cyclic-GC passes on the hot path: each message allocates a few short-lived objects.

    The objects made at start-up (registry, rules, models) are frozen out of every later scan,
    and generation 0 is collected every 50,000 allocations instead of 700: ~30 % less CPU per
    message at 10,000 messages/s (bench/ingest.py), for a few MB more memory.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
