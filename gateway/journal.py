"""The ingest journal: every MQTT message is on disk before the broker hears our PUBACK.

A QoS 1 message is acknowledged by the gateway's network thread as soon as its batch is read, long
before its points reach InfluxDB and its rule state reaches `state.sqlite`. So each message is
appended here first (one `write()` per batch of PUBACKs: `BufferedSocket` calls `flush()` before it
sends them), and replayed at start-up from the last checkpoint: the point where every earlier
message's points were durable (written or spooled), its events stored and its devices' rule state
saved. A SIGKILL therefore loses nothing the broker was told we have.

Messages the broker sent again because our PUBACK never left (MQTT's DUP flag) are recognised by
(packet id, topic, payload CRC) against the journal's tail and skipped, so a crash does not apply
them twice.

Format: segment files `journal/<first seq:016d>.log` of records
`<u32 length><u32 crc32><u64 seq><f64 received_at><u16 mid><u16 topic length> topic payload`
(length and CRC cover everything after the CRC). A torn record at the tail (power loss mid-write)
ends the replay of that segment. Without `fsync` (the default) the guarantee covers a crashed or
killed process, not a power cut: `storage.journal_fsync: true` adds one fsync per write.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gridgate.journal")

_HEAD = struct.Struct("<II")  # length, crc
_BODY = struct.Struct("<QdHH")  # seq, received_at, mid, topic length
SEGMENT_BYTES = 64 * 1024 * 1024  # a new segment once the current one is this large (at a checkpoint)
DEDUP_TAIL = 20_000  # records of the tail checked against redelivered (DUP) messages


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    received_at: float
    mid: int
    topic: str
    payload: bytes


def redelivery_key(mid: int, topic: str, payload: bytes) -> tuple[int, str, int]:
    return (mid, topic, zlib.crc32(payload))


class Journal:
    """Append-only, segmented, replayable log of received messages. Thread-safe."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._buf: list[bytes] = []
        self._fd: int | None = None
        self._segment: Path | None = None
        self._segment_bytes = 0
        self.last_seq = 0  # the newest seq handed out
        self.flushed_seq = 0  # every record up to this one is in the file
        for path in self._segments():
            for rec in self._read(path):
                self.last_seq = rec.seq
        self.flushed_seq = self.last_seq

    def advance_to(self, seq: int) -> None:
        """Number the next message after `seq` at least: saved state that accounts for messages up to
        `seq` must never make a new message look already handled (a journal folder deleted by hand)."""
        with self._lock:
            if seq > self.last_seq:
                self.last_seq = self.flushed_seq = seq

    # ---- writing ------------------------------------------------------------------------------
    def append(self, received_at: float, mid: int, topic: str, payload: bytes) -> int:
        """Buffer one message; it is written at the next `flush()`. Returns its sequence number."""
        t = topic.encode("utf-8", "surrogateescape")
        with self._lock:
            self.last_seq += 1
            seq = self.last_seq
            body = _BODY.pack(seq, received_at, mid & 0xFFFF, len(t)) + t + payload
            self._buf.append(_HEAD.pack(len(body), zlib.crc32(body)) + body)
        return seq

    def flush(self) -> None:
        """Write what is buffered (before any PUBACK for it leaves)."""
        with self._lock:
            if not self._buf:
                return
            data = b"".join(self._buf)
            self._buf.clear()
            if self._fd is None:
                self._open(self.flushed_seq + 1)
            assert self._fd is not None
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self.fsync:
                os.fsync(self._fd)
            self._segment_bytes += len(data)
            self.flushed_seq = self.last_seq

    def _open(self, first_seq: int) -> None:
        self._segment = self.dir / f"{first_seq:016d}.log"
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._segment_bytes = os.fstat(self._fd).st_size

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # ---- checkpoints --------------------------------------------------------------------------
    def release(self, committed_seq: int) -> int:
        """Delete segments wholly at or before `committed_seq`; roll the current one if it is large.

        Returns the bytes still on disk. The newest segment is always kept: its tail recognises
        messages the broker redelivers after a crash.
        """
        with self._lock:
            if self._fd is not None and self._segment_bytes >= SEGMENT_BYTES:
                os.close(self._fd)
                self._fd = None  # the next flush opens a segment starting at flushed_seq + 1
            segments = self._segments()
            firsts = [int(p.stem) for p in segments]
            for i, path in enumerate(segments[:-1]):
                if firsts[i + 1] - 1 <= committed_seq and path != self._segment:
                    path.unlink(missing_ok=True)
            return sum(p.stat().st_size for p in self._segments())

    # ---- reading ------------------------------------------------------------------------------
    def _segments(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("*.log") if p.stem.isdigit())

    def _read(self, path: Path) -> Iterator[Record]:
        data = path.read_bytes()
        pos, end = 0, len(data)
        while pos + _HEAD.size <= end:
            length, crc = _HEAD.unpack_from(data, pos)
            body = data[pos + _HEAD.size : pos + _HEAD.size + length]
            if len(body) < length or zlib.crc32(body) != crc or length < _BODY.size:
                log.warning(
                    "event=journal_torn_record segment=%s offset=%d fix='none needed: the record was "
                    "never acknowledged'",
                    path.name,
                    pos,
                )
                return
            seq, received_at, mid, tlen = _BODY.unpack_from(body)
            topic = body[_BODY.size : _BODY.size + tlen].decode("utf-8", "surrogateescape")
            yield Record(seq, received_at, mid, topic, body[_BODY.size + tlen :])
            pos += _HEAD.size + length

    def records_after(self, seq: int) -> Iterator[Record]:
        """Every record with a sequence number above `seq`, in order (the replay after a crash)."""
        segments = self._segments()
        firsts = [int(p.stem) for p in segments]
        for i, path in enumerate(segments):
            if i + 1 < len(segments) and firsts[i + 1] - 1 <= seq:
                continue
            for rec in self._read(path):
                if rec.seq > seq:
                    yield rec

    def redelivery_keys(self) -> set[tuple[int, str, int]]:
        """(mid, topic, crc) of the newest records: what the broker may send again with DUP set."""
        keys: list[tuple[int, str, int]] = []
        for rec in self.records_after(max(0, self.last_seq - DEDUP_TAIL)):
            keys.append(redelivery_key(rec.mid, rec.topic, rec.payload))
        return set(keys)
