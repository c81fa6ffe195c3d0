"""Why a payload was refused: one short stable code (a Prometheus label) plus a human detail."""

from __future__ import annotations

from enum import StrEnum


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
    bad_payload = "bad_payload"
    # produced by the gateway, listed here so that all codes live in one place
    unknown_device = "unknown_device"
    unknown_topic = "unknown_topic"
    too_large = "too_large"


class DecodeError(Exception):
    """A payload that cannot become readings; `reason` is stable, `detail` says what and where."""

    def __init__(self, reason: RejectReason | str, detail: str) -> None:
        self.reason = RejectReason(reason)
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}")
