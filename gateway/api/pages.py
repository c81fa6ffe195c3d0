"""The pages the gateway serves (`/`, `/m/`): static files from `gateway/static/`, with a policy.

The Content-Security-Policy lets a page load only from the gateway itself (and the configured
tile server's origin for map tiles): the pages work air-gapped by construction, since a script,
style or font from a CDN would be refused by the browser, and so is any script injected into a
page.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent.parent / "static"
mimetypes.add_type("application/manifest+json", ".webmanifest")  # the PWA manifest of /m/


def content_security_policy(tiles: str | None) -> str:
    """Only the gateway's own origin, blob: images (pictures fetched with the token), tiles."""
    tile_origin = ""
    if tiles and not tiles.startswith("/"):
        parts = urlsplit(tiles)
        tile_origin = f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'self'; "
        f"img-src 'self' blob: data:{tile_origin}; "
        "style-src 'self' 'unsafe-inline'; "  # Leaflet positions its layers with inline styles
        "connect-src 'self'; "
        "worker-src 'self'; manifest-src 'self'; "
        "object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
    )


class Pages(StaticFiles):
    """StaticFiles whose every answer carries the policy and `nosniff`."""

    def __init__(self, tiles: str | None) -> None:
        super().__init__(directory=STATIC, html=True)
        self.headers = {
            "Content-Security-Policy": content_security_policy(tiles),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(self.headers)
        return response
