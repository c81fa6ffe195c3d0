"""Which grid (and micro-grid) contains a point: GeoJSON polygons in a shapely STRtree."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from gridgate.config import ConfigError, describe_validation_error


class GridProperties(BaseModel):
    """The `properties` of one GeoJSON feature in grids.geojson."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, description="grid or micro-grid id, unique in the file")
    name: str = ""
    parent: str | None = Field(None, description="set on a micro-grid: the id of its grid")
    grid_head: str | None = None
    leader: str | None = None
    workers: list[str] = []
    teams: dict[str, str] = Field(default_factory=dict, description="category -> team overrides")


@dataclass(frozen=True, slots=True)
class GridMatch:
    grid_id: str
    micro_grid_id: str | None
    fallback: bool = False


@dataclass
class GridIndex:
    fallback_grid: str
    grids: dict[str, GridProperties] = field(default_factory=dict)
    _grid_ids: list[str] = field(default_factory=list)
    _micro_ids: list[str] = field(default_factory=list)
    _grid_tree: shapely.STRtree | None = None
    _micro_tree: shapely.STRtree | None = None

    @classmethod
    def load(cls, path: str | Path | None, fallback_grid: str) -> GridIndex:
        """Load grids.geojson; None or a missing setting gives an index where all is fallback."""
        if path is None:
            return cls(fallback_grid)
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(p, ["file not found; set grids_file to your grids.geojson"]) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(p, [f"line {exc.lineno}: not valid JSON ({exc.msg})"]) from exc
        return cls.from_geojson(doc, fallback_grid, source=p)

    @classmethod
    def from_geojson(cls, doc: Any, fallback_grid: str, source: str | Path = "grids.geojson") -> GridIndex:
        if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
            raise ConfigError(source, ["top level must be a GeoJSON FeatureCollection"])
        index = cls(fallback_grid)
        grid_geoms: list[BaseGeometry] = []
        micro_geoms: list[BaseGeometry] = []
        problems: list[str] = []
        for i, feature in enumerate(doc.get("features") or []):
            where = f"features[{i}]"
            try:
                props = GridProperties.model_validate(feature.get("properties") or {})
            except ValidationError as exc:
                problems.extend(
                    f"{where}.properties.{p}" for p in describe_validation_error(source, exc).problems
                )
                continue
            try:
                geom = shape(feature["geometry"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problems.append(f"{where}.geometry: not a GeoJSON geometry ({exc})")
                continue
            if geom.geom_type not in ("Polygon", "MultiPolygon"):
                problems.append(
                    f"{where}.geometry: {geom.geom_type} given, grids are Polygon or MultiPolygon"
                )
                continue
            if props.id in index.grids:
                problems.append(f"{where}.properties.id: {props.id!r} is used twice (ids must be unique)")
                continue
            index.grids[props.id] = props
            if props.parent is None:
                index._grid_ids.append(props.id)
                grid_geoms.append(geom)
            else:
                index._micro_ids.append(props.id)
                micro_geoms.append(geom)
        for mid in index._micro_ids:
            parent = index.grids[mid].parent
            if parent not in index.grids:
                problems.append(f"micro-grid {mid!r}: parent {parent!r} is not a grid id in this file")
        if problems:
            raise ConfigError(source, problems)
        index._grid_tree = shapely.STRtree(grid_geoms) if grid_geoms else None
        index._micro_tree = shapely.STRtree(micro_geoms) if micro_geoms else None
        return index

    def __len__(self) -> int:
        return len(self.grids)

    @staticmethod
    def _first(tree: shapely.STRtree | None, ids: list[str], point: BaseGeometry) -> str | None:
        if tree is None:
            return None
        hits = tree.query(point, predicate="intersects")
        return ids[int(min(hits))] if len(hits) else None

    def locate(self, lat: float, lon: float) -> GridMatch:
        """The grid and micro-grid containing (lat, lon); the fallback grid if none does."""
        point = shapely.Point(lon, lat)
        micro = self._first(self._micro_tree, self._micro_ids, point)
        if micro is not None:
            parent = self.grids[micro].parent
            assert parent is not None
            return GridMatch(parent, micro)
        grid = self._first(self._grid_tree, self._grid_ids, point)
        if grid is not None:
            return GridMatch(grid, None)
        return GridMatch(self.fallback_grid, None, fallback=True)
