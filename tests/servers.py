"""Real servers for tests: Mosquitto, InfluxDB 1.x and VictoriaMetrics on free loopback ports.

Each runs from a temp dir with a generated config, is stopped by its own PID (SIGTERM, then
SIGKILL), and can be stopped and started again on the same port and data (to test outages).
Also MQTT helpers: `pub()` shells out to mosquitto_pub; `Collector` subscribes with paho-mqtt.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

__all__ = [
    "INFLUXD",
    "MOSQUITTO",
    "MOSQUITTO_PUB",
    "POSTGRES",
    "VICTORIA",
    "Collector",
    "InfluxDB1",
    "Message",
    "Mosquitto",
    "PostgreSQL",
    "ServerError",
    "VictoriaMetrics",
    "free_port",
    "pub",
    "wait_until",
]


def _which(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((f for f in fallbacks if os.access(f, os.X_OK)), None)


MOSQUITTO = _which("mosquitto", "/usr/sbin/mosquitto")
MOSQUITTO_PUB = _which("mosquitto_pub", "/usr/bin/mosquitto_pub")
INFLUXD = _which("influxd", "/usr/bin/influxd")
VICTORIA = _which("victoria-metrics", "/usr/bin/victoria-metrics")


def _pg_bin(name: str) -> str | None:
    # Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<major>/bin
    found = shutil.which(name)
    if found:
        return found
    for major in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        candidate = major / "bin" / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


POSTGRES = _pg_bin("postgres")
INITDB = _pg_bin("initdb")


class ServerError(RuntimeError):
    """A test server did not start; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    pred: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.05
) -> Any:
    """Poll `pred` until it returns something truthy (returned); exceptions count as not yet."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = pred()
            if result:
                return result
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{what} not reached after {timeout}s" + (f" (last error: {last!r})" if last else "")
            )
        time.sleep(interval)


def _http(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


class _Server:
    """A child process in its own session, with a temp dir, a log file and a fixed port."""

    name = "server"
    binary: str | None = None
    start_timeout = 30.0

    def __init__(self, base_dir: str | Path | None = None, port: int | None = None) -> None:
        if not self.binary:
            raise ServerError(f"{self.name} is not installed")
        self.dir = Path(tempfile.mkdtemp(prefix=f"gg-{self.name}-", dir=base_dir))
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / f"{self.name}.log"

    # subclasses: the command line, and whether it answers yet
    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def preexec(self) -> Callable[[], None] | None:
        """Run in the child before exec (e.g. drop root); None: nothing."""
        return None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        """Start (or start again on the same port and data) and wait until it answers."""
        if self.running:
            return self
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=self.preexec(),
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode} at start: {self.log_tail()}"
                )
            try:
                if self.ready():
                    return self
            except Exception:
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerError(
                    f"{self.name} not ready on port {self.port} after {self.start_timeout}s: "
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our process (only it, by PID), wait, then SIGKILL; the data dir stays."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def kill(self) -> None:
        """SIGKILL our process at once (a crash)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def close(self) -> None:
        """Stop and remove the temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} pid={self.pid}>"


# -- Mosquitto --------------------------------------------------------------------------------

MOSQUITTO_CONF = """\
# generated by tests/servers.py
per_listener_settings false
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 1000
max_queued_messages 1000000
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
connection_messages false
{extra}
"""


class Mosquitto(_Server):
    """Mosquitto on 127.0.0.1:port; `extra` lines are appended to the generated config."""

    name = "mosquitto"
    binary = MOSQUITTO
    start_timeout = 10.0

    def __init__(
        self, base_dir: str | Path | None = None, port: int | None = None, extra: Iterable[str] = ()
    ) -> None:
        super().__init__(base_dir, port)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(MOSQUITTO_CONF.format(port=self.port, extra="\n".join(extra)))

    def argv(self) -> list[str]:
        return [str(self.binary), "-c", str(self.conf)]

    def ready(self) -> bool:
        return _tcp_open(self.port)


def pub(
    mosquitto: Mosquitto,
    topic: str,
    payload: str | bytes,
    qos: int = 1,
    retain: bool = False,
    timeout: float = 10,
) -> None:
    """Publish one message with mosquitto_pub (payload on stdin, so any bytes go through)."""
    if not MOSQUITTO_PUB:
        raise ServerError("mosquitto_pub is not installed (apt-get install mosquitto-clients)")
    argv = [MOSQUITTO_PUB, "-h", mosquitto.host, "-p", str(mosquitto.port), "-t", topic, "-q", str(qos), "-s"]
    if retain:
        argv.append("-r")
    data = payload.encode() if isinstance(payload, str) else payload
    r = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise ServerError(
            f"mosquitto_pub to {topic} failed ({r.returncode}): {r.stderr.decode(errors='replace')}"
        )


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode(errors="replace")


class Collector:
    """Subscribe to topic filters (paho-mqtt 2.x) and collect every message, for assertions."""

    def __init__(
        self, host: str, port: int, topics: Iterable[str] | str, qos: int = 1, client_id: str = ""
    ) -> None:
        import paho.mqtt.client as mqtt

        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self.host, self.port = host, port

    @classmethod
    def on(cls, mosquitto: Mosquitto, topics: Iterable[str] | str, qos: int = 1) -> Collector:
        return cls(mosquitto.host, mosquitto.port, topics, qos)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reason_codes: Any, properties: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> Self:
        """Connect and return once the subscriptions are acknowledged."""
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"no SUBACK from {self.host}:{self.port} for {self.topics} in {timeout}s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def on_topic(self, topic_filter: str) -> list[Message]:
        """The messages so far whose topic matches an MQTT filter (`+` and `#` allowed)."""
        import paho.mqtt.client as mqtt

        with self._cond:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic_filter, m.topic)]

    def wait_for(self, predicate: Callable[[list[Message]], Any], timeout: float = 10.0) -> list[Message]:
        """Wait until `predicate(messages)` is truthy; returns the messages, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = [m.topic for m in self.messages[-10:]]
                    n = len(self.messages)
                    raise TimeoutError(f"condition not met in {timeout}s: {n} messages, last topics {topics}")
                self._cond.wait(remaining)
            return list(self.messages)

    def wait_count(self, n: int, topic_filter: str = "#", timeout: float = 10.0) -> list[Message]:
        """Wait until at least `n` messages matched `topic_filter`; returns those."""
        import paho.mqtt.client as mqtt

        self.wait_for(lambda ms: sum(mqtt.topic_matches_sub(topic_filter, m.topic) for m in ms) >= n, timeout)
        return self.on_topic(topic_filter)


# -- InfluxDB 1.x -----------------------------------------------------------------------------

INFLUX_CONF = """\
# generated by tests/servers.py (InfluxDB 1.x); unlisted settings keep their defaults
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth}
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  max-body-size = 0

[logging]
  level = "warn"
  suppress-logo = true

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[[graphite]]
  enabled = false
[[collectd]]
  enabled = false
[[opentsdb]]
  enabled = false
[[udp]]
  enabled = false
"""


class InfluxDB1(_Server):
    """influxd 1.x with every port moved to a free one and all data in a temp dir."""

    name = "influxd"
    binary = INFLUXD
    start_timeout = 30.0

    def __init__(
        self, base_dir: str | Path | None = None, port: int | None = None, auth: bool = False
    ) -> None:
        super().__init__(base_dir, port)
        self.rpc_port = free_port()
        self.conf = self.dir / "influxdb.conf"
        self.conf.write_text(
            INFLUX_CONF.format(
                http_port=self.port, rpc_port=self.rpc_port, dir=self.dir, auth="true" if auth else "false"
            )
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [str(self.binary), "run", "-config", str(self.conf)]

    def ready(self) -> bool:
        return _http("GET", f"{self.url}/ping", timeout=2)[0] == 204

    def query(self, q: str, db: str | None = None, epoch: str = "ns") -> dict[str, Any]:
        """Run InfluxQL (POST /query); returns the JSON answer; raises on an error in it."""
        params = {"q": q, "epoch": epoch}
        if db:
            params["db"] = db
        status, body = _http(
            "POST",
            f"{self.url}/query",
            urllib.parse.urlencode(params).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        data: dict[str, Any] = json.loads(body or b"{}")
        errors = [r["error"] for r in data.get("results", []) if "error" in r]
        if status >= 300 or "error" in data or errors:
            raise ServerError(f"InfluxQL {q!r}: HTTP {status}: {data.get('error') or errors}")
        return data

    def rows(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """A SELECT's rows as dicts (column -> value, plus the GROUP BY tags), series after series."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, db).get("results", []):
            for series in result.get("series", []):
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    out.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return out

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def write(self, lines: str | Iterable[str], db: str, precision: str = "ns") -> None:
        """Write line protocol directly (for fixtures)."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        q = urllib.parse.urlencode({"db": db, "precision": precision})
        status, answer = _http("POST", f"{self.url}/write?{q}", body.encode())
        if status != 204:
            raise ServerError(f"write to {db}: HTTP {status}: {answer.decode(errors='replace')}")


# -- VictoriaMetrics --------------------------------------------------------------------------


class VictoriaMetrics(_Server):
    """victoria-metrics single node; accepts InfluxDB line protocol on /write and /api/v2/write."""

    name = "victoria-metrics"
    binary = VICTORIA
    start_timeout = 30.0

    def __init__(self, base_dir: str | Path | None = None, port: int | None = None) -> None:
        super().__init__(base_dir, port)
        self.data_dir = self.dir / "data"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]

    def ready(self) -> bool:
        return _http("GET", f"{self.url}/health", timeout=2)[0] == 200

    def force_flush(self) -> None:
        """Make just-written samples searchable."""
        _http("GET", f"{self.url}/internal/force_flush")

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """All series matching a selector, as /api/v1/export JSON lines: metric, values, timestamps (ms)."""
        self.force_flush()
        # up to a day ahead: devices with fast clocks send points slightly in the future
        q = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(int(time.time()) + 86_400)})
        status, body = _http("GET", f"{self.url}/api/v1/export?{q}")
        if status != 200:
            raise ServerError(f"export {match}: HTTP {status}: {body.decode(errors='replace')}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def count_series(self, match: str = '{__name__!=""}') -> int:
        return len(self.export(match))

    def count_samples(self, match: str = '{__name__!=""}') -> int:
        return sum(len(s["values"]) for s in self.export(match))

    def query(self, promql: str, time_s: float | None = None) -> dict[str, Any]:
        """An instant /api/v1/query; returns the JSON `data`."""
        params = {"query": promql}
        if time_s is not None:
            params["time"] = str(time_s)
        self.force_flush()
        status, body = _http("GET", f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise ServerError(f"query {promql!r}: HTTP {status}: {data}")
        return dict(data["data"])


# -- PostgreSQL -------------------------------------------------------------------------------


class PostgreSQL(_Server):
    """A private PostgreSQL cluster (initdb in a temp dir, trust auth on 127.0.0.1:port).

    PostgreSQL refuses to run as root: as root, initdb and postgres run as the `postgres` user
    (Debian's package creates it) and the temp dir is given to that user. Durability is off
    (fsync, synchronous_commit): test data need not survive a power cut, and tests run faster.
    """

    name = "postgres"
    binary = POSTGRES
    start_timeout = 30.0
    user = "gridgate"

    def __init__(self, base_dir: str | Path | None = None, port: int | None = None) -> None:
        if not INITDB:
            raise ServerError("initdb is not installed (apt-get install postgresql)")
        self._ids: tuple[int, int] | None = None
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServerError(
                    "running as root needs the `postgres` user (apt-get install postgresql)"
                ) from exc
            self._ids = (pw.pw_uid, pw.pw_gid)
            base_dir = None  # pytest's temp dirs are root-only (0700): use a fresh one under /tmp
        super().__init__(base_dir, port)
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "run"
        self.socket_dir.mkdir()
        if self._ids is not None:
            for path in (self.dir, self.socket_dir):
                os.chown(path, *self._ids)
            os.chown(self.log_path.parent, *self._ids)
        r = subprocess.run(
            [INITDB, "-D", str(self.data_dir), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            timeout=120,
            check=False,
            preexec_fn=self.preexec(),
        )
        if r.returncode != 0:
            raise ServerError(f"initdb failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")

    def preexec(self) -> Callable[[], None] | None:
        ids = self._ids
        if ids is None:
            return None

        def demote() -> None:
            os.setgid(ids[1])
            os.setuid(ids[0])

        return demote

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for a database on this cluster."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def _connect(self, database: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=database,
            autocommit=True,
            connect_timeout=2,
        )

    def ready(self) -> bool:
        if not _tcp_open(self.port):
            return False
        with self._connect() as conn:
            conn.execute("SELECT 1")
        return True

    def create_database(self, name: str) -> str:
        """A new, empty database (dropped first if it exists); returns its SQLAlchemy URL."""
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
