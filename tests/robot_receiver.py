"""A local stand-in for qyapi.weixin.qq.com, oapi.dingtalk.com and open.feishu.cn (a real HTTP server).

It keeps every request, answers like the vendor (HTTP 200 with `errcode` / `code` in the JSON), and
plays scripted error answers per vendor first. Signatures are checked by the tests, not here.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

OK = {"wecom": {"errcode": 0, "errmsg": "ok"}, "dingtalk": {"errcode": 0, "errmsg": "ok"}}
OK["feishu"] = {"code": 0, "msg": "success", "data": {}}


@dataclass
class Request:
    vendor: str
    path: str
    query: dict[str, str]
    body: dict[str, Any]
    raw: bytes


def vendor_of(path: str) -> str:
    if path.startswith("/cgi-bin/webhook/send"):
        return "wecom"
    if path.startswith("/robot/send"):
        return "dingtalk"
    if path.startswith("/open-apis/bot/v2/hook/"):
        return "feishu"
    return "unknown"


class RobotReceiver:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.always: dict[str, dict[str, Any]] = {}  # a credential -> the answer it always gets
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                vendor = vendor_of(url.path)
                credential = query.get("key") or query.get("access_token") or url.path.rsplit("/", 1)[-1]
                with receiver.lock:
                    receiver.requests.append(Request(vendor, url.path, query, json.loads(raw), raw))
                    if credential in receiver.always:
                        answer = receiver.always[credential]
                    elif receiver.script[vendor]:
                        answer = receiver.script[vendor].popleft()
                    else:
                        answer = OK.get(vendor, {"errcode": 404, "errmsg": "no such path"})
                body = json.dumps(answer).encode()
                self.send_response(200)  # the vendors answer 200 with the error in the JSON
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def of(self, vendor: str, credential: str | None = None) -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.vendor == vendor
                and (credential is None or credential in (r.query.get("key"), r.query.get("access_token")))
            ]

    def __enter__(self) -> RobotReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
