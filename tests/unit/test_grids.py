import pytest

from gateway.grid_synth import synth_grids
from gateway.grids import GridIndex
from gridgate.config import ConfigError


def square(gid: str, lon: float, lat: float, size: float, parent: str | None = None) -> dict:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    props = {"id": gid} | ({"parent": parent} if parent else {})
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def test_point_gets_grid_and_micro_grid() -> None:
    doc = {
        "type": "FeatureCollection",
        "features": [square("G1", 120.0, 30.0, 0.01), square("G1-M1", 120.0, 30.0, 0.005, parent="G1")],
    }
    index = GridIndex.from_geojson(doc, "unassigned")
    m = index.locate(30.002, 120.002)
    assert (m.grid_id, m.micro_grid_id, m.fallback) == ("G1", "G1-M1", False)
    m = index.locate(30.008, 120.008)
    assert (m.grid_id, m.micro_grid_id) == ("G1", None)


def test_point_in_no_grid_goes_to_fallback() -> None:
    index = GridIndex.from_geojson(
        {"type": "FeatureCollection", "features": [square("G1", 120, 30, 0.01)]}, "fb"
    )
    m = index.locate(10.0, 10.0)
    assert (m.grid_id, m.fallback) == ("fb", True)


def test_errors_name_the_feature_and_the_fix() -> None:
    doc = {
        "type": "FeatureCollection",
        "features": [
            square("G1", 120, 30, 0.01),
            square("G1", 121, 30, 0.01),
            square("M", 120, 30, 0.001, "NOPE"),
        ],
    }
    with pytest.raises(ConfigError) as exc:
        GridIndex.from_geojson(doc, "fb", source="grids.geojson")
    text = exc.value.render()
    assert "features[1].properties.id" in text and "used twice" in text
    assert "parent 'NOPE'" in text


def test_synthetic_sub_district_is_realistic() -> None:
    index = GridIndex.from_geojson(synth_grids(), "fb")
    grids = [g for g in index.grids.values() if g.parent is None]
    micro = [g for g in index.grids.values() if g.parent is not None]
    assert len(grids) >= 40 and len(micro) >= 150
    assert all(g.grid_head and g.leader and g.workers for g in grids)
