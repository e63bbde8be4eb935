"""Who is signed in to the console, and as what: the credentials it takes, its sessions, its one-time sign-in codes.

Two roles: ``view`` looks (pages, JSON, streams), ``act`` also acts (terminate, re-run: every POST action). The
stack's ingest token is the operator's credential (``act``); ``CONSOLE_VIEW_TOKEN`` the viewer's. A browser never
holds either: signing in exchanges a credential (or a one-time code got with one) for a random session id, sent
back as an HttpOnly cookie.

Sessions and codes live in the console's state store (``Keys``: ``app.SignInKeys`` over the sidecar), so every
replica of the console honours a session another started, a sign-out on one ends it on all, and a code works once
whichever replica redeems it. The keys (Dapr prefixes them ``console||``) name a secret by its SHA-256, never
itself (reading the store gives no session):
- ``taskfan-console~session~<sha256>``: a session's role and end, with a TTL of the session's length;
- ``taskfan-console~code~<sha256>``: a code's role and end, with a TTL of ``CODE_TTL_S``;
- ``taskfan-console~redeemed~<sha256>``: the code was redeemed, written with first-write concurrency (create if
  absent) so two replicas redeeming it at once cannot both win; it outlives the code (a TTL of ``CODE_TTL_S``).
The stored end is checked on every read as well as the TTL. Each replica remembers the keys it wrote, oldest first,
and past its bound deletes its oldest (a flood of sign-ins is bounded: N replicas hold at most N x the bound).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)


class Role(StrEnum):
    VIEW = "view"
    ACT = "act"

    def allows(self, wanted: Role) -> bool:
        return self is Role.ACT or wanted is Role.VIEW


MAX_SESSIONS = 1000  # sessions one replica started, at most: past it its oldest ends (a flood of logins is bounded)
CODE_TTL_S = 60.0  # a sign-in link works once, within this
MAX_CODES = 100  # unused sign-in codes one replica issued, at most (the oldest is deleted)
STORE_WAIT_S = 5.0  # a sign-in's store call not answered within this is a 503 (the sync client sets no deadline)
MAX_SECRET_CHARS = 200  # a cookie or code longer than this is no session or code of ours (not even hashed)
SECRET = re.compile(r"[A-Za-z0-9_-]+")  # secrets.token_urlsafe's alphabet: anything else is not ours, unread
KEY_PREFIX = "taskfan-console"  # as the history's (``history.KEY_PREFIX``): "~" is outside the batch-id alphabet

Clock = Callable[[], float]


class Keys(Protocol):
    """Where the sessions and codes are kept: the console's state store. Every call raises when the store does
    not answer."""

    def get(self, key: str) -> bytes | None:
        """The value, None if there is no such key (or its TTL ran out)."""
        ...

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        """Write it, to expire ``ttl_s`` after."""
        ...

    def create(self, key: str, value: bytes, ttl_s: int) -> bool:
        """Write it only if there is no such key (first-write concurrency): False when there is."""
        ...

    def delete(self, key: str) -> None:
        ...


class SignInUnavailable(RuntimeError):
    """The state store did not answer: who is signed in cannot be told now (a 503, not a sign-out)."""


class MemoryKeys:
    """Keys in this process's memory, each until its TTL on ``clock``: for one console alone and the unit tests (a
    restart signs everyone out; replicas do not share it). The console itself keeps them in its state store."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, tuple[bytes, float]] = {}

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._live(key)

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        with self._lock:
            self._put(key, value, ttl_s)

    def create(self, key: str, value: bytes, ttl_s: int) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._put(key, value, ttl_s)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _live(self, key: str) -> bytes | None:
        item = self._items.get(key)
        return item[0] if item is not None and item[1] > self.clock() else None

    def _put(self, key: str, value: bytes, ttl_s: int) -> None:
        now = self.clock()
        for old in [k for k, (_, ends) in self._items.items() if ends <= now]:  # as Redis expires them
            del self._items[old]
        self._items[key] = (value, now + ttl_s)


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


class Grant(BaseModel):
    """A session's or a code's value in the store."""

    model_config = ConfigDict(frozen=True)

    role: Role
    ends: float  # epoch seconds: every replica reads the same end


def ours(secret: str) -> bool:
    """Whether ``secret`` could be an id or code this console gave (else it is not read from the store at all)."""
    return 0 < len(secret) <= MAX_SECRET_CHARS and SECRET.fullmatch(secret) is not None


def digest(secret: str) -> str:
    """What names a secret in a key: its SHA-256 (any string gives a safe key; the secret never becomes one)."""
    return hashlib.sha256(secret.encode(errors="surrogatepass")).hexdigest()


class _Written:
    """The keys this replica wrote, oldest first, with their ends: past ``limit``, the oldest to delete."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._ends: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str, ends: float) -> list[str]:
        """Remember ``key``; the oldest keys beyond the limit, forgotten here, for the caller to delete."""
        with self._lock:
            now = self.clock()
            for old in [k for k, end in self._ends.items() if end <= now]:  # their TTL deletes them
                del self._ends[old]
            self._ends[key] = ends
            beyond = []
            while len(self._ends) > self.limit:
                beyond.append(self._ends.popitem(last=False)[0])
            return beyond

    def forget(self, key: str) -> None:
        with self._lock:
            self._ends.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ends)


class _Grants:
    """Random secrets to grants in the store, each until ``ttl_s`` after it was given; this replica's at most
    ``limit``. ``wait_s``: how long the web app waits for one of its calls."""

    kind = ""

    def __init__(self, keys: Keys, ttl_s: float, limit: int, clock: Clock, wait_s: float) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.clock = clock
        self.written = _Written(limit, clock)

    def key(self, secret: str) -> str:
        return f"{KEY_PREFIX}~{self.kind}~{digest(secret)}"

    @property
    def ttl(self) -> int:
        return max(1, math.ceil(self.ttl_s))

    def _give(self, role: Role) -> str:
        secret = secrets.token_urlsafe(32)
        key, ends = self.key(secret), self.clock() + self.ttl_s
        try:
            self.keys.put(key, Grant(role=role, ends=ends).model_dump_json().encode(), self.ttl)
        except Exception as exc:  # noqa: BLE001 - whatever the sidecar's client raised
            raise _unavailable(self.kind, exc) from exc
        for old in self.written.add(key, ends):
            self._delete(old, quiet=True)
        return secret

    def _read(self, secret: str) -> Grant | None:
        if not ours(secret):
            return None
        key = self.key(secret)
        try:
            data = self.keys.get(key)
        except Exception as exc:  # noqa: BLE001
            raise _unavailable(self.kind, exc) from exc
        if data is None:
            return None
        try:
            grant = Grant.model_validate_json(data)
        except ValidationError:
            log.warning("an unreadable sign-in key", extra={"kind": self.kind})
            return None
        return grant if grant.ends > self.clock() else None  # the stored end, as well as the TTL

    def _delete(self, key: str, quiet: bool = False) -> None:
        self.written.forget(key)
        try:
            self.keys.delete(key)
        except Exception as exc:  # noqa: BLE001
            if not quiet:
                raise _unavailable(self.kind, exc) from exc
            log.warning("could not delete a sign-in key (its TTL will)", extra={"kind": self.kind,
                                                                               "error": _said(exc)})

    def __len__(self) -> int:
        """How many this replica gave that have not ended (nor been deleted here)."""
        return len(self.written)


class Sessions(_Grants):
    """Signed-in browsers: session id -> role, until ``ttl_s`` after signing in (not extended by use). Each call
    is one store call (blocking); ``SignInUnavailable`` when the store does not answer."""

    kind = "session"

    def __init__(self, keys: Keys, ttl_s: float, limit: int = MAX_SESSIONS, clock: Clock = time.time,
                 wait_s: float = STORE_WAIT_S) -> None:
        super().__init__(keys, ttl_s, limit, clock, wait_s)

    def start(self, role: Role) -> str:
        """A new session's id."""
        return self._give(role)

    def role_of(self, session_id: str) -> Role | None:
        """The session's role, None if it is no session (never was, ended, signed out, or not shaped as one)."""
        grant = self._read(session_id)
        return grant.role if grant else None

    def end(self, session_id: str) -> None:
        """Sign-out: the session is deleted, on every replica at once."""
        if ours(session_id):
            self._delete(self.key(session_id))


class SignInCodes(_Grants):
    """One-time sign-in codes (``taskfan console``'s link): each exchanged once for a session of its role, within
    ``ttl_s``, whichever replica redeems it."""

    kind = "code"

    def __init__(self, keys: Keys, ttl_s: float = CODE_TTL_S, limit: int = MAX_CODES,
                 clock: Clock = time.time, wait_s: float = STORE_WAIT_S) -> None:
        super().__init__(keys, ttl_s, limit, clock, wait_s)

    def issue(self, role: Role) -> str:
        return self._give(role)

    def redeem(self, code: str) -> Role | None:
        """The code's role, and the code is spent; None if it was never issued, is used, or has expired. Of two
        redeeming it at once (two replicas), one wins: the first to create its ``redeemed`` key."""
        grant = self._read(code)
        if grant is None:
            return None
        name = digest(code)
        try:
            # Not an ETag-guarded delete: Dapr's Redis store deletes (or writes) a key that is gone already with
            # any ETag and says nothing, so the second of two could win too. A first write fails on a key that exists.
            won = self.keys.create(f"{KEY_PREFIX}~redeemed~{name}", b"redeemed", self.ttl)
        except Exception as exc:  # noqa: BLE001
            raise _unavailable(self.kind, exc) from exc
        if not won:
            return None
        self._delete(self.key(code), quiet=True)  # spent: its `redeemed` key outlives it anyway
        return grant.role


def _unavailable(kind: str, exc: Exception) -> SignInUnavailable:
    """What the browser is told stays general; the store's error is logged here."""
    log.warning("the state store did not answer for a sign-in", extra={"kind": kind, "error": _said(exc)})
    return SignInUnavailable("the console's state store did not answer")


def _said(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
