"""``taskfan console``: a one-time sign-in link to the web console of the running stack.

The link carries a code the console gives for this one sign-in (it works once, within a minute), never a
credential: the CLI asks for the code with the stack's credential in a header (``POST /login/code``), so no
long-lived secret is ever in a URL, a browser's history or any process's command line (``--open`` starts the
browser with the link as its argument; that code is spent or expired seconds later).
"""

from __future__ import annotations

import webbrowser

import httpx

from taskfan.cli.common import EXIT_REFUSED, EXIT_UNREACHABLE, CliError, run_file, settings
from taskfan.stack_secrets import ingest_headers

ROLES = ("view", "act")


def cmd_console(open_browser: bool = False, role: str = "view") -> int:
    current = settings()
    url = current.console_url or run_file().console_url()
    # The viewer's credential to look, the operator's (the ingest token) to act: each link no more than asked.
    credential = current.ingest_token if role == "act" else (current.console_view_token or current.ingest_token)
    try:
        answer = httpx.post(f"{url}/login/code", json={"role": role}, headers=ingest_headers(credential),
                            timeout=5)
    except httpx.HTTPError as exc:
        raise CliError(f"the console at {url} does not answer ({exc}); is the stack up? (`make up`)",
                       EXIT_UNREACHABLE) from None
    if answer.status_code != 200:
        raise CliError(f"the console refused a sign-in link ({answer.status_code}): {_said(answer)}", EXIT_REFUSED)
    link = url + answer.json()["link"]
    print(link)
    if open_browser:
        webbrowser.open(link)
    return 0


def _said(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("error", answer.text))
    except ValueError:
        return answer.text[:200]
