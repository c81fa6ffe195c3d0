"""China Mobile OneNET HTTP push: the URL check (GET), the new rule-engine format and the old one.

- GET `?msg=&nonce=&signature=`: answered with `msg` itself once `signature` is
  `base64(md5(token + nonce + msg))` (checked when a token is configured).
- POST, new: `{"msg": "<JSON string>", "nonce", "signature", "time", "id"}`; the signature covers
  the `msg` string as sent; in secure mode `msg` is base64 of AES-128-CBC (PKCS7, IV = the key).
  `msg` holds `lifeCycle` (`data.status` online/offline), `notify` with `notifyType` `property`
  (`data.params` `{name: {time, value}}`) or `event` (`{name: {eventType, time, value: {...}}}`),
  and message types only noted (`reply`, `sceneLog`, `lbsAndWifi`). Retry key: `id`.
- POST, old (datastreams): `{"msg": {...} or [...], "msg_signature", "nonce"}` (`enc_msg` in
  secure mode), each item `type` 1 (a data point: `dev_id`, `ds_id`, `value`, `at`) or 2 (`status`
  1/0). The signature covers the `msg` text as sent. Retry key: `(dev_id, ds_id, at)` of each item.

The device is found by `deviceName`, `deviceId` or `dev_id` (`onenet_device: ` in devices.yaml),
else by `imei`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.codecs.base import loads_json
from devices.codecs.errors import DecodeError, RejectReason
from devices.codecs.fields import json_type
from devices.registry import DeviceRegistry
from gateway.platforms.native import (
    IdText,
    Note,
    ParsedPush,
    PushProblem,
    dedup_key,
    find_device,
    invalid,
    payload_digest,
    reading,
    status,
    unknown_device,
)
from gridgate.topics import Topics

PLATFORM = "onenet"
AES_KEY_BYTES = (16, 24, 32)  # OneNET generates 16; AES takes these three
NOTED = frozenset({"reply", "sceneLog", "lbsAndWifi"})  # message types logged, not stored


class SignatureError(Exception):
    """The push is not signed with the configured token: refused (403), never dead-lettered."""


def signature(token: str, nonce: str, msg: str) -> str:
    """OneNET's signature: base64 of the raw MD5 digest of token + nonce + msg."""
    return base64.b64encode(hashlib.md5((token + nonce + msg).encode()).digest()).decode()


def check_signature(token: str, nonce: str | None, msg: str, given: str | None) -> None:
    """SignatureError unless `given` (already URL-decoded) is the signature of `msg`.

    A `+` of the base64 sent unescaped in a query string arrives as a space: both are accepted.
    """
    if not nonce or not given:
        raise SignatureError("nonce or signature missing while platforms.onenet.token is set")
    expected = signature(token, nonce, msg).encode()
    if not hmac.compare_digest(expected, given.replace(" ", "+").encode()):
        raise SignatureError(
            "signature does not match platforms.onenet.token (check the token in the console)"
        )


def aes_key_bytes(key: str) -> bytes:
    """The configured key as AES key bytes; ValueError naming the length (or the missing package)."""
    raw = key.encode()
    if len(raw) not in AES_KEY_BYTES:
        raise ValueError(f"platforms.onenet.aes_key: {len(raw)} bytes, expected 16 (the console's key)")
    try:
        import cryptography  # noqa: F401  (only secure mode needs it: imported when configured)
    except ImportError:
        raise ValueError(
            "platforms.onenet.aes_key needs the cryptography package: pip install cryptography"
        ) from None
    return raw


def decrypt(key: bytes, text: str) -> str:
    """Secure mode: base64 -> AES-CBC with IV = key -> PKCS7 unpadding -> UTF-8. DecodeError if any fails."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    try:
        data = base64.b64decode(text, validate=True)
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(
            RejectReason.bad_payload,
            f"msg: cannot be decrypted with platforms.onenet.aes_key ({type(exc).__name__}): "
            "check the key, or turn secure mode off in the console",
        ) from None


class NewPush(BaseModel):
    model_config = ConfigDict(extra="allow")

    msg: str
    nonce: str | None = None
    signature: str | None = None
    time: int | None = None
    id: IdText | None = Field(None, max_length=128)


class Param(BaseModel):
    model_config = ConfigDict(extra="allow")

    time: int | None = Field(None, ge=0, description="ms since the epoch")
    value: Any = None
    eventType: str | None = None


class Data(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str | None = None
    time: int | None = Field(None, ge=0)
    params: dict[str, Param] | None = None


class Message(BaseModel):
    """One `msg` of the new format."""

    model_config = ConfigDict(extra="allow")

    messageType: str
    notifyType: str | None = None
    deviceName: str | None = Field(None, max_length=128)
    deviceId: IdText | None = Field(None, max_length=128)
    imei: IdText | None = Field(None, max_length=64)
    data: Data | None = None


class OldItem(BaseModel):
    """One data point or on/offline change of the old (datastreams) format."""

    model_config = ConfigDict(extra="allow")

    type: int
    dev_id: IdText = Field(min_length=1, max_length=128)
    ds_id: str | None = Field(None, max_length=128)
    value: Any = None
    at: int | None = Field(None, ge=0)
    status: int | None = None
    imei: IdText | None = Field(None, max_length=64)


def parse_onenet(
    body: bytes, registry: DeviceRegistry, topics: Topics, token: str | None, aes_key: bytes | None
) -> ParsedPush:
    """One POST body -> native messages, problems or notes. SignatureError when a token is set and
    the body is not signed with it; otherwise never raises."""
    try:
        doc = loads_json(body)
    except DecodeError as exc:
        return ParsedPush(problems=[PushProblem(exc.reason, f"{PLATFORM} push: {exc.detail}")])
    if type(doc) is not dict:
        return _problem(RejectReason.wrong_type, f"expected a JSON object, got {json_type(doc)}")
    msg = doc.get("msg", doc.get("enc_msg"))
    if type(msg) is str:
        return (
            _new(doc, registry, topics, token, aes_key)
            if "msg" in doc
            else _old_encrypted(doc, body, registry, topics, token, aes_key)
        )
    if type(msg) in (dict, list):
        if token is not None:
            check_signature(
                token, _str(doc.get("nonce")), _raw_member(body, "msg"), _str(doc.get("msg_signature"))
            )
        return _old(msg, registry, topics)
    return _problem(
        RejectReason.missing_field, "msg: missing (expected a JSON string, or an object in the old format)"
    )


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def _problem(reason: RejectReason, detail: str) -> ParsedPush:
    return ParsedPush(problems=[PushProblem(reason, f"{PLATFORM} push: {detail}")])


def _new(
    doc: dict[str, Any], registry: DeviceRegistry, topics: Topics, token: str | None, aes_key: bytes | None
) -> ParsedPush:
    if token is not None:  # before anything else is read: an unsigned body is refused, not dead-lettered
        check_signature(token, _str(doc.get("nonce")), doc["msg"], _str(doc.get("signature")))
    try:
        push = NewPush.model_validate(doc)
    except ValidationError as exc:
        return ParsedPush(problems=[invalid(PLATFORM, exc)])
    key = dedup_key(PLATFORM, "id", push.id) if push.id else dedup_key(PLATFORM, "msg", push.msg)
    parsed = ParsedPush(key=key)
    try:
        text = decrypt(aes_key, push.msg) if aes_key is not None else push.msg
        inner = loads_json(text.encode())
    except DecodeError as exc:
        parsed.problems.append(PushProblem(exc.reason, f"{PLATFORM} msg: {exc.detail}"))
        return parsed
    for i, item in enumerate(inner if type(inner) is list else [inner]):
        _new_message(item, f"msg[{i}]." if type(inner) is list else "msg.", registry, topics, parsed)
    return parsed


def _new_message(item: Any, where: str, registry: DeviceRegistry, topics: Topics, parsed: ParsedPush) -> None:
    try:
        m = Message.model_validate(item)
    except ValidationError as exc:
        parsed.problems.append(invalid(PLATFORM, exc, where))
        return
    if m.messageType not in ("lifeCycle", "notify"):
        what = m.messageType if m.messageType in NOTED else "other"
        parsed.noted.append(
            Note(what, f"device={m.deviceName or m.deviceId} message_type={m.messageType[:40]!r}")
        )
        return
    ids = [("onenet_device", m.deviceName), ("onenet_device", m.deviceId), ("imei", m.imei)]
    device = find_device(registry, ids)
    if device is None:
        parsed.problems.append(unknown_device(PLATFORM, ids))
        return
    data = m.data or Data()
    if m.messageType == "lifeCycle":
        if data.status not in ("online", "offline"):
            parsed.problems.append(
                PushProblem(
                    RejectReason.bad_payload,
                    f"{PLATFORM} {where}data.status: {data.status!r}, expected online or offline",
                    device.id,
                )
            )
            return
        parsed.messages.append(status(topics, device, data.status == "online"))
        return
    params = data.params or {}
    if m.notifyType == "event":
        for name, p in params.items():
            parsed.noted.append(Note("event", f"device={device.id} event={name[:40]!r} type={p.eventType!r}"))
            if not isinstance(p.value, dict):
                parsed.problems.append(
                    PushProblem(
                        RejectReason.wrong_type,
                        f"{PLATFORM} {where}data.params.{name}.value: expected an object of readings, "
                        f"got {json_type(p.value)}",
                        device.id,
                    )
                )
                continue
            parsed.messages.append(reading(topics, registry, device, p.value, p.time))
        return
    if m.notifyType != "property":
        parsed.noted.append(
            Note("notify/other", f"device={device.id} notify_type={str(m.notifyType)[:40]!r}")
        )
        return
    by_time: dict[int | None, dict[str, Any]] = defaultdict(dict)
    for name, p in params.items():
        by_time[p.time if p.time is not None else data.time][name] = p.value
    if not by_time:
        parsed.problems.append(
            PushProblem(
                RejectReason.missing_field, f"{PLATFORM} {where}data.params: no properties", device.id
            )
        )
    for ts_ms, properties in sorted(by_time.items(), key=lambda kv: kv[0] or 0):
        parsed.messages.append(reading(topics, registry, device, properties, ts_ms))


def _old_encrypted(
    doc: dict[str, Any],
    body: bytes,
    registry: DeviceRegistry,
    topics: Topics,
    token: str | None,
    aes_key: bytes | None,
) -> ParsedPush:
    enc = doc["enc_msg"]
    if token is not None:
        check_signature(token, _str(doc.get("nonce")), enc, _str(doc.get("msg_signature")))
    if aes_key is None:
        return _problem(
            RejectReason.bad_payload, "enc_msg: encrypted, but platforms.onenet.aes_key is not set"
        )
    try:
        msg = loads_json(decrypt(aes_key, enc).encode())
    except DecodeError as exc:
        return _problem(exc.reason, f"enc_msg: {exc.detail}")
    if type(msg) not in (dict, list):
        return _problem(
            RejectReason.wrong_type, f"enc_msg: expected an object or array, got {json_type(msg)}"
        )
    return _old(msg, registry, topics)


def _old(msg: dict[str, Any] | list[Any], registry: DeviceRegistry, topics: Topics) -> ParsedPush:
    items = msg if isinstance(msg, list) else [msg]
    parsed = ParsedPush()
    keys: list[Any] = []
    for i, raw in enumerate(items):
        where = f"msg[{i}]." if isinstance(msg, list) else "msg."
        try:
            item = OldItem.model_validate(raw)
        except ValidationError as exc:
            parsed.problems.append(invalid(PLATFORM, exc, where))
            keys.append(payload_digest(raw))
            continue
        keys.append((item.dev_id, item.ds_id, item.at, item.status))
        ids = [("onenet_device", item.dev_id), ("imei", item.imei)]
        device = find_device(registry, ids)
        if device is None:
            parsed.problems.append(unknown_device(PLATFORM, ids))
        elif item.type == 1 and item.ds_id:
            parsed.messages.append(reading(topics, registry, device, {item.ds_id: item.value}, item.at))
        elif item.type == 2 and item.status in (0, 1):
            parsed.messages.append(status(topics, device, item.status == 1))
        else:
            parsed.problems.append(
                PushProblem(
                    RejectReason.bad_payload,
                    f"{PLATFORM} {where}type: {item.type}, ds_id {item.ds_id!r}, status {item.status!r}: "
                    "expected type 1 with ds_id or type 2 with status 0/1",
                    device.id,
                )
            )
    parsed.key = dedup_key(PLATFORM, "old", keys)
    return parsed


def _raw_member(body: bytes, name: str) -> str:
    """The text of the top-level member `name` exactly as sent: the old format signs it as is."""
    text = body.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    want = json.loads(text)[name]
    for m in re.finditer(rf'"{re.escape(name)}"\s*:\s*', text):
        try:
            value, end = decoder.raw_decode(text, m.end())
        except ValueError:
            continue
        if value == want:
            return text[m.end() : end]
    return json.dumps(want, separators=(",", ":"), ensure_ascii=False)
