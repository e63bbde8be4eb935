"""``taskfan console``: the web console's address, with a sign-in link for this stack."""

from __future__ import annotations

import argparse
import webbrowser
from urllib.parse import quote

import httpx

from taskfan.cli.common import EXIT_UNREACHABLE, CliError, run_file, settings


def cmd_console(args: argparse.Namespace) -> int:
    current = settings()
    url = run_file().console_url()
    try:
        httpx.get(f"{url}/healthz", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        raise CliError(f"the console at {url} does not answer ({exc}); is the stack up? (`make up`)",
                       EXIT_UNREACHABLE) from None
    # The link signs the browser in (a cookie for this stack) and drops the token from the address bar.
    link = f"{url}/login?token={quote(current.ingest_token)}" if current.ingest_token else url
    print(link)
    if args.open:
        webbrowser.open(link)
    return 0
