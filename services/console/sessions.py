"""Who is signed in to the console, and as what: the credentials it takes, its sessions, its one-time sign-in codes.

Two roles: ``view`` looks (pages, JSON, streams), ``act`` also acts (terminate, re-run: every POST action). The
stack's ingest token is the operator's credential (``act``); ``CONSOLE_VIEW_TOKEN`` the viewer's. A browser never
holds either: signing in exchanges a credential (or a one-time code got with one) for a random session id, kept
here in the console's memory with its role and its end, and sent back as an HttpOnly cookie. A console restart
signs every browser out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    VIEW = "view"
    ACT = "act"

    def allows(self, wanted: Role) -> bool:
        return self is Role.ACT or wanted is Role.VIEW


MAX_SESSIONS = 1000  # signed-in browsers at most: past it the oldest session ends (a flood of logins is bounded)
CODE_TTL_S = 60.0  # a sign-in link works once, within this
MAX_CODES = 100  # unused sign-in codes at most (the oldest is dropped)

Clock = Callable[[], float]


class Credentials:
    """The long-lived credentials the console takes (as ``Authorization: Bearer`` or the sign-in form): the
    operator's (the stack's ingest token) and the viewer's. None at all: a stack with its locks off
    (SECURITY=off), where anyone acts."""

    def __init__(self, act_token: str, view_token: str = "") -> None:
        self.tokens = [(token.encode(), role) for token, role in ((act_token, Role.ACT), (view_token, Role.VIEW))
                       if token]

    @property
    def open(self) -> bool:
        return not self.tokens

    def role_of(self, sent: str) -> Role | None:
        """The role ``sent`` grants, None if it is no credential of this console (compared in constant time)."""
        if self.open:
            return Role.ACT
        found = None
        for token, role in self.tokens:  # every one compared, whichever matches
            if hmac.compare_digest(sent.strip().encode(), token):
                found = role
        return found


@dataclass(frozen=True)
class Grant:
    role: Role
    ends: float  # on the console's monotonic clock


class _Table:
    """Random ids to grants, at most ``limit`` of them (the oldest dropped first), each until its end."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self.clock = clock
        self.grants: OrderedDict[str, Grant] = OrderedDict()

    def add(self, role: Role, ttl_s: float) -> str:
        self._forget_ended()
        key = secrets.token_urlsafe(32)
        self.grants[key] = Grant(role, self.clock() + ttl_s)
        while len(self.grants) > self.limit:
            self.grants.popitem(last=False)
        return key

    def get(self, key: str) -> Grant | None:
        grant = self.grants.get(key)
        if grant is not None and grant.ends <= self.clock():
            del self.grants[key]
            return None
        return grant

    def pop(self, key: str) -> Grant | None:
        grant = self.get(key)
        self.grants.pop(key, None)
        return grant

    def _forget_ended(self) -> None:
        now = self.clock()
        for key in [k for k, g in self.grants.items() if g.ends <= now]:
            del self.grants[key]

    def __len__(self) -> int:
        return len(self.grants)


class Sessions:
    """Signed-in browsers: session id -> role, until ``ttl_s`` after signing in (not extended by use)."""

    def __init__(self, ttl_s: float, limit: int = MAX_SESSIONS, clock: Clock = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.table = _Table(limit, clock)

    def start(self, role: Role) -> str:
        return self.table.add(role, self.ttl_s)

    def role_of(self, session_id: str) -> Role | None:
        grant = self.table.get(session_id) if session_id else None
        return grant.role if grant else None

    def end(self, session_id: str) -> None:
        self.table.pop(session_id)

    def __len__(self) -> int:
        return len(self.table)


class SignInCodes:
    """One-time sign-in codes (``taskfan console``'s link): each exchanged once for a session of its role, within
    ``ttl_s``."""

    def __init__(self, ttl_s: float = CODE_TTL_S, limit: int = MAX_CODES, clock: Clock = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.table = _Table(limit, clock)

    def issue(self, role: Role) -> str:
        return self.table.add(role, self.ttl_s)

    def redeem(self, code: str) -> Role | None:
        """The code's role, and the code is gone; None if it was never issued, is used, or has expired."""
        grant = self.table.pop(code) if code else None
        return grant.role if grant else None
