"""The console's sessions and one-time codes as two replicas behind one Service see them: kept in the state store
(through the console's own adapter, ``SignInKeys``, over a fake of Dapr's Redis store), one read per request, a
store that does not answer, and cookies an intruder makes up."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.console.app import SignInKeys
from services.console.sessions import (
    CODE_TTL_S,
    MAX_SECRET_CHARS,
    MemoryKeys,
    Role,
    Sessions,
    SignInCodes,
    SignInUnavailable,
)
from tests.unit.fake_state import FakeDaprState, FakeSyncDapr
from tests.unit.test_console_doors import COOKIE, FROM_PAGE, OPERATOR, Clock, link, new_console, sign_in


class CountingDapr(FakeSyncDapr):
    """The fake store, counting its reads and noting whether each came from inside the event loop."""

    def __init__(self, state: FakeDaprState | None = None) -> None:
        super().__init__(state)
        self.reads = 0
        self.on_loop: list[bool] = []

    def get_state(self, store, key):
        self.reads += 1
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        return super().get_state(store, key)


class AwayDapr(FakeSyncDapr):
    """The sidecar up, its state store not answering (Redis down): every state call fails."""

    def __init__(self, state: FakeDaprState | None = None) -> None:
        super().__init__(state)
        self.away = False

    def _check(self) -> None:
        if self.away:
            raise RuntimeError("<_InactiveRpcError of RPC that terminated with: status = StatusCode.INTERNAL, "
                               "details = 'fail to get key: dial tcp 10.0.0.7:6379: connect: connection refused'>")

    def get_state(self, store, key):
        self._check()
        return super().get_state(store, key)

    def save_state(self, store, key, value, etag=None, options=None, state_metadata=None):
        self._check()
        return super().save_state(store, key, value, etag, options, state_metadata)

    def delete_state(self, store, key):
        self._check()
        return super().delete_state(store, key)


def replicas(clock: Clock | None = None, **sessions: Any) -> tuple[CountingDapr, TestClient, TestClient]:
    """Two console replicas over one state store (two sidecars of app id ``console`` share its keys)."""
    dapr = CountingDapr()
    clock = clock or Clock()
    return dapr, new_console(clock, dapr=dapr, **sessions), new_console(clock, dapr=dapr, **sessions)


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- every replica honours every session ------------------------------------------------------------------------


def test_a_session_started_on_one_replica_is_honoured_by_the_other_and_sign_out_on_either_ends_it_on_both() -> None:
    dapr, one, other = replicas()
    session = sign_in(one, "act")
    other.cookies.set(COOKIE, session)
    assert other.get("/api/batches").status_code == 200
    assert other.post("/batches/running/terminate", headers=FROM_PAGE).status_code == 200  # its role came along
    assert other.post("/logout", follow_redirects=False).status_code == 303
    one.cookies.set(COOKIE, session)
    assert one.get("/api/batches").status_code == 401  # at once: no replica caches a session
    assert not any("~session~" in key for key in dapr.state.items)


def test_the_store_holds_a_sessions_hash_with_its_role_end_and_ttl_never_the_id() -> None:
    clock = Clock()
    dapr, one, _ = replicas(clock, ttl_s=8 * 3600)
    session = sign_in(one, "view")
    key = f"taskfan-console~session~{sha(session)}"
    assert json.loads(dapr.state.items[key]) == {"role": "view", "ends": clock.now + 8 * 3600}
    assert dapr.state.ttls[key] == 8 * 3600  # Redis expires it; the stored end is checked on every read too
    assert not any(session in key or session.encode() in value for key, value in dapr.state.items.items())
    assert all(key.startswith("taskfan-console~") for key in dapr.state.items)  # "~": no batch id makes one


def test_a_request_with_a_session_cookie_costs_one_store_read_made_off_the_event_loop_and_others_none() -> None:
    dapr, one, _ = replicas()
    sign_in(one)
    dapr.reads, dapr.on_loop = 0, []
    assert one.get("/api/batches").status_code == 200
    assert dapr.reads == 1 and dapr.on_loop == [False]
    one.cookies.clear()
    for answer in (one.get("/api/batches"), one.get("/api/batches", headers=OPERATOR), one.get("/healthz"),
                   one.get("/static/console.js"), one.get("/login")):
        assert answer.status_code in (200, 401)
    assert dapr.reads == 1  # no cookie, a credential, or an open path: no read


# --- one-time codes: once, whichever replica ----------------------------------------------------------------------


def test_a_code_issued_by_one_replica_works_once_on_any() -> None:
    dapr, one, other = replicas()
    code_link = link(one, "act")
    code = code_link.split("=", 1)[1]
    assert dapr.state.ttls[f"taskfan-console~code~{sha(code)}"] == CODE_TTL_S
    assert other.get(code_link, follow_redirects=False).status_code == 303
    assert one.get(code_link, follow_redirects=False).status_code == 401
    assert other.get(code_link, follow_redirects=False).status_code == 401
    assert f"taskfan-console~code~{sha(code)}" not in dapr.state.items  # spent: deleted by the redeemer
    assert dapr.state.ttls[f"taskfan-console~redeemed~{sha(code)}"] == CODE_TTL_S  # its claim, until its TTL


def test_two_replicas_redeeming_one_code_at_once_one_wins() -> None:
    state = FakeDaprState()
    clock = Clock()
    winner = SignInCodes(SignInKeys(FakeSyncDapr(state)), clock=clock)  # type: ignore[arg-type]

    class Meanwhile(FakeSyncDapr):
        """The second replica: between its read of the code and its claim, the first redeems it whole."""

        def get_state(self, store, key):
            item = super().get_state(store, key)
            if "~code~" in key:
                assert winner.redeem(code) is Role.ACT
            return item

    code = winner.issue(Role.ACT)
    loser = SignInCodes(SignInKeys(Meanwhile(state)), clock=clock)  # type: ignore[arg-type]
    assert loser.redeem(code) is None  # it read the code, but the first wrote the claim first
    many = SignInCodes(MemoryKeys(clock), clock=clock)
    code = many.issue(Role.VIEW)
    start = threading.Barrier(8)
    won: list[Role | None] = []

    def redeem() -> None:
        start.wait()
        won.append(many.redeem(code))

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert won.count(Role.VIEW) == 1 and won.count(None) == 7


def test_the_adapter_tells_a_claim_taken_from_a_store_that_does_not_answer() -> None:
    dapr = AwayDapr()
    keys = SignInKeys(dapr)  # type: ignore[arg-type]
    assert keys.create("taskfan-console~redeemed~x", b"redeemed", 60) is True
    assert keys.create("taskfan-console~redeemed~x", b"redeemed", 60) is False  # first-write: it exists
    assert dapr.state.items["taskfan-console~redeemed~x"] == b"redeemed"
    dapr.away = True
    with pytest.raises(RuntimeError):  # not "taken": the caller answers 503, and the code is not spent
        keys.create("taskfan-console~redeemed~y", b"redeemed", 60)


# --- the bound on a flood of sign-ins -----------------------------------------------------------------------------


def test_each_replica_deletes_its_oldest_past_its_bound_so_the_store_holds_at_most_replicas_times_it() -> None:
    dapr, one, other = replicas(limit=3)
    firsts = [sign_in(one), sign_in(other)]
    for _ in range(9):
        sign_in(one)
        sign_in(other)
    assert sum("~session~" in key for key in dapr.state.items) == 6
    for session in firsts:
        one.cookies.set(COOKIE, session)
        assert one.get("/api/batches").status_code == 401  # its replica deleted it: gone for every replica
    codes = SignInCodes(MemoryKeys(), limit=5)
    issued = [codes.issue(Role.VIEW) for _ in range(50)]
    assert len(codes) == 5 and codes.redeem(issued[0]) is None and codes.redeem(issued[-1]) is Role.VIEW


def test_sessions_that_ended_leave_the_replicas_count_and_the_store_by_their_ttl() -> None:
    clock = Clock()
    keys = MemoryKeys(clock)
    sessions = Sessions(keys, 60, limit=10, clock=clock)
    ended = [sessions.start(Role.VIEW) for _ in range(5)]
    clock.now += 60
    assert sessions.role_of(ended[0]) is None
    fresh = sessions.start(Role.ACT)
    assert len(sessions) == 1 and len(keys) == 1 and sessions.role_of(fresh) is Role.ACT


def test_a_stored_end_is_checked_even_when_the_store_still_holds_the_key() -> None:
    clock = Clock()
    dapr = FakeSyncDapr()  # the fake keeps the TTL asked for, and expires nothing
    sessions = Sessions(SignInKeys(dapr), 60, clock=clock)  # type: ignore[arg-type]
    session = sessions.start(Role.ACT)
    clock.now += 60
    assert sessions.role_of(session) is None and dapr.state.items


# --- a store that does not answer ---------------------------------------------------------------------------------


def test_a_store_that_does_not_answer_is_a_503_saying_so_never_a_sign_out_nor_a_500() -> None:
    dapr = AwayDapr()
    client = new_console(dapr=dapr)
    session = sign_in(client, "act")
    spare = link(client)
    dapr.away = True
    for answer in (client.get("/api/batches"), client.get("/", follow_redirects=False),
                   client.post("/batches/running/terminate", headers=FROM_PAGE)):
        assert answer.status_code == 503, answer.text
        assert "state store did not answer" in answer.json()["error"] and answer.headers["retry-after"] == "5"
        assert "10.0.0.7" not in answer.text  # the store's own error is logged, not shown
        assert "set-cookie" not in answer.headers  # the browser keeps its session for when the store is back
    assert client.get("/healthz").status_code == 200 and client.get("/static/console.css").status_code == 200
    coded = client.get(spare, follow_redirects=False)
    assert coded.status_code == 503 and "not possible now" in coded.text and "Try again" in coded.text
    typed = client.post("/login", data={"token": "operator-s3cret-token"}, follow_redirects=False)
    assert typed.status_code == 503 and COOKIE not in typed.cookies
    asked = client.post("/login/code", headers=OPERATOR, json={"role": "view"})
    assert asked.status_code == 503 and "no sign-in link" in asked.json()["error"]
    out = client.post("/logout", follow_redirects=False)
    assert out.status_code == 503 and "not signed out" in out.json()["error"]
    client.cookies.clear()
    assert client.get("/api/batches").status_code == 401  # no cookie: no read, not signed in, as ever
    dapr.away = False
    client.cookies.set(COOKIE, session)
    assert client.get("/api/batches").status_code == 200  # the store is back: so is the session
    assert client.get(spare, follow_redirects=False).status_code == 303  # the code was not spent meanwhile
    with pytest.raises(SignInUnavailable):
        dapr.away = True
        Sessions(SignInKeys(dapr), 60).start(Role.VIEW)  # type: ignore[arg-type]


def test_a_store_that_hangs_is_a_503_after_a_bounded_wait_and_the_console_answers_others_meanwhile() -> None:
    release = threading.Event()

    class HungDapr(FakeSyncDapr):
        hung = False

        def get_state(self, store, key):
            if self.hung:
                release.wait(10)
            return super().get_state(store, key)

    dapr = HungDapr()
    client = new_console(dapr=dapr, wait_s=0.2)
    session = sign_in(client)
    dapr.hung = True
    try:
        answer = client.get("/api/batches")
        assert answer.status_code == 503 and "within 0.2 s" in answer.json()["error"]
        client.cookies.clear()
        assert client.get("/healthz").status_code == 200
    finally:
        release.set()
    dapr.hung = False
    client.cookies.set(COOKIE, session)
    assert client.get("/api/batches").status_code == 200


# --- cookies an intruder makes up ---------------------------------------------------------------------------------


HOSTILE = ["::", "a::b", "||", "console||taskfan-console~session~x", "taskfan-console~history", "x" * 10_000,
           "x" * (MAX_SECRET_CHARS + 1), "a\x00b", "\x00", "é" * 43, "Ω≈ç√", "../../etc", "*", "a b", "\ud800",
           "a\udfffb", "%00", '"quoted"']


@pytest.mark.parametrize("cookie", HOSTILE, ids=range(len(HOSTILE)))
def test_a_made_up_session_id_is_simply_not_signed_in(cookie: str) -> None:
    keys = MemoryKeys()
    sessions = Sessions(keys, 60)
    sessions.start(Role.ACT)
    assert sessions.role_of(cookie) is None
    sessions.end(cookie)  # a sign-out with it: nothing happens
    codes = SignInCodes(keys)
    assert codes.redeem(cookie) is None
    assert len(keys) == 1


def test_made_up_cookies_over_http_are_not_signed_in_and_the_absurd_ones_cost_no_read() -> None:
    dapr, client, _ = replicas()
    sign_in(client)
    client.cookies.clear()
    for cookie in [b"::", b"||", b"x" * 10_000, b"x" * 201, "é".encode() * 40, b"a%00b", b"\xff\xfe"]:
        dapr.reads = 0
        answer = client.get("/api/batches", headers={"cookie": COOKIE.encode() + b"=" + cookie})
        assert answer.status_code == 401, cookie[:20]
        assert dapr.reads == 0, cookie[:20]  # not shaped as an id of ours: the store is not asked
    dapr.reads = 0
    assert client.get("/api/batches", headers={"cookie": f"{COOKIE}={'A' * 43}"}).status_code == 401
    assert dapr.reads == 1  # shaped as one: one read finds nothing
