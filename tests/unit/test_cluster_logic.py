"""The pure parts of the cluster: how replicas share buckets, which topics a bucket takes, which
redelivered event changes the lead dispatcher drops."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.types import Device
from gateway.cluster.buckets import bucket_of, device_filters, vendor_filter
from gateway.cluster.changes import ChangeLog
from gateway.cluster.leases import rebalance
from gridgate.config import LoRaWANConfig, VendorTopic
from gridgate.models import Event, EventClass, EventState, Severity
from gridgate.topics import Topics


@settings(max_examples=200, deadline=None)
@given(units=st.integers(1, 40), members=st.integers(1, 8), seed=st.integers(0, 1000))
def test_replicas_that_follow_the_plan_settle_on_every_unit_owned_once(
    units: int, members: int, seed: int
) -> None:
    """Rounds of rebalance by each replica in turn (the lock decides a race): every unit ends owned by
    exactly one replica, each holding at most its rounded-up share, and nothing moves after that."""
    rng = random.Random(seed)
    owned: list[set[int]] = [set() for _ in range(members)]
    owned[0] = set(range(units))  # the first replica started alone and took everything
    for _ in range(4 * members + 4):
        for me in rng.sample(range(members), members):
            taken = set().union(*owned)
            plan = rebalance(owned[me], set(range(units)) - taken, units, members, rng)
            owned[me] -= set(plan.give)
            owned[me] |= set(plan.take) - set().union(*owned)  # a lock already held is not granted
    share = -(-units // members)
    assert set().union(*owned) == set(range(units))
    assert sum(len(o) for o in owned) == units
    assert all(len(o) <= share for o in owned)
    for me in range(members):
        taken = set().union(*owned)
        assert rebalance(owned[me], set(range(units)) - taken, units, members, rng).give == []


def test_a_dead_replicas_units_are_taken_by_the_others() -> None:
    rng = random.Random(1)
    survivors = [{0, 1, 2}, {3, 4, 5}]  # the third (6, 7, 8) died: its locks went with it
    for me in (0, 1, 0, 1):
        taken = set().union(*survivors)
        plan = rebalance(survivors[me], set(range(9)) - taken, 9, 2, rng)
        survivors[me] |= set(plan.take) - set().union(*survivors)
    assert set().union(*survivors) == set(range(9))


def manhole(**extra: object) -> Device:
    return Device.model_validate({"id": "MH-7", "type": "manhole", "lat": 30.2, "lon": 120.1, **extra})


def test_a_bucket_subscribes_to_its_devices_own_topics_never_a_wildcard_over_others() -> None:
    vendor = [
        VendorTopic(pattern="acme/covers/{device_id}/data", codec="manhole_binary"),
        VendorTopic(pattern="acme/bins/{device_id}/data", device_type="bin"),
        *LoRaWANConfig.model_validate({"chirpstack": {"enabled": True}}).vendor_topics(),
    ]
    filters = device_filters(manhole(dev_eui="0011223344556677"), Topics("gg"), vendor)
    assert filters == [
        "gg/devices/manhole/MH-7/up",
        "gg/devices/manhole/MH-7/status",
        "acme/covers/MH-7/data",
        "application/+/device/0011223344556677/event/+",
    ]


def test_a_platform_id_falls_back_to_the_device_id_as_the_pipeline_does() -> None:
    tts = LoRaWANConfig.model_validate({"tts": {"enabled": True}}).vendor_topics()[0]
    assert vendor_filter(tts, manhole()) == "v3/+/devices/MH-7/up"
    assert vendor_filter(tts, manhole(lorawan_device_id="cover-7")) == "v3/+/devices/cover-7/up"


def test_buckets_are_stable_and_spread() -> None:
    counts = [0] * 16
    for i in range(16_000):
        counts[bucket_of(f"dev-{i}", 16)] += 1
    assert bucket_of("MH-1", 16) == bucket_of("MH-1", 16)
    assert min(counts) > 800 and max(counts) < 1200


T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def change(event_id: str, minutes: int, state: EventState = EventState.active) -> Event:
    at = T0 + timedelta(minutes=minutes)
    return Event(
        id=event_id,
        kind="manhole_tilt",
        event_class=EventClass.alarm,
        severity=Severity.major,
        state=state,
        source="device:MH-7",
        started_at=T0,
        updated_at=at if minutes and state is EventState.active else None,
        ended_at=at if state is EventState.cleared else None,
    )


def test_redelivered_and_stale_changes_are_dropped_new_ones_kept() -> None:
    log = ChangeLog()
    stored: dict[str, datetime] = {}
    first = log.fresh([change("a", 0), change("a", 5), change("b", 0)], lambda ids: stored)
    assert [(e.id, e.updated_at) for e in first] == [
        ("a", None),
        ("a", T0 + timedelta(minutes=5)),
        ("b", None),
    ]
    assert log.fresh([change("a", 5), change("a", 0)], lambda ids: stored) == []  # copies
    # a new leader remembers nothing, but the event log says `c` already ended at minute 9
    fresh_log = ChangeLog()
    stored = {"c": T0 + timedelta(minutes=9)}
    kept = fresh_log.fresh(
        [change("c", 0), change("c", 9, EventState.cleared), change("c", 10)], lambda ids: stored
    )
    assert [e.updated_at for e in kept] == [T0 + timedelta(minutes=10)]
    assert fresh_log.dropped == 2


def test_the_memory_of_changes_is_bounded() -> None:
    log = ChangeLog(remember=10)
    log.fresh([change(f"e{i}", 0) for i in range(100)], lambda ids: {})
    assert len(log._seen) == 10
