"""Settings behind the pages: the map's datum and tiles, the photo route's body limit, role actions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.api.auth import Principal
from gateway.api.body import DEFAULT_MAX, MULTIPART_OVERHEAD, TICKET_ACTION_MAX, body_limit
from gateway.api.dashboard import role_actions
from gateway.api.pages import content_security_policy
from gateway.tickets.desk import Action
from gridgate.config import GatewayConfig, MapConfig


def test_map_settings_name_what_is_wrong() -> None:
    assert MapConfig().model_dump() == {
        "datum": "wgs84",
        "tiles": None,
        "tiles_attribution": "",
        "tiles_max_zoom": 19,
    }
    assert MapConfig(datum="gcj02", tiles="/tiles/{z}/{x}/{y}.png").tiles == "/tiles/{z}/{x}/{y}.png"
    with pytest.raises(ValidationError, match="datum"):
        GatewayConfig(map={"datum": "bd09"})
    with pytest.raises(ValidationError, match="tiles"):
        MapConfig(tiles="ftp://tiles.city.local/{z}/{x}/{y}.png")


def test_the_photo_route_takes_the_photo_limits_and_no_other_route_does() -> None:
    assert body_limit("/api/v1/tickets/01ABC/photos", 4 * 1024 * 1024) == 4 * 1024 * 1024 + MULTIPART_OVERHEAD
    assert body_limit("/api/v1/tickets/01ABC/resolve", 4 * 1024 * 1024) == TICKET_ACTION_MAX
    assert body_limit("/api/v1/tickets/01ABC/photos/extra", 4 * 1024 * 1024) == TICKET_ACTION_MAX
    assert body_limit("/api/v1/devices", 4 * 1024 * 1024) == DEFAULT_MAX


def test_role_actions_leave_verify_and_cancel_to_the_centre() -> None:
    assert role_actions(Principal("ro", "read_only")) == []
    assert role_actions(Principal("app", "reporter")) == []
    worker = role_actions(Principal("w", "grid_worker", grids=frozenset({"G1"})))
    assert Action.accept in worker and Action.close not in worker and Action.cancel not in worker
    assert set(role_actions(Principal("cc", "command_centre"))) == set(Action)


def test_the_pages_policy_admits_only_the_gateway_and_its_tile_server() -> None:
    assert "img-src 'self' blob: data:;" in content_security_policy(None)
    assert "img-src 'self' blob: data:;" in content_security_policy("/tiles/{z}/{x}/{y}.png")
    policy = content_security_policy("http://tiles.city.local:8081/{z}/{x}/{y}.png")
    assert "img-src 'self' blob: data: http://tiles.city.local:8081;" in policy
    assert "script-src" not in policy and "default-src 'self'" in policy  # scripts: the gateway's only
