"""Cause mutes symptoms, pure: the causes index and the per-event decision on a fake clock."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.hygiene import CauseIndex, HygieneDesk
from gridgate.hygiene_config import DEFAULT_INHIBIT, HygieneConfig
from gridgate.models import Event, EventClass, EventState, utc

T0 = 1_800_000_000.0
RECOVERY_S = 120.0
BEHIND = {"device:MH-1": "EB-1", "device:MH-2": "EB-1", "device:MH-3": "LORA-7"}


def ev(kind: str, source: str, t: float, *, fault: bool = False, eid: str | None = None) -> Event:
    return Event(
        id=eid or f"{kind}|{source}|{t:g}",
        kind=kind,
        event_class=EventClass.fault if fault else EventClass.alarm,
        source=source,
        started_at=utc(t),
        updated_at=utc(t),
    )


def cleared(e: Event, t: float) -> Event:
    return e.model_copy(update={"state": EventState.cleared, "ended_at": utc(t), "updated_at": utc(t)})


def desk(window_for: Callable[[Event, float], str | None] = lambda e, now: None) -> HygieneDesk:
    causes = CauseIndex(DEFAULT_INHIBIT, RECOVERY_S, lambda e: BEHIND.get(e.source))
    return HygieneDesk(causes, window_for)


def test_an_offline_device_mutes_its_value_alarm_not_its_life_safety_alarm() -> None:
    d = desk()
    off = ev("device_offline", "device:WG-1", T0, fault=True)
    [o] = d.decide([off], T0)
    assert o.suppressed_by is None  # the cause itself is live: the maintenance team gets it
    water, gas = ev("water_high", "device:WG-1", T0 + 5), ev("gas_high", "device:WG-1", T0 + 5)
    w, g = d.decide([water, gas], T0 + 5)
    assert w.suppressed_by == off.id and water.suppressed_by is None  # a copy: the engine's event untouched
    assert g.suppressed_by is None  # methane is never muted by a fault
    # another device's water is not this device's symptom
    [other] = d.decide([ev("water_high", "device:WG-2", T0 + 6)], T0 + 6)
    assert other.suppressed_by is None
    # the symptom's update and clear keep the decision
    [upd] = d.decide([water.model_copy(update={"value": 30.0})], T0 + 7)
    assert upd.suppressed_by == off.id
    [clr] = d.decide([cleared(water, T0 + 8)], T0 + 8)
    assert clr.suppressed_by == off.id and d.muted_now() == []


def test_a_cause_in_the_same_batch_mutes_whatever_its_position() -> None:
    d = desk()
    water = ev("water_high", "device:WG-1", T0)
    fault = ev("sensor_fault", "device:WG-1", T0, fault=True)
    w, f = d.decide([water, fault], T0)  # the engine raises the threshold rule before the fault
    assert (w.suppressed_by, f.suppressed_by) == (fault.id, None)


def test_a_symptom_still_active_when_its_cause_has_recovered_becomes_live() -> None:
    d = desk()
    off = ev("device_offline", "device:WG-1", T0, fault=True)
    d.decide([off], T0)
    # the first uplink clears the offline and raises water in one batch: muted by the recovering cause
    water = ev("water_high", "device:WG-1", T0 + 60)
    _, w = d.decide([cleared(off, T0 + 60), water], T0 + 60)
    assert w.suppressed_by == off.id
    assert d.release(T0 + 60 + RECOVERY_S - 1) == []
    [live] = d.release(T0 + 60 + RECOVERY_S)
    assert live.id == water.id and live.suppressed_by is None and live.updated_at == utc(T0 + 60 + RECOVERY_S)
    assert len(d.causes) == 0  # the recovered cause is forgotten
    # from now on the event is live: its clear goes to the ticket desk
    [clr] = d.decide([cleared(water, T0 + 500)], T0 + 500)
    assert clr.suppressed_by is None


def test_a_cause_raised_after_its_symptom_does_not_mute_it() -> None:
    d = desk()
    water = ev("water_high", "device:WG-1", T0)
    d.decide([water], T0)
    d.decide([ev("device_offline", "device:WG-1", T0 + 10, fault=True)], T0 + 10)
    [upd] = d.decide([water.model_copy(update={"value": 40.0})], T0 + 20)
    assert upd.suppressed_by is None  # its ticket stays open and is updated


def test_an_offline_edge_box_mutes_the_offline_of_every_device_behind_it() -> None:
    d = desk()
    edge = ev("device_offline", "edge:EB-1", T0, fault=True)
    d.decide([edge], T0)
    out = d.decide(
        [
            ev("device_offline", "device:MH-1", T0 + 30, fault=True),
            ev("device_offline", "device:MH-2", T0 + 31, fault=True),
            ev("device_offline", "device:MH-3", T0 + 32, fault=True),  # behind another gateway
            ev("battery_low", "device:MH-1", T0 + 33, fault=True),  # not a symptom of the uplink
        ],
        T0 + 33,
    )
    assert [e.suppressed_by for e in out] == [edge.id, edge.id, None, None]
    # a LoRa gateway that is itself a device mutes what sits behind it the same way
    lora = ev("device_offline", "device:LORA-7", T0 + 40, fault=True)
    d.decide([lora], T0 + 40)
    [mh3] = d.decide([ev("device_offline", "device:MH-3", T0 + 41, fault=True, eid="again")], T0 + 41)
    assert mh3.suppressed_by == lora.id


def test_a_lost_or_moved_camera_mutes_its_video_events() -> None:
    d = desk()
    lost = ev("camera_lost", "camera:cam-1", T0, fault=True)
    moved = ev("camera_moved", "camera:cam-2", T0, fault=True)
    d.decide([lost, moved], T0)
    out = d.decide(
        [
            ev("illegal_parking", "camera:cam-1", T0 + 1),
            ev("ponding", "camera:cam-2", T0 + 1),
            ev("bin_overflow", "camera:cam-3", T0 + 1),
        ],
        T0 + 1,
    )
    assert [e.suppressed_by for e in out] == [lost.id, moved.id, None]


def test_the_oldest_cause_is_named_and_the_next_takes_over_when_it_recovers() -> None:
    d = desk()
    off = ev("device_offline", "device:WG-1", T0, fault=True)
    tamper = ev("tamper", "device:WG-1", T0 + 5, fault=True)
    d.decide([tamper, off], T0 + 5)
    [w] = d.decide([ev("water_high", "device:WG-1", T0 + 6)], T0 + 6)
    assert w.suppressed_by == off.id
    d.decide([cleared(off, T0 + 10)], T0 + 10)
    [still] = d.release(T0 + 10 + RECOVERY_S)
    assert still.suppressed_by == tamper.id  # stored again, now naming the cause that still holds


def test_a_maintenance_window_mutes_and_its_end_releases() -> None:
    open_until = T0 + 3600

    def window_for(e: Event, now: float) -> str | None:
        return "mw-1" if e.source == "device:BIN-1" and now < open_until else None

    d = desk(window_for)
    [b] = d.decide([ev("bin_full", "device:BIN-1", T0)], T0)
    assert b.suppressed_by == "maintenance:mw-1"
    assert d.release(T0 + 100) == []
    [live] = d.release(open_until)
    assert live.suppressed_by is None


def test_rebuilt_from_the_store_after_a_restart() -> None:
    off = ev("device_offline", "device:WG-1", T0, fault=True)
    water = ev("water_high", "device:WG-1", T0 + 5).model_copy(update={"suppressed_by": off.id})
    camera = ev("camera_moved", "camera:cam-1", T0, fault=True)
    d = desk()
    d.rebuild([off, water, cleared(camera, T0 + 100)])
    [again] = d.decide([water.model_copy(update={"suppressed_by": None, "value": 33.0})], T0 + 200)
    assert again.suppressed_by == off.id  # the engine's copy knows nothing of hygiene
    [park] = d.decide([ev("illegal_parking", "camera:cam-1", T0 + 200)], T0 + 200)
    assert park.suppressed_by == camera.id  # recovering since T0 + 100 (ended_at)
    [n] = d.decide([ev("water_high", "device:WG-9", T0 + 200)], T0 + 200)
    assert n.suppressed_by is None


def test_rules_are_configurable() -> None:
    cfg = HygieneConfig.model_validate(
        {"inhibit": [{"name": "tamper_mutes_open", "causes": ["tamper"], "symptoms": ["manhole_open"]}]}
    )
    d = HygieneDesk(CauseIndex(cfg.inhibit, 0.0, lambda e: None), lambda e, now: None)
    d.decide([ev("tamper", "device:MH-1", T0, fault=True)], T0)
    opened, water = d.decide([ev("manhole_open", "device:MH-1", T0), ev("water_high", "device:MH-1", T0)], T0)
    assert opened.suppressed_by is not None and water.suppressed_by is None


KINDS = ["device_offline", "tamper", "water_high", "bin_full", "gas_high", "camera_moved", "ponding"]
SOURCES = ["device:MH-1", "device:MH-2", "edge:EB-1", "camera:cam-1"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(KINDS), st.sampled_from(SOURCES), st.booleans(), st.floats(0, 600)),
        max_size=40,
    )
)
def test_never_drops_never_invents_and_every_reason_is_a_known_event(
    steps: list[tuple[str, str, bool, float]],
) -> None:
    """Whatever arrives in whatever order: one event out per event in, same ids, and a muted one
    names an event seen before it (or in its batch); muted counts never go negative."""
    d = desk()
    active: dict[tuple[str, str], Event] = {}
    seen: set[str] = set()
    now = T0
    for kind, source, clear, dt in steps:
        now += dt
        key = (kind, source)
        if clear and key in active:
            batch = [cleared(active.pop(key), now)]
        elif key not in active:
            active[key] = ev(kind, source, now, fault=kind in ("device_offline", "tamper", "camera_moved"))
            batch = [active[key]]
        else:
            continue
        seen.update(e.id for e in batch)
        out = d.decide(batch, now)
        assert [e.id for e in out] == [e.id for e in batch]
        assert [e.state for e in out] == [e.state for e in batch]
        for e in out + d.release(now):
            assert e.suppressed_by is None or e.suppressed_by in seen
            assert e.suppressed_by != e.id
    assert {e.id for e in d.muted_now()} <= {e.id for e in active.values()}
