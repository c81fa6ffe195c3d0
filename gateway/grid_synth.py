"""A synthetic sub-district of grids and micro-grids, for the demo and tests.

Real grids are drawn along streets and compounds; these are jittered rectangles in a real
coordinate range, enough to exercise point-in-polygon lookups and per-grid routing.
"""

from __future__ import annotations

import random
from typing import Any

DEFAULT_BBOX = (30.250, 120.130, 30.290, 120.180)  # lat_min, lon_min, lat_max, lon_max


def synth_grids(
    rows: int = 6,
    cols: int = 8,
    micro_per_side: int = 2,
    bbox: tuple[float, float, float, float] = DEFAULT_BBOX,
    seed: int = 7,
) -> dict[str, Any]:
    """rows x cols grids, each cut into micro_per_side^2 micro-grids; a GeoJSON FeatureCollection."""
    rng = random.Random(seed)
    lat0, lon0, lat1, lon1 = bbox
    dlat, dlon = (lat1 - lat0) / rows, (lon1 - lon0) / cols
    features: list[dict[str, Any]] = []
    for r in range(rows):
        for c in range(cols):
            gid = f"G{r * cols + c + 1:03d}"
            g_lat, g_lon = lat0 + r * dlat, lon0 + c * dlon
            features.append(
                _feature(
                    {
                        "id": gid,
                        "name": f"Grid {r * cols + c + 1}",
                        "grid_head": f"head-{gid}",
                        "leader": f"leader-{gid}",
                        "workers": [f"worker-{gid}-{i}" for i in range(1, 4)],
                    },
                    g_lat,
                    g_lon,
                    dlat,
                    dlon,
                )
            )
            m_lat, m_lon = dlat / micro_per_side, dlon / micro_per_side
            for i in range(micro_per_side):
                for j in range(micro_per_side):
                    mid = f"{gid}-M{i * micro_per_side + j + 1}"
                    # a little jitter inside the grid keeps micro-grids from being perfect tiles
                    shrink = rng.uniform(0.0, 0.02)
                    features.append(
                        _feature(
                            {
                                "id": mid,
                                "name": f"Micro-grid {mid}",
                                "parent": gid,
                                "workers": [f"worker-{mid}"],
                            },
                            g_lat + i * m_lat + shrink * m_lat,
                            g_lon + j * m_lon + shrink * m_lon,
                            m_lat * (1 - 2 * shrink),
                            m_lon * (1 - 2 * shrink),
                        )
                    )
    return {"type": "FeatureCollection", "features": features}


def _feature(props: dict[str, Any], lat: float, lon: float, dlat: float, dlon: float) -> dict[str, Any]:
    ring = [[lon, lat], [lon + dlon, lat], [lon + dlon, lat + dlat], [lon, lat + dlat], [lon, lat]]
    return {
        "type": "Feature",
        "properties": props,
        "geometry": {"type": "Polygon", "coordinates": [[[round(x, 6), round(y, 6)] for x, y in ring]]},
    }
