"""Bearer tokens with roles, for the API, the WebSocket stream and Open311 `api_key`.

Roles: `admin` (everything), `command_centre` (reads, acts on every ticket, verifies/cancels),
`team` (acts on its team's tickets), `grid_worker` (acts on tickets of its grids), `reporter`
(reads, files Open311 reports: a citizen app's key) and `read_only`. Every role reads.

With no tokens configured the API is open read-write to clients on this machine only (the demo),
which is logged at start; every other client gets 401. Behind a reverse proxy every client looks
local: configure tokens there.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from gateway.tickets.desk import Action
from gateway.tickets.models import Ticket
from gridgate.config import AuthConfig, ConfigError

log = logging.getLogger("gridgate.api.auth")

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
ACTING_ROLES = frozenset({"admin", "command_centre", "team", "grid_worker"})
# verifying a fix (close) and calling a ticket off (cancel) is the command centre's: the loop's
# "supervise & assess" step is never done by the people who did the work
SUPERVISOR_ACTIONS = frozenset({Action.close, Action.cancel})
SUPERVISOR_ROLES = frozenset({"admin", "command_centre"})
# who sees a citizen's contact details: the dispatchers who may have to call back; not the
# teams and workers in the street, not read-only screens, not the citizen app's own key
PERSONAL_DATA_ROLES = frozenset({"admin", "command_centre"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a configured token, or the local user of an open demo."""

    name: str
    role: str
    team: str | None = None
    grids: frozenset[str] = field(default_factory=frozenset)

    @property
    def can_write(self) -> bool:
        return self.role in ACTING_ROLES

    @property
    def sees_personal_data(self) -> bool:
        """Citizens' contact details (Open311 email, phone, names): only who must call them back."""
        return self.role in PERSONAL_DATA_ROLES

    @property
    def can_report(self) -> bool:
        return self.role in ACTING_ROLES or self.role == "reporter"

    def refuse_action(self, ticket: Ticket, action: Action) -> str | None:
        """Why this principal may not do `action` on `ticket`, or None if it may."""
        if not self.can_write:
            return f"token {self.name!r} has role {self.role}, which may only read"
        if action in SUPERVISOR_ACTIONS and self.role not in SUPERVISOR_ROLES:
            return f"{action.value} is for the command centre or an admin, not role {self.role}"
        if self.role == "team" and ticket.team != self.team:
            return (
                f"ticket {ticket.id} belongs to team {ticket.team!r}; "
                f"token {self.name!r} acts for team {self.team!r}"
            )
        if self.role == "grid_worker" and not ({ticket.grid_id, ticket.micro_grid_id} & self.grids):
            return (
                f"ticket {ticket.id} is in grid {ticket.grid_id!r}"
                + (f" / micro-grid {ticket.micro_grid_id!r}" if ticket.micro_grid_id else "")
                + f"; token {self.name!r} acts in {', '.join(sorted(self.grids))}"
            )
        return None


LOCAL_ADMIN = Principal("local", "admin")


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    """Maps a presented token to its principal; secrets are kept only as SHA-256 digests."""

    def __init__(self, cfg: AuthConfig) -> None:
        self.cfg = cfg
        self._by_digest: dict[bytes, Principal] = {}
        problems = []
        for i, t in enumerate(cfg.tokens):
            try:
                secret = t.secret()
            except (ValueError, OSError) as exc:
                problems.append(f"auth.tokens[{i}]: {exc}")
                continue
            digest = _digest(secret)
            if digest in self._by_digest:
                problems.append(f"auth.tokens[{i}]: the same secret as {self._by_digest[digest].name!r}")
            self._by_digest[digest] = Principal(t.name, t.role, t.team, frozenset(t.grids))
        if problems:
            raise ConfigError("gateway config", problems)

    @property
    def open(self) -> bool:
        """No tokens configured: local clients come in as admin (if allowed)."""
        return not self._by_digest

    def describe(self) -> str:
        if not self.open:
            return f"{len(self._by_digest)} bearer tokens"
        if self.cfg.open_on_localhost:
            return "open to localhost only (no auth.tokens configured)"
        return "closed (no auth.tokens and open_on_localhost is false)"

    def authenticate(self, token: str | None, client_host: str | None) -> Principal:
        """The principal of a token (or of a local client of an open demo); AuthError otherwise."""
        if self.open:
            if self.cfg.open_on_localhost and client_host in LOCAL_HOSTS:
                return LOCAL_ADMIN
            raise AuthError(
                401,
                "no API tokens are configured: this gateway only answers clients on its own machine; "
                "add auth.tokens to gateway.yaml",
            )
        if not token:
            raise AuthError(401, "missing bearer token (send `Authorization: Bearer <token>`)")
        digest = _digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise AuthError(401, "unknown or revoked token")


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def client_host(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def current_principal(request: Request) -> Principal:
    """Dependency: the caller, or 401 with a `WWW-Authenticate: Bearer` challenge."""
    auth: Authenticator = request.app.state.auth
    try:
        return auth.authenticate(bearer(request), client_host(request))
    except AuthError as exc:
        raise HTTPException(exc.status, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


def writer(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """Dependency: a caller that may act on tickets (403 for read-only roles)."""
    if not principal.can_write:
        raise HTTPException(403, f"token {principal.name!r} has role {principal.role}, which may only read")
    return principal


def supervisor(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """Dependency: the command centre or an admin (403 for every other role)."""
    if principal.role not in SUPERVISOR_ROLES:
        raise HTTPException(
            403,
            f"token {principal.name!r} has role {principal.role}: this is for the command centre or an admin",
        )
    return principal


Reader = Annotated[Principal, Depends(current_principal)]
Writer = Annotated[Principal, Depends(writer)]
Supervisor = Annotated[Principal, Depends(supervisor)]
