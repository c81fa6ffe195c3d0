"""The ingest journal: append, replay from a mark, torn tails, segment release, redelivery keys."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import journal as journal_mod
from gateway.journal import Journal, redelivery_key


def test_what_was_flushed_is_replayed_after_a_mark(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    for i in range(10):
        j.append(1000.0 + i, i + 1, f"gridgate/devices/bin/B-{i}/up", b"x" * i)
    j.flush()
    j.append(2000.0, 99, "t", b"never flushed")  # buffered only: its PUBACK never left either
    again = Journal(tmp_path)
    assert again.last_seq == 10
    recs = list(again.records_after(7))
    assert [(r.seq, r.received_at, r.mid, r.topic, r.payload) for r in recs] == [
        (8, 1007.0, 8, "gridgate/devices/bin/B-7/up", b"x" * 7),
        (9, 1008.0, 9, "gridgate/devices/bin/B-8/up", b"x" * 8),
        (10, 1009.0, 10, "gridgate/devices/bin/B-9/up", b"x" * 9),
    ]
    # numbering goes on after a restart, in a new segment
    assert again.append(3000.0, 1, "t", b"") == 11


def test_a_torn_tail_ends_the_replay(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    for i in range(3):
        j.append(1.0, i, "t", b"payload")
    j.flush()
    j.close()
    [seg] = list(tmp_path.glob("*.log"))
    seg.write_bytes(seg.read_bytes()[:-3])  # a power cut mid-write
    assert [r.seq for r in Journal(tmp_path).records_after(0)] == [1, 2]


def test_release_keeps_the_newest_segment_and_what_is_not_committed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(journal_mod, "SEGMENT_BYTES", 100)
    j = Journal(tmp_path)
    for i in range(30):
        j.append(1.0, i, "t", b"p" * 50)
        j.flush()
        j.release(0)  # rolls a new segment once the current one is over 100 bytes
    assert len(list(tmp_path.glob("*.log"))) > 5
    j.release(20)
    assert [r.seq for r in j.records_after(20)] == list(range(21, 31))
    assert min(int(p.stem) for p in tmp_path.glob("*.log")) <= 21
    j.release(30)
    assert len(list(tmp_path.glob("*.log"))) == 1


def test_redelivery_keys_are_the_tail(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.append(1.0, 7, "a/b", b"one")
    j.append(1.0, 8, "a/b", b"two")
    j.flush()
    keys = Journal(tmp_path).redelivery_keys()
    assert redelivery_key(7, "a/b", b"one") in keys and redelivery_key(7, "a/b", b"two") not in keys


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=30), st.binary(max_size=300), st.integers(0, 65535)), max_size=40))
def test_any_message_comes_back_as_it_went_in(tmp_path_factory, messages) -> None:
    folder = tmp_path_factory.mktemp("j")
    j = Journal(folder)
    for topic, payload, mid in messages:
        j.append(12.5, mid, topic, payload)
    j.flush()
    back = [(r.topic, r.payload, r.mid) for r in Journal(folder).records_after(0)]
    assert back == messages
