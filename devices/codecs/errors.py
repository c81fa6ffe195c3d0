"""Why a payload was refused: one short stable code (a Prometheus label) plus a human detail."""

from __future__ import annotations

import traceback
from enum import StrEnum
from pathlib import Path


class RejectReason(StrEnum):
    """Every reason a payload can be rejected, by the codecs here or by the gateway."""

    not_json = "not_json"
    wrong_type = "wrong_type"
    missing_field = "missing_field"
    not_finite = "not_finite"
    ts_future = "ts_future"
    ts_past = "ts_past"
    negative_battery = "negative_battery"
    bad_length = "bad_length"
    bad_hex = "bad_hex"
    bad_payload = "bad_payload"
    bad_field_type = "bad_field_type"
    bad_field_name = "bad_field_name"
    too_deep = "too_deep"
    decoder_error = "decoder_error"  # a codec raised something else: a bug, or an input nobody foresaw
    bad_envelope = "bad_envelope"  # a network server's JSON envelope not in its documented shape
    server_codec_error = "server_codec_error"  # the network server's own payload codec failed (its log)
    # produced by the gateway, listed here so that all codes live in one place
    unknown_device = "unknown_device"
    unknown_topic = "unknown_topic"
    too_large = "too_large"
    handler_error = "handler_error"  # rules, sink or publishing raised while handling the message


class DecodeError(Exception):
    """A payload that cannot become readings; `reason` is stable, `detail` says what and where."""

    def __init__(self, reason: RejectReason | str, detail: str) -> None:
        self.reason = RejectReason(reason)
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}")


def describe_exception(exc: BaseException) -> str:
    """`Type: message (at file.py:line in function)`, the innermost frame: what broke and where."""
    try:
        text = str(exc)
    except Exception:  # an argument whose repr recurses without end, or raises
        text = "<message not printable>"
    if len(text) > 200:
        text = text[:197] + "..."
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(exc).__name__}: {text}{at}"
