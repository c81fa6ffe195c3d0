"""The API table of docs/reference.md, generated from the FastAPI app itself.

    python -m gateway.api.reference docs/reference.md   # rewrite the table between its markers

tests/unit/test_reference_doc.py fails when the table in the doc differs from this one, so a new
route cannot ship undocumented.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Mount

from gateway.api import GatewayView, create_app
from gateway.api.auth import Authenticator
from gridgate.config import GatewayConfig

BEGIN = "<!-- api-routes:begin (generated: python -m gateway.api.reference docs/reference.md) -->"
END = "<!-- api-routes:end -->"


@dataclass(frozen=True, slots=True)
class RouteDoc:
    method: str
    path: str
    parameters: tuple[str, ...]
    what: str


def reference_app() -> FastAPI:
    """The gateway's app with every optional router on; routes are declared without reading the view."""
    cfg = GatewayConfig()
    push = SimpleNamespace(platforms=["ctwing", "onenet"])  # every platform's push routes
    return create_app(cast(GatewayView, SimpleNamespace(cfg=cfg, auth=Authenticator(cfg.auth), push=push)))


def _walk(routes: list[Any], prefix: str = "") -> list[Any]:
    out: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI >= 0.165 wraps included routers
        if inner is not None:
            out += _walk(inner.routes, prefix + route.include_context.prefix)
        else:
            out.append((prefix, route))
    return out


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


def route_docs(app: FastAPI) -> list[RouteDoc]:
    """Every route the app serves, FastAPI's own /docs, /redoc and /openapi.json excepted."""
    schema = app.openapi()["paths"]
    own = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    docs: list[RouteDoc] = []
    for prefix, route in _walk(app.routes):
        path = prefix + route.path
        if path in own:
            continue
        if isinstance(route, APIRoute):
            for method in sorted(route.methods - {"HEAD"}):
                op = schema.get(path, {}).get(method.lower(), {})
                params = tuple(
                    f"{p['name']}" for p in op.get("parameters", []) if p.get("in") in ("query", "path")
                )
                what = _first_line(op.get("description") or route.description) or op.get("summary", "")
                docs.append(RouteDoc(method, path, params, what))
        elif isinstance(route, APIWebSocketRoute):
            docs.append(RouteDoc("WS", path, (), _first_line(route.endpoint.__doc__)))
        elif isinstance(route, Mount):
            docs.append(RouteDoc("GET", path + "/{file}", (), f"static files under {path}/"))
    return docs


def markdown(app: FastAPI) -> str:
    rows = ["| method | path | parameters | what |", "| --- | --- | --- | --- |"]
    for d in route_docs(app):
        params = ", ".join(f"`{p}`" for p in d.parameters)
        rows.append(f"| {d.method} | `{d.path}` | {params} | {d.what} |")
    return "\n".join([BEGIN, *rows, END])


def rewrite(doc: Path, app: FastAPI) -> bool:
    """Replace the generated block of `doc`; True when it changed. ValueError without the markers."""
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(
            f"{doc}: the markers {BEGIN!r} and {END!r} are missing; add them where the table goes"
        )
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = head + markdown(app) + tail
    doc.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference.md")
    changed = rewrite(target, reference_app())
    print(f"{target}: API table {'rewritten' if changed else 'already up to date'}")
