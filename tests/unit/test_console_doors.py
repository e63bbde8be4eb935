"""The console's doors, each tried as an intruder would, with FastAPI's TestClient (and one real server): sessions
instead of the token, one-time sign-in links, sign-out, two roles, the security headers, the bounded body before
signing in. (In a real browser against a real stack: tests/e2e/test_console_intruder.py.)"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from services.console.app import SignInKeys
from services.console.routes.signin import ACTION_HEADER, cookie_name
from services.console.sessions import CODE_TTL_S, MemoryKeys, Role, Sessions, SignInCodes
from services.console.shield import OPEN_BODY_LIMIT, SECURITY_HEADERS
from services.console.watch import Watcher
from services.console.web import create_console
from tests.unit.fake_state import FakeDaprState, FakeSyncDapr
from tests.unit.test_console import FakeWorkflow, batch, new_book, outcome

TOKEN, VIEW_TOKEN = "operator-s3cret-token", "viewer-s3cret-token"
PORT = 8090
HOST = f"127.0.0.1:{PORT}"
COOKIE = cookie_name(PORT)
OPERATOR = {"authorization": f"Bearer {TOKEN}"}
VIEWER = {"authorization": f"Bearer {VIEW_TOKEN}"}
FROM_PAGE = {ACTION_HEADER: "1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_console(clock: Clock | None = None, ttl_s: float = 3600, dapr: Any = None, **sessions: Any) -> TestClient:
    """A console whose sessions and codes are in a fake state store (``dapr``: the same one for two replicas),
    through the console's own adapter (``SignInKeys``)."""
    clock = clock or Clock()
    keys = SignInKeys(dapr or FakeSyncDapr(FakeDaprState()))
    book = new_book()
    book.accepted(batch("done", 3))
    book.finished(outcome("done", ["completed", "failed", "failed"]))
    book.accepted(batch("running", 2))
    workflow = FakeWorkflow()
    watcher = Watcher(workflow.batches)
    watcher.poll()
    app = create_console(book, watcher, workflow, lambda _: None, token=TOKEN, view_token=VIEW_TOKEN,
                         hosts={HOST}, port=PORT, sessions=Sessions(keys, ttl_s, clock=clock, **sessions),
                         codes=SignInCodes(keys, clock=clock))
    return TestClient(app, base_url=f"http://{HOST}")


def link(client: TestClient, role: str = "view", credential: dict[str, str] = OPERATOR) -> str:
    answer = client.post("/login/code", headers=credential, json={"role": role})
    assert answer.status_code == 200, answer.text
    return answer.json()["link"]


def sign_in(client: TestClient, role: str = "view") -> str:
    """Signs in through a one-time link; the session id the browser got."""
    answer = client.get(link(client, role), follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.cookies[COOKIE]


# --- sessions -------------------------------------------------------------------------------------------------


def test_the_session_cookie_is_a_random_id_never_a_credential_and_only_for_this_console() -> None:
    client = new_console()
    code_link = link(client, "act")
    assert code_link.startswith("/login?code=") and TOKEN not in code_link
    answer = client.get(code_link + "&next=/scorers", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/scorers"  # the code leaves the address bar
    cookie = answer.headers["set-cookie"]
    session = answer.cookies[COOKIE]
    assert len(session) >= 40 and session not in (TOKEN, VIEW_TOKEN) and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert answer.headers["cache-control"] == "no-store"
    assert client.get("/").status_code == 200
    typed = new_console().post("/login", data={"token": TOKEN}, follow_redirects=False)  # the form, by hand
    assert typed.status_code == 303 and typed.cookies[COOKIE] not in (TOKEN, session)


def test_the_old_cookie_holding_the_token_signs_nobody_in() -> None:
    client = new_console()
    for name in (COOKIE, "taskfan_console"):
        client.cookies.set(name, TOKEN)
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login?next=")
    assert client.get("/api/batches").status_code == 401
    assert client.post("/batches/running/terminate", headers=FROM_PAGE).status_code == 401


def test_a_session_ends_after_its_time_and_the_browser_signs_in_again() -> None:
    clock = Clock()
    client = new_console(clock, ttl_s=8 * 3600)
    sign_in(client)
    clock.now += 8 * 3600 - 1
    assert client.get("/api/batches").status_code == 200
    clock.now += 1
    assert client.get("/api/batches").status_code == 401
    assert client.get("/", follow_redirects=False).headers["location"] == "/login?next=%2F"


def test_sign_out_ends_the_session_and_its_cookie_is_worth_nothing_after() -> None:
    client = new_console()
    session = sign_in(client)
    page = client.get("/").text
    assert '<form method=post action=/logout' in page and "Sign out" in page
    answer = client.post("/logout", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert f'{COOKIE}=""' in answer.headers["set-cookie"] and "Max-Age=0" in answer.headers["set-cookie"]
    client.cookies.set(COOKIE, session)  # the id, kept and sent again: refused
    assert client.get("/api/batches").status_code == 401


def test_a_flood_of_sign_ins_keeps_the_newest_sessions_only() -> None:
    client = new_console(limit=3)
    first = sign_in(client)
    for _ in range(3):
        sign_in(client)
    client.cookies.set(COOKIE, first)
    assert client.get("/api/batches").status_code == 401  # the oldest went
    keys = MemoryKeys()
    sessions = Sessions(keys, 60, limit=100)
    for _ in range(10_000):
        sessions.start(Role.VIEW)
    assert len(sessions) == 100 and len(keys) == 100  # the store holds no more than the replica remembers


# --- one-time sign-in links -----------------------------------------------------------------------------------


def test_a_sign_in_link_works_once() -> None:
    client = new_console()
    code_link = link(client)
    assert client.get(code_link, follow_redirects=False).status_code == 303
    client.cookies.clear()  # a second browser with the same link
    second = client.get(code_link, follow_redirects=False)
    assert second.status_code == 401 and "used already or has expired" in second.text
    assert COOKIE not in second.cookies and second.headers["content-type"].startswith("text/html")
    assert client.get("/login?code=made-up", follow_redirects=False).status_code == 401


def test_a_sign_in_link_expires_within_a_minute() -> None:
    clock = Clock()
    client = new_console(clock)
    code_link = link(client)
    clock.now += CODE_TTL_S
    answer = client.get(code_link, follow_redirects=False)
    assert answer.status_code == 401 and "taskfan console" in answer.text


def test_a_sign_in_link_is_given_only_for_a_credential_in_a_header_and_never_above_its_role() -> None:
    client = new_console()
    assert client.post("/login/code", json={"role": "view"}).status_code == 401
    assert client.post("/login/code", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/login/code", headers=VIEWER, json={"role": "act"}).status_code == 403
    assert client.post("/login/code", headers=OPERATOR, json={"role": "root"}).status_code == 400
    sign_in(client, "act")  # a session cannot mint links: a stolen cookie makes no more of itself
    assert client.post("/login/code", json={"role": "view"}).status_code == 401
    viewer = new_console()
    viewer.get(link(viewer, "view", VIEWER))
    assert viewer.post("/batches/running/terminate", headers=FROM_PAGE).status_code == 403


def test_the_old_token_link_is_refused_with_a_message_and_signs_nobody_in() -> None:
    client = new_console()
    answer = client.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert answer.status_code == 400 and "no longer carry a token" in answer.text
    assert COOKIE not in answer.cookies and client.get("/api/batches").status_code == 401


# --- two roles ----------------------------------------------------------------------------------------------


def test_a_viewer_looks_and_is_refused_every_action_and_sees_no_button() -> None:
    client = new_console()
    sign_in(client, "view")
    assert client.get("/api/batches").status_code == 200
    for action, body in (("running/terminate", None), ("done/rerun", {"tasks": "failed"}), ("done/rerun", None)):
        refused = client.post(f"/batches/{action}", headers=FROM_PAGE, json=body)
        assert refused.status_code == 403 and "--role act" in refused.json()["error"], action
    for credential in (VIEWER, ):  # the viewer's credential as a script's bearer: the same
        assert client.post("/batches/running/terminate", headers=credential).status_code == 403
    page = client.get("/batches/done").text
    assert "data-action" not in page and "Re-run" not in page and 'id="role">viewer' in page
    assert "Terminate" not in client.get("/batches/running").text
    operator = new_console()
    sign_in(operator, "act")
    assert "Re-run the 2 failed tasks" in operator.get("/batches/done").text
    assert "Terminate" in operator.get("/batches/running").text
    assert operator.post("/batches/running/terminate", headers=FROM_PAGE).status_code == 200


def test_a_post_from_another_origin_is_refused_even_with_a_session() -> None:
    client = new_console()
    sign_in(client, "act")
    neighbour = {"origin": "http://127.0.0.1:9999", ACTION_HEADER: "1"}
    assert client.post("/batches/running/terminate", headers=neighbour).status_code == 403
    assert client.post("/logout", headers={"origin": "http://127.0.0.1:9999"}).status_code == 403
    assert client.post("/login", headers={"origin": "http://127.0.0.1:9999"}, data={"token": TOKEN}).status_code == 403
    from_sandbox = {"origin": "null", "sec-fetch-site": "cross-site", ACTION_HEADER: "1"}
    from_next_port = {"sec-fetch-site": "same-site", ACTION_HEADER: "1"}
    for elsewhere in (from_sandbox, from_next_port):
        assert client.post("/batches/running/terminate", headers=elsewhere).status_code == 403, elsewhere
    # The console's own page: its origin, or `null` (what a browser sends under Referrer-Policy: no-referrer).
    for ours in ({"origin": f"http://{HOST}"}, {"origin": "null", "sec-fetch-site": "same-origin"}):
        assert client.post("/batches/running/terminate", headers={**ours, **FROM_PAGE}).status_code == 200, ours


# --- headers on every response ----------------------------------------------------------------------------------


def assert_shielded(headers: Any, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name}"


def test_every_kind_of_response_carries_the_security_headers() -> None:
    client = new_console()
    seen = {"sign-in page": client.get("/login"), "redirect": client.get("/", follow_redirects=False),
            "401": client.get("/api/batches"), "421": client.get("/", headers={"host": "evil.example"}),
            "413": client.post("/login", content=b"x" * (OPEN_BODY_LIMIT + 1)),
            "static": client.get("/static/console.js"), "404 static": client.get("/static/secrets.json")}
    sign_in(client, "view")
    seen |= {"html": client.get("/"), "json": client.get("/api/batches"), "json 404": client.get("/api/batches/nope"),
             "400": client.get("/?page=x"), "403": client.post("/batches/running/terminate", headers=FROM_PAGE),
             "404 route": client.get("/nope")}
    with client.stream("GET", "/events/replicas") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        seen["server-sent events"] = events
    for what, answer in seen.items():
        assert_shielded(answer.headers, what)
    assert seen["static"].headers["content-type"].startswith("text/javascript")
    assert seen["404 static"].status_code == 404


def test_a_crash_inside_is_a_500_with_the_headers_too() -> None:
    client = new_console()

    def boom() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    crashed = TestClient(client.app, base_url=f"http://{HOST}", raise_server_exceptions=False).get(
        "/boom", headers=OPERATOR)
    assert crashed.status_code == 500
    assert_shielded(crashed.headers, "500")


def test_the_pages_have_no_inline_script_or_style_for_the_policy_to_refuse() -> None:
    client = new_console()
    pages_html = {"login": client.get("/login").text}
    sign_in(client, "act")
    pages_html |= {path: client.get(path).text for path in ("/", "/batches/done", "/batches/running", "/scorers",
                                                                "/dead-letters")}
    for path, html in pages_html.items():
        assert "<style" not in html and " style=" not in html and "<script>" not in html, path
        assert html.count("<script") == 1 and '<script src="/static/console.js"></script>' in html, path
        assert '<link rel="stylesheet" href="/static/console.css">' in html, path
        assert " on" + "click=" not in html, path
    assert "fill:" in client.get("/static/console.css").text  # the SVG bars' colours


# --- the body before signing in ---------------------------------------------------------------------------------


def test_a_huge_sign_in_body_is_refused_by_its_length_before_it_is_read() -> None:
    client = new_console()
    answer = client.post("/login", content=b"token=" + b"x" * 10_000_000)
    assert answer.status_code == 413 and "4096 bytes" in answer.json()["error"]
    assert client.post("/login/code", headers=OPERATOR, content=b"{" + b" " * 5000 + b"}").status_code == 413
    assert client.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303  # small is fine


def call_asgi(app: Any, method: str, path: str, chunks: Iterator[bytes],
              headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """Drives the ASGI app with a body sent chunk by chunk (no Content-Length); its status and the chunks read."""
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "headers": [(b"host", HOST.encode()), *headers], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", PORT)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], read


def test_a_chunked_sign_in_body_is_refused_while_it_is_read() -> None:
    app = new_console().app
    endless = (b"x" * 1024 for _ in range(1_000_000))  # a gigabyte, if anyone read it all
    status, read = call_asgi(app, "POST", "/login", endless, [(b"transfer-encoding", b"chunked")])
    assert status == 413 and read == OPEN_BODY_LIMIT // 1024 + 1  # stopped at the first chunk over the limit
    status, _ = call_asgi(app, "POST", "/login", iter([b"token=", TOKEN.encode()]),
                          [(b"content-type", b"application/x-www-form-urlencoded")])
    assert status == 303  # a small chunked body is read as usual


def test_a_real_server_answers_413_to_an_endless_chunked_body() -> None:
    server = uvicorn.Server(uvicorn.Config(new_console().app, host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(f"POST /login HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            answer, sent = b"", 0
            while sent < 10_000:  # up to 10 MB, unless the server answers first
                sent += 1
                try:
                    conn.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
                except OSError:
                    break  # the server closed the connection: it had answered
                conn.settimeout(0.001)
                try:
                    answer += conn.recv(65536)
                except TimeoutError:
                    continue
                if answer:
                    break
            conn.settimeout(5)
            while b"\r\n\r\n" not in answer:
                answer += conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 100, f"{sent} KiB sent before the answer"  # answered at the limit, not at the end
    finally:
        server.should_exit = True
        thread.join(5)


def test_the_session_table_and_the_codes_are_bounded_and_forget_what_ended() -> None:
    clock = Clock()
    keys = MemoryKeys(clock)
    codes = SignInCodes(keys, ttl_s=60, limit=5, clock=clock)
    issued = [codes.issue(Role.VIEW) for _ in range(8)]
    assert codes.redeem(issued[0]) is None and codes.redeem(issued[-1]) is Role.VIEW
    assert codes.redeem(issued[-1]) is None
    clock.now += 61
    codes.issue(Role.ACT)  # each new one clears the expired, here and in the store (as Redis's TTL does)
    assert len(codes) == 1 and len(keys) == 1
    assert json.dumps(Role.ACT) == '"act"'


@pytest.mark.parametrize("role,wanted,allowed", [("act", "view", True), ("act", "act", True),
                                                  ("view", "view", True), ("view", "act", False)])
def test_roles_allow_no_more_than_they_are(role: str, wanted: str, allowed: bool) -> None:
    assert Role(role).allows(Role(wanted)) is allowed


def test_a_stack_with_its_locks_off_gives_links_without_a_credential() -> None:
    workflow = FakeWorkflow()
    app = create_console(new_book(), Watcher(workflow.batches), workflow, lambda _: None, token="", hosts={HOST})
    client = TestClient(app, base_url=f"http://{HOST}")
    code_link = client.post("/login/code", json={"role": "act"}).json()["link"]  # SECURITY=off: `taskfan console`
    assert client.get(code_link, follow_redirects=False).status_code == 303
    assert client.get("/api/batches").status_code == 200
