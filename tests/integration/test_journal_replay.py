"""The journal's replay in the gateway: what a killed gateway journaled is handled at the next start,
and the broker's redelivery of those messages (DUP set, their PUBACK never left) is not handled twice."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from gateway.service import Gateway
from tests.integration.spine_helpers import gateway_config
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

TOPIC = "gridgate/devices/water_gauge/WG-1/up"


def reading(ts: float, level: float) -> bytes:
    return json.dumps({"ts": ts, "water_level_cm": level}).encode()


def crash_after_journaling(gw: Gateway, messages: list[tuple[int, float, float]]) -> None:
    """What a gateway's network thread journals before a SIGKILL: (mid, ts, level) each."""
    for mid, ts, level in messages:
        gw.journal.append(ts, mid, TOPIC, reading(ts, level))
    gw.journal.flush()  # the PUBACKs would leave now; then the kill
    gw.store.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_journaled_messages_are_replayed_once_and_redeliveries_skipped(
    mosquitto: Mosquitto, tmp_path: Path, workers: int
) -> None:
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"}, ingest={"workers": workers})
    t0 = time.time() - 60
    # never started: what its network thread journaled, it never handled
    crash_after_journaling(Gateway(cfg), [(1, t0 + 1, 3.0), (2, t0 + 2, 20.0), (3, t0 + 3, 21.0)])

    with Gateway(cfg) as gw:
        assert gw.replayed == 3
        assert gw.flush(20)
        assert gw.metrics.messages_in == 3 and gw.metrics.readings == 3
        [alarm] = [e for e in gw.engine.active_events("WG-1") if e.kind == "water_high"]
        # the broker sends mid 3 again (its PUBACK never reached it): journaled already, skipped
        gw._on_message(TOPIC, reading(t0 + 3, 21.0), 3, True)
        assert gw.redeliveries_skipped == 1
        # a DUP the journal never saw is a message like any other
        gw._on_message(TOPIC, reading(t0 + 4, 22.0), 9, True)
        assert gw.flush(20)
        assert gw.metrics.messages_in == 4
    # a clean stop checkpoints everything: the next start replays nothing, the alarm keeps its id
    with Gateway(cfg) as gw:
        assert gw.replayed == 0
        assert [e.id for e in gw.engine.active_events("WG-1") if e.kind == "water_high"] == [alarm.id]


@pytest.mark.parametrize(("before", "after"), [(2, 2), (0, 2), (2, 0), (2, 3)])
def test_a_crash_then_another_worker_count_still_handles_everything_once(
    mosquitto: Mosquitto, tmp_path: Path, before: int, after: int
) -> None:
    t0 = time.time() - 60
    first = gateway_config(tmp_path, mosquitto, {"api": "none"}, ingest={"workers": before})
    with Gateway(first) as gw:
        gw._on_message(TOPIC, reading(t0, 3.0), 1, False)
        assert gw.flush(20)
    second = gateway_config(tmp_path, mosquitto, {"api": "none"}, ingest={"workers": after})
    crash_after_journaling(Gateway(second), [(2, t0 + 1, 4.0), (3, t0 + 2, 5.0)])
    with Gateway(second) as gw:
        assert gw.replayed == 2
        assert gw.flush(20)
        assert gw.metrics.messages_in == 2 and gw.metrics.readings == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_a_journal_deleted_by_hand_never_hides_new_messages(
    mosquitto: Mosquitto, tmp_path: Path, workers: int
) -> None:
    """state.sqlite says messages up to seq N are applied; a fresh journal must not number from 1."""
    cfg = gateway_config(tmp_path, mosquitto, {"api": "none"}, ingest={"workers": workers})
    t0 = time.time() - 60
    with Gateway(cfg) as gw:
        for mid in range(1, 6):
            gw._on_message(TOPIC, reading(t0 + mid, 3.0), mid, False)
        assert gw.flush(20)
    shutil.rmtree(cfg.storage.journal_dir)
    with Gateway(cfg) as gw:
        gw._on_message(TOPIC, reading(t0 + 10, 4.0), 1, False)
        assert gw.flush(20)
        assert gw.metrics.messages_in == 1 and gw.metrics.readings == 1
