"""One MQTT message in, its effects out: decode -> device rules -> points, events, dead letters.

The pipeline does no network I/O itself: it hands points to the sink runner, publications to an
`Outbox` (the MQTT client) and changed events to `on_events` (the gateway, which decides alert
hygiene and calls `publish`), so it is tested without a broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

from devices.codecs import DecodeError, decode
from devices.codecs.errors import RejectReason, describe_exception
from devices.engine import DeviceEngine
from devices.registry import Device, DeviceRegistry
from gateway.grids import GridIndex, GridMatch
from gateway.metrics import GatewayMetrics
from gateway.platforms.lorawan import Envelope, IgnoreReason, prefers_server_decoded, readings_of, unwrap
from gridgate.config import GatewayConfig
from gridgate.models import (
    Event,
    EventClass,
    Location,
    Point,
    Reading,
    Rejection,
    ns_from_datetime,
    ns_from_s,
)
from gridgate.topics import Topics

log = logging.getLogger("gridgate.pipeline")

DEAD_LETTER_HEAD_BYTES = 256


class Outbox(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...


class PointSink(Protocol):
    def add(self, point: Point) -> None: ...


@dataclass(frozen=True, slots=True)
class Route:
    device_id: str
    channel: str  # "up" or "status"
    codec: str | None  # None: the device's own codec
    device_type: str | None  # what the topic claims, checked against the registry
    envelope: Envelope | None = None  # a LoRaWAN network server's JSON around the payload
    event: str = "up"  # the network server's event (its topic's `{event}` or last segment)
    named_by: tuple[str, str] | None = None  # a platform id the topic named the device by, as given


def dead_letter_body(rej: Rejection, received_at: float) -> bytes:
    """JSON for the dead-letter topic: topic, reason, detail and the first bytes of the payload."""
    head = rej.payload[:DEAD_LETTER_HEAD_BYTES]
    try:
        text, encoding = head.decode("utf-8"), "utf-8"
        if not all(c.isprintable() or c in "\r\n\t" for c in text):
            raise UnicodeDecodeError("utf-8", head, 0, len(head), "control characters")
    except UnicodeDecodeError:  # binary (or cut inside a character): hex reads better
        text, encoding = head.hex(), "hex"
    return orjson.dumps(
        {
            "topic": rej.topic,
            "reason": rej.reason,
            "detail": rej.detail,
            "device_id": rej.device_id,
            "received_at": received_at,
            "payload_size": len(rej.payload),
            "payload_head": text,
            "payload_head_encoding": encoding,
        }
    )


class LogThrottle:
    """At most one log line per key every `every_s` seconds, with the count held back in between."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def due(self, key: str) -> int | None:
        """None: stay quiet; else log now, with this many lines held back since the last one."""
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


class RejectLog:
    """Logs rejections at most once per reason every `every_s` seconds, with the count in between."""

    def __init__(self, every_s: float = 10.0) -> None:
        self._throttle = LogThrottle(every_s)

    def __call__(self, rej: Rejection) -> None:
        more = self._throttle.due(rej.reason)
        if more is None:
            return
        log.warning(
            "event=payload_rejected reason=%s topic=%s device=%s detail=%r suppressed_since_last=%d",
            rej.reason,
            rej.topic,
            rej.device_id,
            rej.detail,
            more,
        )


class Pipeline:
    def __init__(
        self,
        cfg: GatewayConfig,
        registry: DeviceRegistry,
        engine: DeviceEngine,
        grids: GridIndex,
        sink: PointSink,
        outbox: Outbox,
        on_events: Callable[[list[Event]], None],
        metrics: GatewayMetrics,
    ) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.broker.topic_prefix)
        self.registry = registry
        self.engine = engine
        self.grids = grids
        self.sink = sink
        self.outbox = outbox
        self.on_events = on_events
        self.metrics = metrics
        self.max_payload = cfg.limits.max_payload_bytes
        self._vendor = [(vt.compile(), vt) for vt in cfg.all_vendor_topics()]
        self._grid_cache: dict[str, GridMatch] = {}
        self._tags_cache: dict[str, dict[str, str]] = {}
        # the engine is driven by the MQTT thread and by the silence checker
        self.lock = threading.Lock()
        self._log_reject = RejectLog()

    # routing -----------------------------------------------------------------------------
    def route(self, topic: str) -> Route | None:
        dt = self.topics.parse_device(topic)
        if dt is not None:
            return Route(dt.device_id, dt.channel, None, dt.device_type)
        for rx, vt in self._vendor:
            m = rx.match(topic)
            if m:
                scheme = vt.device_key
                value = m.group(scheme)
                event = m.groupdict().get("event") or topic.rsplit("/", 1)[-1]
                if scheme == "device_id":
                    return Route(value, "up", vt.codec, vt.device_type, vt.envelope, event)
                # a platform id, or (falling back) gridgate's own id: one dict lookup, never the body
                device = self.registry.lookup(scheme, value)
                device_id = device.id if device is not None else value
                return Route(device_id, "up", vt.codec, vt.device_type, vt.envelope, event, (scheme, value))
        return None

    def grid_of(self, device: Device) -> GridMatch:
        match = self._grid_cache.get(device.id)
        if match is None:
            match = self.grids.locate(device.lat, device.lon)
            self._grid_cache[device.id] = match
        return match

    # the hot path ------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, now: float) -> None:
        """Process one message; never raises. Every message ends counted once, as decoded (status
        messages included), as rejected or (a network server's message holding no telemetry) as
        ignored: `messages_in == messages_decoded + sum(rejected) + sum(ignored)`.
        `messages_in` is counted last, so a reader that sees it has seen the outcome too."""
        try:
            self._handle(topic, payload, now)
        finally:
            self.metrics.messages_in += 1

    def _handle(self, topic: str, payload: bytes, now: float) -> None:
        route: Route | None = None
        try:
            if len(payload) > self.max_payload:
                raise DecodeError(
                    RejectReason.too_large, f"{len(payload)} bytes, the limit is {self.max_payload} bytes"
                )
            route = self.route(topic)
            if route is None:
                raise DecodeError(
                    RejectReason.unknown_topic, "topic matches neither the device scheme nor a vendor pattern"
                )
            device = self.registry.get(route.device_id)
            if device is None:
                raise DecodeError(RejectReason.unknown_device, _unknown_device(route))
            if route.device_type is not None and route.device_type != device.type:
                raise DecodeError(
                    RejectReason.unknown_device,
                    f"topic says type {route.device_type!r} but devices.yaml has {device.id!r} "
                    f"as {device.type.value!r}",
                )
            if route.channel == "status":
                self._status(device, payload, now, topic)
            else:
                readings = self._decode(route, device, payload, now)
                if readings is None:
                    return
                for reading in readings:
                    self._reading(device, reading, now)
        except DecodeError as exc:
            self.reject(
                Rejection(topic, str(exc.reason), exc.detail, payload, _device_from(topic, self)), now
            )
            return
        except Exception as exc:  # a bug or an input nobody foresaw: this message only, never the loop
            log.debug("event=handler_error topic=%s", topic, exc_info=True)
            self.reject(
                Rejection(
                    topic,
                    str(RejectReason.handler_error),
                    describe_exception(exc),
                    payload,
                    route.device_id if route is not None else None,
                ),
                now,
            )
            return
        self.metrics.messages_decoded += 1

    def _decode(self, route: Route, device: Device, payload: bytes, now: float) -> list[Reading] | None:
        """An uplink's readings; None for a network server's message that holds none (counted as
        ignored). A payload that fails to decode still proves the device alive."""
        codec = route.codec or device.codec
        profile = self.registry.profile_of(device)
        up = None
        if route.envelope is not None:
            named_by = route.named_by or ("device_id", route.device_id)
            prefer = prefers_server_decoded(codec, profile)
            up = unwrap(route.envelope, route.event, payload, prefer_decoded=prefer, topic_id=named_by)
            with self.lock:
                first = up.dedup_key is None or self.engine.first_delivery(device, up.dedup_key)
            if not first:
                self._ignore(route, device, IgnoreReason.duplicate, "")
                return None
            if up.ignored is not None:
                if up.seen:
                    self._seen(device, now)
                self._ignore(route, device, up.ignored, up.note)
                return None
            if up.error is not None:
                self._seen(device, now)
                raise DecodeError(RejectReason.server_codec_error, up.error)
        try:
            if up is None:
                return decode(codec, payload, device, now, self.cfg.limits)
            return readings_of(up, device, codec, profile, now, self.cfg.limits)
        except DecodeError:
            self._seen(device, now)
            raise

    def _seen(self, device: Device, now: float) -> None:
        with self.lock:
            seen = self.engine.seen(device, now)
        if seen:
            self.emit(seen)

    def _ignore(self, route: Route, device: Device, reason: IgnoreReason, note: str) -> None:
        self.metrics.ignored[reason.value] += 1
        level = logging.INFO if note else logging.DEBUG  # joins and the server's own logs are worth a line
        log.log(
            level,
            "event=lorawan_ignored envelope=%s lorawan_event=%s device=%s reason=%s%s",
            route.envelope,
            route.event,
            device.id,
            reason.value,
            " " + note if note else "",
        )

    def _reading(self, device: Device, reading: Reading, now: float) -> None:
        with self.lock:
            clean, changed = self.engine.on_reading(device, reading, now)
        self.metrics.readings += 1
        if reading.dropped:
            self.metrics.fields_dropped += len(reading.dropped)
            log.debug("event=fields_dropped device=%s fields=%r", device.id, reading.dropped)
        tags = self._tags_cache.get(device.id)
        if tags is None:
            tags = {
                "device_type": device.type,
                "device_id": device.id,
                "grid_id": self.grid_of(device).grid_id,
            }
            self._tags_cache[device.id] = tags
        # the values already have their declared types (devices.codecs.decode): one type per field
        fields = {k: v for k, v in clean.values.items() if v is not None}
        if fields:
            self.sink.add(Point("telemetry", tags, fields, ns_from_s(clean.ts)))
        if changed:
            self.emit(changed)

    def _status(self, device: Device, payload: bytes, now: float, topic: str) -> None:
        text = payload.strip().lower()
        if text.startswith(b"{"):
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                doc = None
            status = doc.get("status") if isinstance(doc, dict) else None  # only a string is read
            text = status.strip().lower().encode() if isinstance(status, str) else b""
        if text not in (b"online", b"offline"):
            raise DecodeError(RejectReason.bad_payload, "status payload must be `online` or `offline`")
        with self.lock:
            changed = self.engine.on_status(device, text == b"online", now)
        if changed:
            self.emit(changed)

    def check_silence(self, now: float) -> None:
        with self.lock:
            changed = self.engine.check_silence(now)
        if changed:
            self.emit(changed)

    # out ---------------------------------------------------------------------------------
    def emit(self, changed: list[Event]) -> None:
        """Give each changed event its grid and location, then hand the batch to `on_events`.

        Publishing and the `events` point come after (`publish`), in the gateway process, once alert
        hygiene has decided which events are muted (gateway/hygiene/): a worker only relays."""
        for ev in changed:
            device = self.registry.get(ev.source_id) if ev.source_type == "device" else None
            if ev.grid_id is None:
                if device is not None:
                    match = self.grid_of(device)
                elif ev.location is not None:
                    match = self.grids.locate(ev.location.lat, ev.location.lon)
                else:
                    match = GridMatch(self.grids.fallback_grid, None, True)
                ev.grid_id, ev.micro_grid_id = match.grid_id, match.micro_grid_id
                if match.fallback:
                    ev.measurements.setdefault("grid_fallback", True)
            if ev.location is None and device is not None:
                ev.location = Location(lat=device.lat, lon=device.lon)
        self.on_events(changed)

    def publish(self, changed: list[Event]) -> None:
        """Publish each event on its alert topic (a live fault on its team's maintenance topic too:
        a muted one pages nobody), count it and write its `events` point."""
        for ev in changed:
            body = ev.model_dump_json().encode()
            self.outbox.publish(self.topics.alert(ev.grid_id or self.grids.fallback_grid, ev.kind), body, 1)
            if ev.event_class is EventClass.fault and ev.suppressed_by is None:
                device = self.registry.get(ev.source_id) if ev.source_type == "device" else None
                team = (device.maintenance_team if device is not None else None) or self.cfg.maintenance_team
                self.outbox.publish(self.topics.maintenance(team), body, 1)
            self.metrics.events_out[(ev.kind, ev.state.value)] += 1
            self.sink.add(event_point(ev))
            log.debug(
                "event=%s kind=%s state=%s severity=%s source=%s grid=%s id=%s suppressed_by=%s",
                "event_" + ev.state.value,
                ev.kind,
                ev.state.value,
                ev.severity.value,
                ev.source,
                ev.grid_id,
                ev.id,
                ev.suppressed_by,
            )

    def reject(self, rej: Rejection, now: float) -> None:
        self.metrics.reject(rej.reason)
        self._log_reject(rej)
        self.outbox.publish(self.topics.dead_letter, dead_letter_body(rej, now), 1)


def _unknown_device(route: Route) -> str:
    if route.named_by is None:
        return f"device {route.device_id!r} is not in the registry (devices.yaml)"
    scheme, value = route.named_by
    return (
        f"no device in devices.yaml has {scheme} {value!r} (nor the id {value!r}); "
        f"add `{scheme}: {value}` to its entry"
    )


def _device_from(topic: str, pipeline: Pipeline) -> str | None:
    route = pipeline.route(topic)
    return route.device_id if route else None


def event_point(ev: Event) -> Point:
    """The `events` measurement: one point per event state change."""
    at = ev.ended_at if ev.ended_at is not None else (ev.updated_at or ev.started_at)
    fields: dict[str, float | int | bool | str] = {"event_id": ev.id, "confidence": float(ev.confidence)}
    if ev.value is not None:
        fields["value"] = float(ev.value)
    if ev.suppressed_by is not None:
        fields["suppressed_by"] = ev.suppressed_by  # a field: a tag per cause id would explode series
    return Point(
        "events",
        {
            "kind": ev.kind,
            "source_type": ev.source_type,
            "grid_id": ev.grid_id or "",
            "severity": ev.severity.value,
            "state": ev.state.value,
        },
        fields,
        ns_from_datetime(at),
    )
