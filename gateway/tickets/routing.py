"""`routing.yaml`: which team fixes which category, within which SLA, escalated to whom.

Pure logic once loaded: `RoutingConfig.route()` answers for one category in one grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from gateway.grids import GridProperties
from gridgate.config import ConfigError, describe_validation_error, read_yaml
from gridgate.topics import TopicLevel


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EscalationRole(StrEnum):
    """Who a ticket escalates to, in the field's four levels (cadres are not on the chain)."""

    worker = "worker"
    grid_head = "grid_head"
    leader = "leader"


class SLA(_Strict):
    """Service levels, in seconds from the ticket's creation (or reopening)."""

    accept_s: float = Field(60, gt=0, description="someone takes the order within this")
    on_site_s: float = Field(600, gt=0, description="someone is on site within this")
    resolve_s: float = Field(86_400, gt=0, description="the problem is fixed within this")


class SLAOverride(_Strict):
    """Any of the SLA fields; unset ones come from the team, then from `defaults.sla`."""

    accept_s: float | None = Field(None, gt=0, description="someone takes the order within this")
    on_site_s: float | None = Field(None, gt=0, description="someone is on site within this")
    resolve_s: float | None = Field(None, gt=0, description="the problem is fixed within this")

    def over(self, base: SLA) -> SLA:
        return base.model_copy(update=self.model_dump(exclude_none=True))


class Defaults(_Strict):
    sla: SLA = Field(default_factory=SLA, description="service levels of every category unless overridden")
    auto_cancel: bool = Field(
        False, description="cancel (rather than resolve) a ticket whose events clear before anyone accepted"
    )
    escalation: list[EscalationRole] = Field(
        default_factory=lambda: [EscalationRole.worker, EscalationRole.grid_head, EscalationRole.leader],
        min_length=1,
        description="the chain a breached SLA climbs, one level per breach; the first is the assignee",
    )


class TeamSpec(_Strict):
    name: str = Field("", description="human name shown on tickets")
    sla: SLAOverride = Field(default_factory=SLAOverride, description="this team's own service levels")


class CategorySpec(_Strict):
    team: TopicLevel | None = Field(None, description="team that fixes it (a key under `teams:`)")
    name: str = Field("", description="human name; the Open311 service_name")
    description: str = Field("", description="what the category means, for people and Open311")
    code: TopicLevel | None = Field(
        None,
        description="the city's own classification code (e.g. a GB/T 30428 event code), used in "
        "webhooks and as the Open311 service_code (a URL path segment); gridgate ships none",
    )
    sla: SLAOverride = Field(default_factory=SLAOverride, description="service levels of this category")
    auto_cancel: bool | None = Field(None, description="overrides defaults.auto_cancel")


class RoutingConfig(_Strict):
    """The whole of routing.yaml."""

    defaults: Defaults = Field(default_factory=Defaults, description="what every category gets")
    fallback_team: TopicLevel = Field("command_centre", description="team of a category routed nowhere else")
    fault_team: TopicLevel = Field(
        "maintenance", description="team of device faults with no route of their own"
    )
    teams: dict[TopicLevel, TeamSpec] = Field(
        default_factory=dict,
        description="team id -> its settings (each id is a level of `{p}/tickets/{team}`)",
    )
    categories: dict[TopicLevel, CategorySpec] = Field(
        default_factory=dict, description="event kind -> its route (team, SLA, code)"
    )
    groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="categories that are one problem when seen close together (a camera's `ponding` "
        "and a gauge's `water_high`): they correlate onto one ticket",
    )

    _groups_by_member: dict[str, str] | None = PrivateAttr(None)

    def problems(self) -> list[str]:
        """Cross-field mistakes, one line each: where, what, and the fix."""
        out: list[str] = []
        known = sorted(self.teams)

        def check_team(where: str, team: str | None) -> None:
            if team is not None and self.teams and team not in self.teams:
                out.append(
                    f"{where}: unknown team {team!r} (add it under `teams:` or use one of {', '.join(known)})"
                )

        check_team("fallback_team", self.fallback_team)
        check_team("fault_team", self.fault_team)
        for name, spec in self.categories.items():
            check_team(f"categories.{name}.team", spec.team)
        seen: dict[str, str] = {}
        for group, members in self.groups.items():
            if len(members) < 2:
                out.append(f"groups.{group}: a group needs at least two categories (got {members})")
            for m in members:
                if m in seen:
                    out.append(
                        f"groups.{group}: {m!r} is already in group {seen[m]!r} (a category joins one group)"
                    )
                seen[m] = group
        return out

    def known_teams(self) -> set[str]:
        """Every team this file names: under `teams:`, as a category's team, fallback and fault team."""
        named = {spec.team for spec in self.categories.values() if spec.team is not None}
        return set(self.teams) | named | {self.fallback_team, self.fault_team}

    # ---- lookups ------------------------------------------------------------------------------

    def group_of(self, category: str) -> str:
        """The correlation group of a category: its group name, or the category itself."""
        return self._group_index.get(category, category)

    @property
    def _group_index(self) -> dict[str, str]:
        if self._groups_by_member is None:
            self._groups_by_member = {m: g for g, members in self.groups.items() for m in members}
        return self._groups_by_member

    def route(
        self,
        category: str,
        *,
        is_fault: bool = False,
        grid: GridProperties | None = None,
        micro_grid: GridProperties | None = None,
        team_hint: str | None = None,
    ) -> Route:
        """Team, SLA and code for a category in a grid.

        Team: a micro-grid's or grid's `teams` override, then the device's own maintenance team
        (faults), then the category's team, then `fault_team` (faults) or `fallback_team`.
        """
        spec = self.categories.get(category)
        team = None
        for props in (micro_grid, grid):
            if props is not None and category in props.teams:
                team = props.teams[category]
                break
        if team is None and is_fault:
            team = team_hint
        if team is None and spec is not None:
            team = spec.team
        if team is None:
            team = self.fault_team if is_fault else self.fallback_team
        sla = self.defaults.sla
        team_spec = self.teams.get(team)
        if team_spec is not None:
            sla = team_spec.sla.over(sla)
        if spec is not None:
            sla = spec.sla.over(sla)
        auto_cancel = self.defaults.auto_cancel
        if spec is not None and spec.auto_cancel is not None:
            auto_cancel = spec.auto_cancel
        return Route(
            category=category,
            group=self.group_of(category),
            team=team,
            sla=sla,
            auto_cancel=auto_cancel,
            code=spec.code if spec is not None else None,
            chain=tuple(self.defaults.escalation),
        )


@dataclass(frozen=True, slots=True)
class Route:
    category: str
    group: str
    team: str
    sla: SLA
    auto_cancel: bool
    code: str | None
    chain: tuple[EscalationRole, ...]


def people(
    chain: tuple[EscalationRole, ...], grid: GridProperties | None, micro_grid: GridProperties | None
) -> list[str | None]:
    """The person at each level of the chain for a grid (None where the grid names nobody)."""
    out: list[str | None] = []
    for role in chain:
        if role is EscalationRole.worker:
            workers = (micro_grid.workers if micro_grid is not None else []) or (
                grid.workers if grid is not None else []
            )
            out.append(workers[0] if workers else None)
        elif role is EscalationRole.grid_head:
            out.append(grid.grid_head if grid is not None else None)
        else:
            out.append(grid.leader if grid is not None else None)
    return out


DEFAULT_ROUTING_FILE = Path("config/routing.yaml")


def load_routing(path: str | Path) -> RoutingConfig:
    """Read and check routing.yaml; ConfigError names the file, the field and the fix."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(path, ["top level must be a mapping (defaults:, teams:, categories:, groups:)"])
    try:
        cfg = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(path, exc) from exc
    problems = cfg.problems()
    if problems:
        raise ConfigError(path, problems)
    return cfg
