"""Gateway configuration: YAML file, overridden by `GRIDGATE_*` environment variables.

Nested keys use a double underscore: `GRIDGATE_BROKER__HOST=mqtt.example`,
`GRIDGATE_INFLUX__TOKEN=...`. Secrets may also come from files (`password_file`, `token_file`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import time as clock_time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gridgate.hygiene_config import HygieneConfig
from gridgate.topics import TopicLevel, topic_level_problem

ENV_PREFIX = "GRIDGATE_"


class ConfigError(Exception):
    """A configuration problem a person can fix: names the file, the field and the fix."""

    def __init__(self, file: str | Path, problems: list[str]) -> None:
        self.file = str(file)
        self.problems = problems
        super().__init__(f"{self.file}: " + "; ".join(problems))

    def render(self) -> str:
        return "\n".join([f"{self.file}: invalid configuration"] + [f"  - {p}" for p in self.problems])


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe_validation_error(
    file: str | Path, exc: ValidationError, at: tuple[int | str, ...] = ()
) -> ConfigError:
    """Turn pydantic's error into one line per field: path, what is wrong, what to do.

    `at`: where the validated value sits in the file, e.g. ("devices", 7) for one list item."""
    problems = []
    for err in exc.errors():
        path = _field_path((*at, *err["loc"]))
        msg = err["msg"]
        given = err.get("input")
        if err["type"] == "extra_forbidden":
            fix = "remove it or check its spelling"
        elif err["type"] == "missing":
            fix = "add it"
        else:
            fix = f"got {given!r}" if not isinstance(given, dict | list) else "fix its value"
        problems.append(f"{path}: {msg} ({fix})")
    return ConfigError(file, problems)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file, with errors that name the file and line."""
    p = existing_file(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise yaml_error(p, exc) from exc


def existing_file(path: str | Path) -> Path:
    """`path`, or a ConfigError that says where it was looked for."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            p, [f"file not found (looked in {p.resolve().parent}); pass the right path with -c"]
        )
    return p


def yaml_error(path: str | Path, exc: yaml.YAMLError) -> ConfigError:
    """A YAML syntax error as a ConfigError with the line and column."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return ConfigError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _secret_from(value: SecretStr | None, file: Path | None) -> str | None:
    if file is not None:
        return file.read_text(encoding="utf-8").strip()
    return value.get_secret_value() if value is not None else None


class TLSConfig(Strict):
    enabled: bool = False
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate for mutual TLS")
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip hostname verification (testing only)")


class BrokerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    tls: TLSConfig = TLSConfig()
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    client_id: str = Field("gridgate-gateway", min_length=1, max_length=64)
    topic_prefix: str = Field("gridgate", pattern=r"^[^#+/][^#+]*$")
    keepalive_s: int = Field(30, ge=5)
    shared_group: str | None = Field(
        None,
        description="subscribe through `$share/<group>/` (kept for old configs, warned about at start: it "
        "splits one device's readings over the gateways; use `gridgate gateway --role ingest` replicas)",
    )
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _prefix_levels(self) -> BrokerConfig:
        for level in self.topic_prefix.split("/"):  # the prefix may span levels: city/gridgate
            problem = topic_level_problem(level)
            if problem is not None:
                raise ValueError(f"topic_prefix {self.topic_prefix!r}: a level {problem}")
        return self

    def secret(self) -> str | None:
        return _secret_from(self.password, self.password_file)


class InfluxConfig(Strict):
    """Where telemetry and events go. `api: none` keeps them in the embedded SQLite sink."""

    api: Literal["v1", "v2", "none"] = "none"
    url: str = "http://127.0.0.1:8086"
    # v1 (/write?db=)
    database: str = "gridgate"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    # v2 (/api/v2/write)
    org: str = "gridgate"
    bucket: str = "gridgate"
    token: SecretStr | None = None
    token_file: Path | None = None
    # the sink runner
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: float = Field(
        0.25, gt=0, le=60, description="longest a point waits for a batch: bounds publish-to-stored latency"
    )
    timeout_s: float = Field(10.0, gt=0)
    retry_max_s: float = Field(30.0, gt=0, description="cap of the exponential backoff between retries")
    buffer_max_points: int = Field(
        2_000_000,
        ge=1000,
        description="points kept (memory + disk spool) while the server is away, for the whole gateway: "
        "each of its 1 + ingest.workers processes keeps an equal share; beyond it the oldest telemetry "
        "is dropped first, events and tickets points last",
    )

    def password_secret(self) -> str | None:
        return _secret_from(self.password, self.password_file)

    def token_secret(self) -> str | None:
        return _secret_from(self.token, self.token_file)


class StorageConfig(Strict):
    data_dir: Path = Path("var")
    journal_fsync: bool = Field(
        False,
        description="fsync the ingest journal before each batch of PUBACKs: survives a power cut, not "
        "only a crash, at the cost of one fsync per batch",
    )

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.sqlite"

    @property
    def timeseries_db(self) -> Path:
        return self.data_dir / "timeseries.sqlite"

    @property
    def spool_db(self) -> Path:
        return self.data_dir / "spool.sqlite"


class APIConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    stream_queue_max: int = Field(
        1000,
        ge=10,
        description="messages queued per WebSocket client; a slower client loses the oldest "
        "(counted, and told with a `dropped` message) and never holds the gateway up",
    )


class MapConfig(Strict):
    """The dashboard's map: vector-only (grids, devices, cameras) unless a tile URL is given."""

    datum: Literal["wgs84", "gcj02"] = Field(
        "wgs84",
        description="datum of the base map: gcj02 for AMap/Tencent-style Chinese tiles; devices, cameras "
        "and grids.geojson are WGS-84 and are shifted on display to match",
    )
    tiles: str | None = Field(
        None,
        pattern=r"^(https?://|/)",
        description="XYZ tile URL template ({z}/{x}/{y}), on the city's own tile server for an air-gapped "
        "centre; none: the vector-only map",
    )
    tiles_attribution: str = Field("", max_length=300, description="shown in the map's corner")
    tiles_max_zoom: int = Field(19, ge=1, le=24)


Role = Literal["admin", "command_centre", "team", "grid_worker", "reporter", "read_only"]


class TokenConfig(Strict):
    """One API bearer token: who it is, what role it has, and where the secret comes from."""

    name: str = Field(min_length=1, description="who uses it; recorded as the actor in the audit trail")
    role: Role = Field(
        description="admin: everything; command_centre: read, act on every ticket, verify (close); "
        "team: act on its team's tickets; grid_worker: act on tickets of its grids; reporter: read "
        "and file Open311 reports (a citizen app's api_key); read_only: read"
    )
    token: SecretStr | None = Field(None, description="the secret itself (prefer token_env or token_file)")
    token_env: str | None = Field(None, description="environment variable that holds the secret")
    token_file: Path | None = Field(None, description="file whose first line is the secret")
    team: str | None = Field(None, description="role team: the team whose tickets it may act on")
    grids: list[str] = Field(
        default_factory=list, description="role grid_worker: grid and micro-grid ids it may act in"
    )

    @model_validator(mode="after")
    def _one_source_and_scope(self) -> TokenConfig:
        sources = [x for x in (self.token, self.token_env, self.token_file) if x is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of token, token_env or token_file")
        if self.role == "team" and not self.team:
            raise ValueError("role team needs `team:` (the team whose tickets it acts on)")
        if self.role == "grid_worker" and not self.grids:
            raise ValueError("role grid_worker needs `grids:` (the grid ids it acts in)")
        return self

    def secret(self) -> str:
        """The token; ConfigError-worthy ValueError when its variable or file is missing or empty."""
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            where = f"environment variable {self.token_env}"
        else:
            value = (_secret_from(self.token, self.token_file) or "").strip()
            where = f"file {self.token_file}" if self.token_file else "token"
        if len(value) < 16:
            raise ValueError(f"token {self.name!r}: {where} is missing or shorter than 16 characters")
        return value


class AuthConfig(Strict):
    """`auth:`: bearer tokens with roles for the HTTP API, the WebSocket stream and Open311 POST."""

    tokens: list[TokenConfig] = Field(
        default_factory=list,
        description="with none, the API is open read-write to clients on this machine (127.0.0.1, ::1) "
        "only, for the demo; anything else gets 401",
    )
    open_on_localhost: bool = Field(
        True, description="with no tokens configured, let local clients in as admin (false: nobody)"
    )
    allow_open: bool = Field(
        False,
        description="with no tokens, still start when api.host is not a loopback address: any client "
        "on this machine, or a reverse proxy on it, can then read and change tickets as admin",
    )


# the ids a vendor topic may name its device by: gridgate's own, or a LoRaWAN network server's
TOPIC_DEVICE_KEYS = ("device_id", "dev_eui", "lorawan_device_id")
_DEVICE_SEGMENTS = tuple("{" + k + "}" for k in TOPIC_DEVICE_KEYS)
_PLACEHOLDERS = frozenset((*_DEVICE_SEGMENTS, "{event}"))
CHIRPSTACK_PATTERN = "application/+/device/{dev_eui}/event/{event}"
TTS_PATTERN = "v3/+/devices/{lorawan_device_id}/up"


def check_topic_pattern(pattern: str, *, has_envelope: bool) -> None:
    """ValueError unless `pattern` names its device in one whole segment (and `{event}` at most once,
    for a network server's envelope)."""
    segments = pattern.split("/")
    if sum(segments.count(s) for s in _DEVICE_SEGMENTS) != 1:
        names = ", ".join(_DEVICE_SEGMENTS)
        raise ValueError(f"pattern needs exactly one whole segment naming the device, one of {names}")
    if "#" in pattern:
        raise ValueError("`#` is not allowed; use `+` for single segments")
    if segments.count("{event}") > 1:
        raise ValueError("pattern may have one `{event}` segment")
    if "{event}" in segments and not has_envelope:
        raise ValueError("`{event}` names a network server's event: add `envelope: chirpstack` or `tts`")


class VendorTopic(Strict):
    """A vendor's own topic mapped to a device id and a codec, e.g. `acme/covers/{device_id}/data`."""

    pattern: str = Field(
        description="MQTT topic with one whole segment naming the device: `{device_id}` (gridgate's id), "
        "`{dev_eui}` or `{lorawan_device_id}` (looked up in devices.yaml, falling back to the id); "
        "`{event}` marks the segment holding a network server's event name; `+` matches any segment"
    )
    codec: str | None = Field(
        None, description="codec of the payload (of the LoRaWAN FRMPayload); default: the device's own"
    )
    device_type: str | None = Field(None, description="defaults to the type in devices.yaml")
    envelope: Literal["chirpstack", "tts"] | None = Field(
        None,
        description="the JSON a LoRaWAN network server wraps each message in (ChirpStack v4 or The "
        "Things Stack v3 MQTT integration), unwrapped before the codec (docs/platforms.md)",
    )

    @model_validator(mode="after")
    def _one_device_id(self) -> VendorTopic:
        check_topic_pattern(self.pattern, has_envelope=self.envelope is not None)
        return self

    @property
    def device_key(self) -> str:
        """Which id the topic names the device by: device_id, dev_eui or lorawan_device_id."""
        segments = self.pattern.split("/")
        return next(k for k, s in zip(TOPIC_DEVICE_KEYS, _DEVICE_SEGMENTS, strict=True) if s in segments)

    @property
    def subscription(self) -> str:
        return "/".join("+" if s in _PLACEHOLDERS else s for s in self.pattern.split("/"))

    def compile(self) -> re.Pattern[str]:
        parts = []
        for seg in self.pattern.split("/"):
            if seg in _PLACEHOLDERS:
                parts.append(f"(?P<{seg[1:-1]}>[^/]+)")
            else:
                parts.append("[^/]+" if seg == "+" else re.escape(seg))
        return re.compile("^" + "/".join(parts) + "$")


class NetworkServerTopic(Strict):
    """One LoRaWAN network server's MQTT integration as a preset vendor topic."""

    enabled: bool = Field(False, description="subscribe to this server's uplink topics")
    pattern: str = Field(description="its event topic, with `{event}` and the device segment")
    codec: str | None = Field(None, description="codec of the FRMPayload; default: the device's own")
    device_type: str | None = Field(None, description="only devices of this type come this way")

    @model_validator(mode="after")
    def _pattern(self) -> NetworkServerTopic:
        check_topic_pattern(self.pattern, has_envelope=True)
        return self


class ChirpStackTopic(NetworkServerTopic):
    pattern: str = Field(
        CHIRPSTACK_PATTERN,
        description="ChirpStack v4 `event_topic` (its default); the DevEUI segment is `{dev_eui}`",
    )


class TTSTopic(NetworkServerTopic):
    pattern: str = Field(
        TTS_PATTERN,
        description="The Things Stack v3 uplink topic; `v3/{app}@{tenant}/...` is one segment, matched "
        "by `+`; use `.../{event}` to take `join` too",
    )


class LoRaWANConfig(Strict):
    """`lorawan:`: LoRaWAN network servers publishing to this broker (or bridged into it)."""

    chirpstack: ChirpStackTopic = Field(
        default_factory=ChirpStackTopic, description="ChirpStack v4 MQTT integration (JSON)"
    )
    tts: TTSTopic = Field(default_factory=TTSTopic, description="The Things Stack v3 MQTT integration")

    def vendor_topics(self) -> list[VendorTopic]:
        """The enabled servers as vendor topics with their envelope."""
        return [
            VendorTopic(pattern=s.pattern, codec=s.codec, device_type=s.device_type, envelope=name)
            for name, s in (("chirpstack", self.chirpstack), ("tts", self.tts))
            if s.enabled
        ]


class IngestConfig(Strict):
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="worker processes that decode and run rules, each owning a share of the devices; "
        "0 does everything in the gateway process. One process tops out near 12,000 messages/s: use "
        "2 or more on a multi-core box (each device's state stays in one worker)",
    )
    checkpoint_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="how often rule state, events and the journal position are saved together; a "
        "restart replays the journal from the last one (about checkpoint_s x messages/s messages)",
    )


class ClusterConfig(Strict):
    """`cluster:`: several gateway processes sharing one broker and one PostgreSQL (docs/operator-guide.md,
    Scale-out). Used by `gridgate gateway --role ingest|dispatch`; `--role all` (the default) ignores it."""

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the PostgreSQL database the roles share (postgresql+psycopg://...): "
        "device rule state, the event log and outbox, and the advisory locks that say which replica owns "
        "which devices and which dispatcher leads; may be the same database as tickets.database_url",
    )
    buckets: int = Field(
        16,
        ge=1,
        le=1024,
        description="device buckets (a stable hash of the device id): each is owned by one ingest replica at "
        "a time, through a broker session of its own; fixed for a deployment (changing it moves devices)",
    )
    checkpoint_s: float = Field(
        0.5,
        gt=0,
        le=10,
        description="how often an ingest replica (or the lead dispatcher) saves its state and then "
        "acknowledges what it handled to the broker; also the most an alert waits before it is published",
    )
    lease_check_s: float = Field(
        1.0, gt=0, le=30, description="how often replicas count each other and rebalance the buckets"
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="an ingest replica serves Prometheus `/metrics` on this port (its own: one per replica "
        "on a machine); None: off. The lead dispatcher serves the API's `/metrics` as usual",
    )

    def url(self) -> str:
        """The shared database URL, or a ConfigError-worthy ValueError naming the setting."""
        if not self.database_url or not self.database_url.startswith("postgresql"):
            raise ValueError(
                "cluster.database_url must be a PostgreSQL URL (postgresql+psycopg://user@host/db): the "
                "roles share device state and locks through it (GRIDGATE_CLUSTER__DATABASE_URL)"
            )
        return self.database_url


class LimitsConfig(Strict):
    max_payload_bytes: int = Field(65536, ge=64)
    max_future_s: float = Field(86_400, ge=0, description="readings further ahead are rejected")
    max_past_s: float = Field(365 * 86_400, ge=0, description="readings older than this are rejected")
    max_evidence_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="largest JPEG snapshot (or manifest) an edge box may send"
    )
    max_clip_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="largest event clip (`clip.mp4`) an edge box may send; a larger one is dead-lettered "
        "`too_large` naming this setting (the broker's message_size_limit must allow it too)",
    )
    max_photo_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest photo a person may attach to a ticket"
    )
    max_photos_per_upload: int = Field(4, ge=1, le=32, description="photos in one upload")
    max_photos_per_ticket: int = Field(20, ge=1, le=500, description="photos one ticket may hold in all")


def _secret_or_env(owner: str, value: SecretStr | None, env: str | None, file: Path | None) -> str | None:
    """A secret given inline, by environment variable or by file; ValueError if the variable is empty."""
    if env is not None:
        found = os.environ.get(env, "")
        if not found:
            raise ValueError(f"{owner}: environment variable {env} is not set")
        return found
    return _secret_from(value, file)


def _at_most_one(owner: str, **given: object) -> None:
    named = [k for k, v in given.items() if v is not None]
    if len(named) > 1:
        raise ValueError(f"{owner}: give at most one of {', '.join(given)} (got {', '.join(named)})")


ChangeKindName = Literal["created", "updated", "escalated", "reminder"]


class WebhookConfig(Strict):
    """One webhook endpoint: signed JSON POSTs of ticket changes, from a persisted outbox."""

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="names it in logs and metrics"
    )
    url: str = Field(pattern=r"^https?://", description="where each change is POSTed")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key (prefer secret_env or secret_file)")
    secret_env: str | None = Field(None, description="environment variable holding the HMAC key")
    secret_file: Path | None = Field(None, description="file whose first line is the HMAC key")
    teams: list[str] = Field(default_factory=list, description="only changes for these teams (empty: all)")
    categories: list[str] = Field(
        default_factory=list, description="only tickets of these categories (empty: all)"
    )
    kinds: list[ChangeKindName] = Field(
        default_factory=list, description="only these change kinds (empty: all)"
    )
    grids: list[str] = Field(
        default_factory=list, description="only tickets in these grids or micro-grids (empty: all)"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="per request")
    max_attempts: int = Field(
        10, ge=1, le=1000, description="attempts before a change goes to the dead letters"
    )
    backoff_base_s: float = Field(1.0, gt=0, description="wait after the first failure; doubles each time")
    backoff_max_s: float = Field(300.0, gt=0, description="cap of the backoff between attempts")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers, e.g. a tenant id")

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookConfig:
        _at_most_one(
            f"webhook {self.name!r}",
            secret=self.secret,
            secret_env=self.secret_env,
            secret_file=self.secret_file,
        )
        return self

    def secret_value(self) -> str | None:
        """The HMAC key, or None for an unsigned endpoint; ValueError if its variable/file is empty."""
        return _secret_or_env(f"webhook {self.name!r}", self.secret, self.secret_env, self.secret_file)


class RobotConfig(Strict):
    """One group-chat robot (WeCom, DingTalk or Feishu): a card per ticket change, from the outbox."""

    name: str = Field(
        min_length=1, max_length=48, pattern=r"^[A-Za-z0-9_.-]+$", description="names it in logs and metrics"
    )
    vendor: Literal["wecom", "dingtalk", "feishu"] = Field(
        description="wecom (企业微信群机器人), dingtalk (钉钉自定义机器人) or feishu (飞书/Lark 自定义机器人)"
    )
    key: SecretStr | None = Field(
        None,
        description="the robot's credential from its webhook address: WeCom `key`, DingTalk `access_token`, "
        "Feishu hook token (prefer key_env or key_file)",
    )
    key_env: str | None = Field(None, description="environment variable holding the key")
    key_file: Path | None = Field(None, description="file whose first line is the key")
    secret: SecretStr | None = Field(
        None, description="signing secret (DingTalk 加签 `SEC...`, Feishu 签名校验); none: unsigned"
    )
    secret_env: str | None = Field(None, description="environment variable holding the signing secret")
    secret_file: Path | None = Field(None, description="file whose first line is the signing secret")
    base_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="the vendor's API host (default https://qyapi.weixin.qq.com, https://oapi.dingtalk.com, "
        "https://open.feishu.cn; https://open.larksuite.com for Lark); a relay or test server otherwise",
    )
    teams: list[str] = Field(default_factory=list, description="only changes for these teams (empty: all)")
    categories: list[str] = Field(
        default_factory=list, description="only tickets of these categories (empty: all)"
    )
    grids: list[str] = Field(
        default_factory=list, description="only tickets in these grids or micro-grids (empty: all)"
    )
    kinds: list[ChangeKindName] = Field(
        default_factory=list,
        description="only these change kinds (empty: all; count-only `updated` changes never page)",
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="per request")
    max_attempts: int = Field(
        10, ge=1, le=1000, description="attempts before a card goes to the dead letters"
    )
    backoff_base_s: float = Field(2.0, gt=0, description="wait after the first failure; doubles each time")
    backoff_max_s: float = Field(300.0, gt=0, description="cap of the backoff between attempts")

    @model_validator(mode="after")
    def _one_each(self) -> RobotConfig:
        owner = f"robot {self.name!r}"
        _at_most_one(owner, key=self.key, key_env=self.key_env, key_file=self.key_file)
        _at_most_one(owner, secret=self.secret, secret_env=self.secret_env, secret_file=self.secret_file)
        if self.key is None and self.key_env is None and self.key_file is None:
            raise ValueError(
                f"{owner}: give key, key_env or key_file (the credential in its webhook address)"
            )
        return self

    def key_value(self) -> str:
        key = _secret_or_env(f"robot {self.name!r} key", self.key, self.key_env, self.key_file)
        if not key:
            raise ValueError(f"robot {self.name!r}: the key is empty (key_file {self.key_file})")
        return key

    def secret_value(self) -> str | None:
        return _secret_or_env(f"robot {self.name!r} secret", self.secret, self.secret_env, self.secret_file)


class RemindersConfig(Strict):
    """`tickets.reminders:`: re-notify the assignee while nobody has accepted (beside escalation)."""

    every_min: float | None = Field(
        None, gt=0, description="remind every this many minutes while dispatched and not accepted; none: off"
    )
    by_category: dict[str, float] = Field(
        default_factory=dict, description="per category minutes, overriding every_min (0: no reminders)"
    )
    offline_every_min: float | None = Field(
        240.0, gt=0, description="device_offline tickets: remind this often while open (accepted or not)"
    )

    @field_validator("by_category")
    @classmethod
    def _not_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, minutes in v.items() if minutes < 0]
        if bad:
            raise ValueError(f"minutes must be 0 (off) or more, not negative: {', '.join(bad)}")
        return v


class QuietWindow(Strict):
    """A daily window in the city's time zone (`timezone`); start after end spans midnight."""

    start: clock_time = Field(clock_time(22, 0), description="quiet from this local time (HH:MM)")
    end: clock_time = Field(
        clock_time(7, 0), description="until this local time (HH:MM); = start: never quiet"
    )


class UrgentRule(Strict):
    """A ticket that always pages: its category, at or above a severity if one is given."""

    category: str
    min_severity: Literal["info", "minor", "major", "critical"] | None = None


def _default_urgent() -> list[UrgentRule]:
    return [
        UrgentRule(category="manhole_open"),
        UrgentRule(category="water_high", min_severity="critical"),
        UrgentRule(category="gas_high"),
        UrgentRule(category="bin_fire"),
    ]


class QuietHoursConfig(QuietWindow):
    """`tickets.quiet_hours:`: non-urgent tickets do not page at night; the cards wait for the morning."""

    by_category: dict[str, QuietWindow] = Field(
        default_factory=dict, description="a category's own window, replacing start/end for it"
    )
    urgent: list[UrgentRule] = Field(
        default_factory=_default_urgent, description="tickets that page even in quiet hours"
    )


class Open311Config(Strict):
    """`open311:`: the GeoReport v2 endpoint under /open311/v2/ (citizen and courier reports)."""

    enabled: bool = True
    jurisdiction_id: str | None = Field(None, description="accepted (and ignored) when it matches")
    agency_responsible: str = Field("", description="the spec's agency_responsible; default: the team name")
    default_days: int = Field(90, ge=1, description="GET requests without dates covers this many days")
    max_requests: int = Field(1000, ge=1, le=10_000, description="most requests one GET returns")
    services: list[str] = Field(
        default_factory=list,
        description="categories offered to the public as services; empty: every category of "
        "routing.yaml not routed to its fault_team (device faults are not citizens' business)",
    )
    public_read: bool = Field(
        True, description="GET services and requests without a token (the spec's norm); POST always needs one"
    )


class TicketsConfig(Strict):
    """`tickets:`: turning events into grid tickets (dedup, routing, SLA, storm control, dispatch)."""

    enabled: bool = Field(True, description="open tickets from events; false: events are only stored")
    routing_file: Path = Field(
        Path("config/routing.yaml"), description="category -> team, SLAs, escalation chain, category groups"
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the ticket store; default sqlite under storage.data_dir "
        "(tickets.sqlite, WAL); postgresql+psycopg://... when several gateways share the work",
    )
    dedup_radius_m: float = Field(
        50.0, ge=0, description="events of one category (or group) this close join one ticket"
    )
    correlation_window_s: float = Field(
        900.0, ge=0, description="a nearby event joins an open ticket last seen at most this long ago"
    )
    reopen_window_s: float = Field(
        86_400.0, ge=0, description="a problem recurring this soon after a ticket ended reopens it"
    )
    clear_hold_s: float = Field(
        60.0,
        ge=0,
        description="every event of a ticket must stay cleared this long before it auto-resolves "
        "(damps flapping sensors)",
    )
    offline_grace_s: float = Field(
        120.0, ge=0, description="after the broker (re)connects, device_offline waits this long for a ticket"
    )
    offline_settle_s: float = Field(
        30.0,
        ge=0,
        description="device_offline waits this long before opening a ticket, so an offline parent "
        "(edge box) arriving a little later groups its children",
    )
    rate_limit_per_grid_per_min: int = Field(
        30, ge=1, description="new tickets per grid per minute; the excess is queued, never dropped"
    )
    update_coalesce_s: float = Field(
        30.0, ge=0, description="at most one count-only `updated` notification per ticket this often"
    )
    tick_s: float = Field(1.0, gt=0, le=60, description="how often SLA timers and holds are checked")
    max_events_per_ticket: int = Field(
        500, ge=1, description="events kept as evidence rows per ticket; later ones only add to count"
    )
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="external grid platforms that get every matching ticket change"
    )
    robots: list[RobotConfig] = Field(
        default_factory=list, description="WeCom / DingTalk / Feishu group robots: a card per matching change"
    )
    public_base_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="the dashboard's address as people open it (https://grid.example.cn); robot cards "
        "link to {public_base_url}/#ticket={id}; none: cards carry no link",
    )
    reminders: RemindersConfig = RemindersConfig()
    quiet_hours: QuietHoursConfig | None = Field(
        None, description="nightly window in which non-urgent tickets do not page; none: always page"
    )

    def url(self, storage: StorageConfig) -> str:
        """The database URL: `database_url`, or SQLite in the data dir."""
        return self.database_url or f"sqlite:///{storage.data_dir / 'tickets.sqlite'}"


def _one_secret_of(value: SecretStr | None, env: str | None, file: Path | None) -> str | None:
    """The secret from whichever of value / environment variable / file is given; None if none is."""
    if env is not None:
        return os.environ.get(env, "").strip() or None
    secret = _secret_from(value, file)
    return (secret or "").strip() or None


class PushSourceConfig(Strict):
    """One operator platform pushing over HTTP to `/ingest/<platform>/<secret>` (docs/platforms.md)."""

    enabled: bool = Field(False, description="serve this platform's push route")
    secret: SecretStr | None = Field(
        None, description="the URL path segment registered in the platform's console (prefer secret_env)"
    )
    secret_env: str | None = Field(None, description="environment variable holding the path secret")
    secret_file: Path | None = Field(None, description="file whose first line is the path secret")
    rate_limit_per_s: float = Field(
        500.0, gt=0, description="pushes per second from one source address; beyond the burst: 429"
    )
    rate_burst: int = Field(2000, ge=1, description="pushes one source may send at once above the rate")

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> PushSourceConfig:
        given = [x for x in (self.secret, self.secret_env, self.secret_file) if x is not None]
        if len(given) > 1:
            raise ValueError("give at most one of secret, secret_env or secret_file")
        if self.enabled and not given:
            raise ValueError(
                "enabled needs the URL path secret: give secret_env (or secret_file, or secret), "
                "16 or more random characters"
            )
        return self

    def path_secret(self) -> str | None:
        return _one_secret_of(self.secret, self.secret_env, self.secret_file)


class OneNetConfig(PushSourceConfig):
    """OneNET's HTTP push: signed with the instance's token, encrypted in secure mode."""

    token: SecretStr | None = Field(
        None, description="the push instance's token: signatures are checked when set (prefer token_env)"
    )
    token_env: str | None = Field(None, description="environment variable holding the token")
    token_file: Path | None = Field(None, description="file whose first line is the token")
    aes_key: SecretStr | None = Field(
        None,
        description="secure mode's 16-character AES key: `msg` is decrypted when set (prefer aes_key_env)",
    )
    aes_key_env: str | None = Field(None, description="environment variable holding the AES key")
    aes_key_file: Path | None = Field(None, description="file whose first line is the AES key")

    @model_validator(mode="after")
    def _one_token_and_key(self) -> OneNetConfig:
        for name in ("token", "aes_key"):
            given = [getattr(self, f"{name}{s}") for s in ("", "_env", "_file")]
            if len([x for x in given if x is not None]) > 1:
                raise ValueError(f"give at most one of {name}, {name}_env or {name}_file")
        return self

    def token_value(self) -> str | None:
        return _one_secret_of(self.token, self.token_env, self.token_file)

    def aes_key_value(self) -> str | None:
        return _one_secret_of(self.aes_key, self.aes_key_env, self.aes_key_file)


class PlatformsConfig(Strict):
    """`platforms:`: operator platforms that push device messages over HTTP (CTWing, OneNET)."""

    ctwing: PushSourceConfig = PushSourceConfig()
    onenet: OneNetConfig = OneNetConfig()
    dedup_ttl_s: float = Field(
        6 * 3600.0,
        ge=3 * 3600.0,
        description="a push's key is remembered this long (kept across restarts), so the platform's "
        "retries are stored once: CTWing retries 3 times, OneNET 16 times over 2 h 45 min",
    )
    dedup_max_keys: int = Field(
        2_000_000, ge=1000, description="keys remembered at most; the oldest go first beyond it"
    )
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, le=16 * 1024 * 1024, description="largest push body accepted (413 beyond)"
    )


class EnvFirstSettings(BaseSettings):
    """Settings read from a YAML file and overridden by `GRIDGATE_*` environment variables."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment wins over the file, so one YAML serves several deployments
        return env_settings, init_settings, file_secret_settings


class GatewayConfig(EnvFirstSettings):
    """`config/gateway.yaml`: everything the central gateway needs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    broker: BrokerConfig = BrokerConfig()
    influx: InfluxConfig = InfluxConfig()
    storage: StorageConfig = StorageConfig()
    api: APIConfig = APIConfig()
    devices_file: Path = Path("config/devices.yaml")
    grids_file: Path | None = Path("config/grids.geojson")
    fallback_grid: TopicLevel = Field("unassigned", description="grid of a point inside no polygon")
    maintenance_team: TopicLevel = Field("maintenance", description="default team for device faults")
    vendor_topics: list[VendorTopic] = []
    lorawan: LoRaWANConfig = LoRaWANConfig()
    limits: LimitsConfig = LimitsConfig()
    ingest: IngestConfig = IngestConfig()
    cluster: ClusterConfig = ClusterConfig()
    offline_check_s: float = Field(5.0, gt=0, description="how often silent devices are looked for")
    tickets: TicketsConfig = TicketsConfig()
    auth: AuthConfig = AuthConfig()
    open311: Open311Config = Open311Config()
    map: MapConfig = MapConfig()
    platforms: PlatformsConfig = PlatformsConfig()
    timezone: str = Field(
        "Asia/Shanghai",
        description="the city's IANA time zone: quiet hours, weekly maintenance windows and local times "
        "are read in it",
    )
    hygiene: HygieneConfig = Field(
        default_factory=HygieneConfig, description="cause mutes symptoms, maintenance windows (alert hygiene)"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as Asia/Shanghai") from exc
        return v

    @model_validator(mode="after")
    def _no_open_api_on_the_network(self) -> GatewayConfig:
        if open_api_exposure(self) is not None and not self.auth.allow_open:
            raise ValueError(
                f"api.host {self.api.host!r} is not a loopback address and auth.tokens is empty: "
                "whoever reaches the API from this machine or through a proxy on it could read and change "
                "tickets as admin; add auth.tokens, bind api.host to 127.0.0.1, or set auth.allow_open: true"
            )
        return self

    def all_vendor_topics(self) -> list[VendorTopic]:
        """`vendor_topics` and the LoRaWAN presets `lorawan:` turns on: every topic routed to a device."""
        return [*self.vendor_topics, *self.lorawan.vendor_topics()]


LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def open_api_exposure(cfg: GatewayConfig) -> str | None:
    """A warning when the API listens beyond loopback with no tokens configured; None otherwise."""
    if not cfg.api.enabled or cfg.auth.tokens or not cfg.auth.open_on_localhost:
        return None
    host = cfg.api.host.strip("[]")
    try:
        loopback = host.lower() in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a host name: it may resolve to anything
    if loopback:
        return None
    return (
        f"the API listens on {cfg.api.host}:{cfg.api.port} with no auth.tokens: anyone who reaches it from "
        "this machine or through a reverse proxy on it can read and change tickets as admin "
        "(other clients get 401); add auth.tokens before exposing it"
    )


def resolve_path(value: Path, config_file: Path) -> Path:
    """Where a relative path written in (or defaulted for) `config_file` points.

    Tried in order: beside the file, the file's name beside it (`config/routing.yaml` next to an
    `/etc/gridgate/gateway.yaml`), the project above it (a `config/` folder in a checkout), the working
    directory. None existing: beside the file, so an error names the full path looked for.
    """
    if value.is_absolute():
        return value
    folder = config_file.resolve().parent
    for candidate in (folder / value, folder / value.name, folder.parent / value, value):
        if candidate.exists():
            return candidate
    return folder / value


def resolve_paths(cfg: GatewayConfig, config_file: Path) -> GatewayConfig:
    """The config's file paths resolved against the config file (`resolve_path`).

    A default routing file that exists nowhere is left as it is: the gateway then runs on built-in
    routing defaults, with a warning.
    """
    updates: dict[str, Any] = {}
    for name in ("devices_file", "grids_file"):
        value = getattr(cfg, name)
        if value is not None:
            updates[name] = resolve_path(value, config_file)
    routing = resolve_path(cfg.tickets.routing_file, config_file)
    if routing.exists() or "routing_file" in cfg.tickets.model_fields_set:
        updates["tickets"] = cfg.tickets.model_copy(update={"routing_file": routing})
    return cfg.model_copy(update=updates)


def load_gateway_config(path: str | Path | None) -> GatewayConfig:
    """Load `gateway.yaml` (or only defaults and environment when `path` is None)."""
    data: Any = {}
    if path is not None:
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(path, ["top level must be a mapping of keys (broker:, influx:, ...)"])
    try:
        cfg = GatewayConfig(**data)
    except ValidationError as exc:
        raise describe_validation_error(path or "environment", exc) from exc
    if path is not None:
        cfg = resolve_paths(cfg, Path(path))
    return cfg
