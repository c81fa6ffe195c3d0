"""Which grid (and micro-grid) contains a point: GeoJSON polygons in a shapely STRtree."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from gridgate.config import ConfigError, describe_validation_error
from gridgate.topics import TopicLevel


class GridProperties(BaseModel):
    """The `properties` of one GeoJSON feature in grids.geojson."""

    model_config = ConfigDict(extra="allow")

    id: TopicLevel = Field(description="grid or micro-grid id, unique in the file (a level of alert topics)")
    name: str = ""
    parent: TopicLevel | None = Field(None, description="set on a micro-grid: the id of its grid")
    grid_head: str | None = None
    leader: str | None = None
    workers: list[str] = []
    teams: dict[str, TopicLevel] = Field(default_factory=dict, description="category -> team overrides")


@dataclass(frozen=True, slots=True)
class GridMatch:
    grid_id: str
    micro_grid_id: str | None
    fallback: bool = False


CACHE_MAX = 65_536  # distinct positions remembered by `locate` (devices and cameras do not move)


@dataclass
class GridIndex:
    fallback_grid: str
    grids: dict[str, GridProperties] = field(default_factory=dict)
    _grid_ids: list[str] = field(default_factory=list)
    _micro_ids: list[str] = field(default_factory=list)
    _grid_tree: shapely.STRtree | None = None
    _micro_tree: shapely.STRtree | None = None
    _cache: dict[tuple[float, float], GridMatch] = field(default_factory=dict, repr=False)

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
        shapely.prepare(grid_geoms + micro_geoms)  # exact point tests reuse the prepared polygons
        index._grid_tree = shapely.STRtree(grid_geoms) if grid_geoms else None
        index._micro_tree = shapely.STRtree(micro_geoms) if micro_geoms else None
        return index

    def __len__(self) -> int:
        return len(self.grids)

    @staticmethod
    def _first(tree: shapely.STRtree | None, ids: list[str], lat: float, lon: float) -> str | None:
        if tree is None:
            return None
        # bounding boxes from the tree, then an exact test on prepared polygons without a Point object
        hits = tree.query(shapely.Point(lon, lat))
        if not len(hits):
            return None
        geoms = tree.geometries
        for i in sorted(int(h) for h in hits):
            if shapely.intersects_xy(geoms[i], lon, lat):
                return ids[i]
        return None

    def locate(self, lat: float, lon: float) -> GridMatch:
        """The grid and micro-grid containing (lat, lon); the fallback grid (flagged) if none does."""
        key = (lat, lon)
        match = self._cache.get(key)
        if match is not None:
            return match
        match = self._locate(lat, lon)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = match
        return match

    def _locate(self, lat: float, lon: float) -> GridMatch:
        micro = self._first(self._micro_tree, self._micro_ids, lat, lon)
        if micro is not None:
            parent = self.grids[micro].parent
            assert parent is not None
            return GridMatch(parent, micro)
        grid = self._first(self._grid_tree, self._grid_ids, lat, lon)
        if grid is not None:
            return GridMatch(grid, None)
        return GridMatch(self.fallback_grid, None, fallback=True)

    def locate_many(self, points: Sequence[tuple[float, float]]) -> list[GridMatch]:
        """`locate` for many (lat, lon) at once: one vectorised tree query per level."""
        n = len(points)
        if n == 0:
            return []
        coords = np.asarray(points, dtype=float).reshape(n, 2)
        geoms = shapely.points(coords[:, 1], coords[:, 0])
        micro = self._bulk(self._micro_tree, geoms, n)
        grid = self._bulk(self._grid_tree, geoms, n)
        out: list[GridMatch] = []
        for m, g in zip(micro.tolist(), grid.tolist(), strict=True):
            if m >= 0:
                mid = self._micro_ids[m]
                parent = self.grids[mid].parent
                assert parent is not None
                out.append(GridMatch(parent, mid))
            elif g >= 0:
                out.append(GridMatch(self._grid_ids[g], None))
            else:
                out.append(GridMatch(self.fallback_grid, None, fallback=True))
        return out

    @staticmethod
    def _bulk(tree: shapely.STRtree | None, geoms: np.ndarray, n: int) -> np.ndarray:
        """Per point, the lowest index of a polygon containing it, or -1."""
        best = np.full(n, -1, dtype=np.int64)
        if tree is None:
            return best
        point_idx, poly_idx = tree.query(geoms, predicate="intersects")
        if len(point_idx):
            # lowest polygon index per point, as `locate` picks: sort by (point, polygon), keep the first
            order = np.lexsort((poly_idx, point_idx))
            p, q = point_idx[order], poly_idx[order]
            first = np.ones(len(p), dtype=bool)
            first[1:] = p[1:] != p[:-1]
            best[p[first]] = q[first]
        return best
