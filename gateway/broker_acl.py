"""Mosquitto password and ACL files from the gateway's config: who may publish and read what.

Each device of devices.yaml gets a user named by its id that may publish only its own topics
(`{p}/devices/{type}/{id}/up` and `/status`, and every vendor topic of gateway.yaml whose device
type is its own, with its id in the `{device_id}` segment). The gateway reads every uplink and
edge topic and publishes alerts, tickets, faults and dead letters; an edge box publishes under
`{p}/edge/{edge_id}/` and reads ticket changes (its feedback loop); a reader (the command centre,
a team's app) reads alerts, tickets, faults and dead letters and publishes nothing.

Passwords are random, kept across runs (a device keeps its password until `rotate`), and hashed
in Mosquitto's own format, `$7$` (PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, as
`mosquitto_passwd` writes): hashing here keeps the passwords off every command line and out of
`ps`, and needs no Mosquitto on the machine that generates the files. Nothing here logs a secret.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from devices.registry import DeviceRegistry
from gateway.mqtt import SYS_DROPPED
from gridgate.config import ConfigError, GatewayConfig
from gridgate.topics import Topics

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's own count (src/password_mosq.h: PW_DEFAULT_ITERATIONS)
SALT_BYTES = 12
PASSWORD_BYTES = 24  # 32 URL-safe characters
EDGE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")

Role = Literal["gateway", "edge", "reader", "device"]


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto's `$7$` hash: `$7${iterations}${base64 salt}${base64 PBKDF2-HMAC-SHA512}`."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a `$7$` hash (ours or mosquitto_passwd's)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a Mosquitto $7$ (PBKDF2-SHA512) hash")
    iterations, salt, digest = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
    mine = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(mine, digest)


@dataclass(slots=True)
class BrokerUser:
    """One Mosquitto user: its role, what it may publish and read, and its password."""

    username: str
    role: Role
    write: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    password: str = field(default="", repr=False)


def plan_users(
    cfg: GatewayConfig,
    registry: DeviceRegistry,
    edge_ids: Iterable[str],
    gateway_user: str,
    readers: Iterable[str] = (),
) -> list[BrokerUser]:
    """Every user with its topics: the gateway, each edge box, each reader, each device;
    ConfigError on names Mosquitto's files cannot hold."""
    topics = Topics(cfg.broker.topic_prefix)
    p = cfg.broker.topic_prefix
    gateway = BrokerUser(
        gateway_user,
        "gateway",
        # internal/events: ingest replicas -> the lead dispatcher (`--role`, gateway/cluster/)
        write=[
            f"{p}/alerts/#",
            f"{p}/tickets/#",
            f"{p}/maintenance/#",
            topics.dead_letter,
            topics.internal_events,
        ],
        read=[topics.device_filter, topics.edge_filter, topics.internal_events]
        + [vt.subscription for vt in cfg.all_vendor_topics()]
        + [SYS_DROPPED],
    )
    users = [gateway]
    problems: list[str] = []
    for edge_id in edge_ids:
        if not edge_id or not set(edge_id) <= EDGE_ID_CHARS or set(edge_id) == {"."}:
            problems.append(f"edge box {edge_id!r}: an edge_id is letters, digits, '_', '.' and '-' only")
            continue
        users.append(BrokerUser(edge_id, "edge", write=[f"{p}/edge/{edge_id}/#"], read=[topics.tickets("+")]))
    for reader in readers:
        users.append(
            BrokerUser(
                reader,
                "reader",
                read=[f"{p}/alerts/#", f"{p}/tickets/#", f"{p}/maintenance/#", topics.dead_letter],
            )
        )
    for device in registry:
        write = [
            topics.device_up(device.type.value, device.id),
            topics.device_status(device.type.value, device.id),
        ]
        for vt in cfg.vendor_topics:
            if vt.envelope is not None or vt.device_key != "device_id":
                continue  # a network server publishes these: its own broker user (docs/platforms.md)
            if vt.device_type is None or vt.device_type == device.type.value:
                write.append(vt.pattern.replace("{device_id}", device.id))
        users.append(BrokerUser(device.id, "device", write=write))
    seen: dict[str, Role] = {}
    for user in users:
        if not user.username or user.username != user.username.strip() or "\n" in user.username:
            problems.append(f"{user.role} {user.username!r}: a user name must be non-empty, without "
                            "leading or trailing white space")  # fmt: skip
        if ":" in user.username:
            problems.append(
                f"{user.role} {user.username!r}: a Mosquitto user name cannot contain ':' "
                "(the password file separates name and hash with it); rename it"
            )
        if user.username in seen:
            problems.append(
                f"{user.role} {user.username!r}: the same name is already the {seen[user.username]}'s "
                "user; give each its own name (broker.username, edge_id, device id)"
            )
        seen.setdefault(user.username, user.role)
    if problems:
        raise ConfigError(registry.source, problems)
    return users


def acl_text(users: list[BrokerUser]) -> str:
    """A Mosquitto `acl_file`: one `user` block per user, nothing for anybody else."""
    out = io.StringIO()
    out.write("# generated by `gridgate mqtt acl`: edit devices.yaml or gateway.yaml and run it again\n")
    for user in users:
        out.write(f"\n# {user.role}\nuser {user.username}\n")
        for topic in user.write:
            out.write(f"topic write {topic}\n")
        for topic in user.read:
            out.write(f"topic read {topic}\n")
    return out.getvalue()


def passwd_text(users: list[BrokerUser]) -> str:
    """A Mosquitto `password_file` (`user:$7$...` lines)."""
    return "".join(f"{u.username}:{hash_password(u.password)}\n" for u in users)


CREDENTIALS = "credentials.csv"
PASSWD = "passwd"
ACL = "acl"


@dataclass(frozen=True, slots=True)
class Written:
    """Where `write_files` put what, and how many passwords it made anew."""

    passwd: Path
    acl: Path
    credentials: Path
    password_files: dict[str, Path]  # gateway and edge users -> a file holding only its password
    new_passwords: int


def password_file_name(user: BrokerUser) -> str:
    """`gateway.password` for the gateway, `{edge_id}.password` for an edge box."""
    return "gateway.password" if user.role == "gateway" else f"{user.username}.password"


def read_credentials(path: Path) -> dict[str, str]:
    """username -> password from an earlier run's credentials.csv (empty when there is none)."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["username"]: row["password"] for row in csv.DictReader(f) if row.get("password")}


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing any earlier one in one step."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.chmod(tmp, 0o600)  # an existing .tmp keeps its mode through O_CREAT
    os.replace(tmp, path)


def write_files(users: list[BrokerUser], out: Path, rotate: bool = False) -> Written:
    """Give each user its password (the earlier one unless `rotate`) and write passwd, acl,
    credentials.csv and the gateway's and edge boxes' password files into `out` (mode 0700)."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    known = {} if rotate else read_credentials(out / CREDENTIALS)
    new = 0
    for user in users:
        if user.username in known:
            user.password = known[user.username]
        else:
            user.password = secrets.token_urlsafe(PASSWORD_BYTES)
            new += 1
    creds = io.StringIO()
    writer = csv.writer(creds, lineterminator="\n")
    writer.writerow(["role", "username", "password", "may_publish"])
    for user in users:
        writer.writerow([user.role, user.username, user.password, " ".join(user.write)])
    _write_private(out / CREDENTIALS, creds.getvalue())
    _write_private(out / PASSWD, passwd_text(users))
    _write_private(out / ACL, acl_text(users))
    files: dict[str, Path] = {}
    for user in users:
        if user.role != "device":
            path = out / password_file_name(user)
            _write_private(path, user.password + "\n")
            files[user.username] = path
    return Written(out / PASSWD, out / ACL, out / CREDENTIALS, files, new)
