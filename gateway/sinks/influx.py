"""InfluxDB sinks: the v1 `/write` API (httpx) and the v2 `/api/v2/write` API (influxdb-client)."""

from __future__ import annotations

import logging

import httpx
import orjson

from gateway.sinks.base import SinkError, influx_refusal, safe_url, short
from gateway.sinks.lineprotocol import encode, encode_v1

__all__ = ["InfluxV1Sink", "InfluxV2Sink"]

log = logging.getLogger("gridgate.sinks")

#: client errors that are about the request's timing, not its content
_RETRYABLE_4XX = frozenset({408, 429})
#: client errors about configuration (auth, database missing): an operator fixes them, data waits
_CONFIG_4XX = frozenset({401, 403, 404})
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def _server_message(body: str) -> str:
    """InfluxDB answers errors as {"error": "..."} (v1) or {"code":..,"message": "..."} (v2)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or body)
    return body


def _classify(status: int, message: str, lines: list[str], where: str, url: str) -> SinkError:
    """Turn an HTTP error answer into a SinkError; a refusal says which lines it names."""
    text = f"{where}: HTTP {status}: {short(message)}"
    if status >= 500 or status in _RETRYABLE_4XX or status in _CONFIG_4XX:
        return SinkError(text, retryable=True, url=url, status=status)
    refused, resend = influx_refusal(message, lines)
    return SinkError(text, retryable=False, url=url, status=status, refused=refused, resend=resend)


class InfluxV1Sink:
    """InfluxDB 1.x `POST /write?db=&rp=&precision=ns` over one keep-alive connection."""

    format = "lineprotocol"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        create_database: bool = True,
    ) -> None:
        self.base = url.rstrip("/")
        self.database = database
        self.url = f"{safe_url(self.base)}/write?db={database}"
        self._params = {"db": database, "precision": "ns"}
        if retention_policy:
            self._params["rp"] = retention_policy
            self.url += f"&rp={retention_policy}"
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._client = httpx.Client(
            auth=auth,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
        )
        self._create_database = create_database

    encode = staticmethod(encode_v1)

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode()
        try:
            r = self._client.post(f"{self.base}/write", params=self._params, content=body, headers=_TEXT)
        except httpx.HTTPError as exc:
            raise SinkError(
                f"POST {self.url}: {type(exc).__name__}: {short(str(exc)) or 'no answer'}",
                retryable=True,
                url=self.url,
            ) from exc
        if r.status_code == 204 or r.status_code == 200:
            return
        message = _server_message(r.text)
        if r.status_code == 404 and "database not found" in message and self._create_database:
            self._try_create_database()
        raise _classify(r.status_code, message, lines, f"POST {self.url}", self.url)

    def _try_create_database(self) -> None:
        """Like Telegraf: create the database once if it is missing (harmless without the right)."""
        self._create_database = False
        try:
            r = self._client.post(f"{self.base}/query", data={"q": f'CREATE DATABASE "{self.database}"'})
            log.warning(
                "event=sink_create_database url=%s database=%s status=%s",
                safe_url(self.base),
                self.database,
                r.status_code,
            )
        except httpx.HTTPError as exc:
            log.warning(
                "event=sink_create_database_failed url=%s database=%s error=%s fix=%r",
                safe_url(self.base),
                self.database,
                type(exc).__name__,
                "create the database or grant the user CREATE rights",
            )

    def close(self) -> None:
        self._client.close()


class InfluxV2Sink:
    """InfluxDB 2.x/3.x, 1.8+ and VictoriaMetrics through influxdb-client's `/api/v2/write`."""

    format = "lineprotocol"

    def __init__(
        self, url: str, *, token: str | None, org: str, bucket: str, timeout_s: float = 10.0
    ) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.org = org
        self.bucket = bucket
        self.url = f"{safe_url(url.rstrip('/'))}/api/v2/write?org={org}&bucket={bucket}"
        # retries=False: the runner owns retrying; the client must fail fast and say why
        self._client = InfluxDBClient(
            url=url, token=token or "", org=org, timeout=int(timeout_s * 1000), retries=False
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    encode = staticmethod(encode)

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            self._write.write(self.bucket, self.org, record=lines, write_precision=WritePrecision.NS)
        except ApiException as exc:
            status = int(exc.status or 0)
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            message = _server_message(body) or str(exc.reason or "")
            if status == 0:
                raise SinkError(f"POST {self.url}: {short(message)}", retryable=True, url=self.url) from exc
            raise _classify(status, message, lines, f"POST {self.url}", self.url) from exc
        except (Urllib3Error, OSError) as exc:
            raise SinkError(
                f"POST {self.url}: {type(exc).__name__}: {short(str(exc)) or 'no answer'}",
                retryable=True,
                url=self.url,
            ) from exc

    def close(self) -> None:
        self._write.close()
        self._client.close()
